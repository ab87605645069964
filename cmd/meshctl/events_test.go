package main

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/internal/testutil"
)

func TestEventLine(t *testing.T) {
	ts := time.Date(2025, 3, 14, 15, 9, 26, 0, time.Local)
	tests := []struct {
		e    control.Event
		want string
	}{
		{control.Event{Time: ts, Kind: control.EventPathChange, Peer: "nas", From: "relay", To: "direct", Message: "found a direct pair"},
			"2025-03-14 15:09:26  path_change           nas           relay -> direct  found a direct pair"},
		{control.Event{Time: ts, Kind: control.EventCoordinatorFailover, From: "coord-a", To: "coord-b"},
			"2025-03-14 15:09:26  coordinator_failover  -             coord-a -> coord-b"},
		{control.Event{Time: ts, Kind: control.EventCertWarning, Message: "certificate expires in 9 days"},
			"2025-03-14 15:09:26  cert_warning          -             certificate expires in 9 days"},
	}
	for _, tt := range tests {
		if got := eventLine(tt.e); got != tt.want {
			t.Errorf("eventLine:\n got %q\nwant %q", got, tt.want)
		}
	}
}

func TestEventsCommand(t *testing.T) {
	h := newHarness(t)
	for _, asJSON := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		var out syncBuffer
		args := []string{"events"}
		if asJSON {
			args = append(args, "--json")
		}
		done := make(chan error, 1)
		go func() { done <- runMeshctlTo(ctx, &out, h.sock, args...) }()
		testutil.WaitFor(t, 5*time.Second, "meshctl events to subscribe", func() bool { return h.b.Subscribers() == 1 })
		h.b.Emit(control.Event{Time: time.Now(), Kind: control.EventPeerUp, Peer: "nas", Message: "link up"})
		h.b.Emit(control.Event{Time: time.Now(), Kind: control.EventPathChange, Peer: "nas", From: "relay", To: "direct"})
		testutil.WaitFor(t, 5*time.Second, "two event lines", func() bool { return strings.Count(out.String(), "\n") == 2 })
		cancel()
		if err := <-done; err != nil {
			t.Errorf("events (json %v) after interrupt: %v, want exit 0", asJSON, err)
		}
		testutil.WaitFor(t, 5*time.Second, "daemon-side Events to stop", func() bool { return h.b.Subscribers() == 0 })

		if !asJSON {
			if !strings.Contains(out.String(), "peer_up") || !strings.Contains(out.String(), "relay -> direct") {
				t.Errorf("events output:\n%s", out.String())
			}
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		var kinds []control.EventKind
		for sc.Scan() {
			var e control.Event
			if err := control.Decode(sc.Bytes(), &e); err != nil {
				t.Fatalf("events --json line %q: %v", sc.Text(), err)
			}
			kinds = append(kinds, e.Kind)
		}
		if len(kinds) != 2 || kinds[0] != control.EventPeerUp || kinds[1] != control.EventPathChange {
			t.Errorf("events --json kinds %v", kinds)
		}
	}
}
