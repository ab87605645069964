package main

import (
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
)

// TestPeersIPv6Column: the peer table shows IPv6 overlay addresses in a
// column of their own when any peer has one (an IPv4-only peer shows "-"),
// and an IPv4-only mesh's table stays as it was.
func TestPeersIPv6Column(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	h.b.SetPeers([]control.Peer{
		{Name: "nas", Address: addr("100.64.0.2"), Address6: addr("fd7a:115c:a1e0::2"), Online: true,
			State: control.LinkUp, Path: control.PathDirect, Endpoint: ap("192.0.2.7:51820"), LastHandshake: now},
		{Name: "old", Address: addr("100.64.0.3")},
	})
	out, err := h.run(t, "peers")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if f := strings.Fields(lines[0]); len(f) < 3 || f[1] != "ADDRESS" || f[2] != "ADDRESS6" {
		t.Fatalf("header %q", lines[0])
	}
	for _, want := range [][]string{{"nas", "100.64.0.2", "fd7a:115c:a1e0::2"}, {"old", "100.64.0.3", "-"}} {
		found := false
		for _, l := range lines[1:] {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == want[0] {
				found = f[1] == want[1] && f[2] == want[2]
			}
		}
		if !found {
			t.Errorf("no row %v in\n%s", want, out)
		}
	}

	h.b.SetPeers([]control.Peer{{Name: "old", Address: addr("100.64.0.3")}})
	if out, err = h.run(t, "peers"); err != nil || strings.Contains(out, "ADDRESS6") {
		t.Fatalf("an IPv4-only mesh's table has an ADDRESS6 column (%v):\n%s", err, out)
	}
}
