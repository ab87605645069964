package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/internal/testutil"
)

// TestBackgroundNetcheck: without anyone asking for a netcheck, both nodes
// learn their NAT behaviour (none, on loopback) and public endpoint (the
// ICE socket's address) once ready, log the verdict once, re-run on a kick
// (what a coordinator failover sends) without logging the same verdict
// again, and Close stops the runner (the leak check).
func TestBackgroundNetcheck(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	na := m.node(t, "alpha", 1, nodeSpec{})
	nb := m.node(t, "beta", 2, nodeSpec{})
	a := startDaemon(t, na, m.config(t, na, confSpec{coordinator: true}))
	b := startDaemon(t, nb, m.config(t, nb, confSpec{join: []string{a.sessionAddr()}}))
	waitReady(t, a)
	waitReady(t, b)

	for _, d := range []*testDaemon{a, b} {
		ice := d.tm.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
		var st *control.Status
		testutil.WaitFor(t, 15*time.Second, d.name+": status shows the NAT", func() bool {
			var err error
			if st, err = d.Status(context.Background()); err != nil {
				t.Fatal(err)
			}
			return st.NAT != control.NATUnknown
		})
		if st.NAT != control.NATNone || !slices.Contains(st.PublicEndpoints, ice) {
			t.Errorf("%s: NAT %q, endpoints %v; want %q and the ICE socket %v", d.name, st.NAT, st.PublicEndpoints, control.NATNone, ice)
		}
		for _, ep := range st.PublicEndpoints {
			if !ep.Addr().IsLoopback() {
				t.Errorf("%s: public endpoint %v is not on loopback", d.name, ep)
			}
		}
		if n := strings.Count(d.log.String(), "nat=none"); n != 1 {
			t.Errorf("%s: verdict logged %d times, want once", d.name, n)
		}
	}

	// PeerWhy reads the same cache.
	testutil.WaitFor(t, 20*time.Second, "beta in alpha's registry", func() bool { return a.view.Load().byName["beta"] != nil })
	why, err := a.PeerWhy(context.Background(), "beta")
	if err != nil {
		t.Fatal(err)
	}
	if why.LocalNAT != control.NATNone {
		t.Errorf("why: local NAT %q, want %q", why.LocalNAT, control.NATNone)
	}

	// A failover kick re-runs it; the same verdict is not logged again.
	seq := b.lastNet.Load().seq
	b.kickNetcheck()
	testutil.WaitFor(t, 10*time.Second, "netcheck re-run on a kick", func() bool { return b.lastNet.Load().seq > seq })
	if n := strings.Count(b.log.String(), "nat=none"); n != 1 {
		t.Errorf("beta: verdict logged %d times after a re-run, want once", n)
	}

	// meshctl netcheck runs a fresh one and refreshes the cache.
	seq = b.lastNet.Load().seq
	nc, err := b.Netcheck(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := b.lastNet.Load(); got.seq <= seq || got.nc != nc {
		t.Errorf("Netcheck did not refresh the cache (seq %d, was %d)", got.seq, seq)
	}
	// With one coordinator two destinations answer: its STUN/TURN socket
	// and its session port over UDP (stunalt.go). Both report what they see
	// of meshd's own ICE socket, the endpoint peers and firewalls need, not
	// of a throw-away probe socket.
	iceB := b.tm.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
	answered, session := 0, false
	for _, p := range nc.STUN {
		t.Logf("beta: netcheck: %s -> %v %s", p.Server, p.Reflexive, p.Error)
		if p.Error != "" {
			continue
		}
		answered++
		session = session || strings.Contains(p.Server, "session port")
		if p.Reflexive.Port() != iceB.Port() || !p.Reflexive.Addr().IsLoopback() {
			t.Errorf("beta: %s saw %v, want the ICE socket %v", p.Server, p.Reflexive, iceB)
		}
	}
	if answered < 2 || !session || nc.NAT != control.NATNone {
		t.Errorf("beta: %d STUN answers (session port %v), NAT %q; want 2 with the session port and %q", answered, session, nc.NAT, control.NATNone)
	}

	// Closing while a run may be under way leaves nothing behind.
	a.kickNetcheck()
	done := make(chan struct{})
	go func() { _ = a.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(netcheckTimeout + 5*time.Second):
		t.Fatal("Close did not return")
	}
}

// TestPublishNetcheck: a run that started later wins whatever order the
// runs finish in, and the verdict is logged only when it changes.
func TestPublishNetcheck(t *testing.T) {
	snap := func(seq uint64, nat control.NATBehavior) *netSnapshot {
		return &netSnapshot{seq: seq, nc: &control.Netcheck{NAT: nat, Verdict: verdict(nat, 2)}}
	}
	tests := []struct {
		name     string
		publish  []*netSnapshot
		wantSeq  uint64
		wantLogs int
	}{
		{"first is logged", []*netSnapshot{snap(1, control.NATNone)}, 1, 1},
		{"same verdict logged once", []*netSnapshot{snap(1, control.NATNone), snap(2, control.NATNone), snap(3, control.NATNone)}, 3, 1},
		{"change is logged", []*netSnapshot{snap(1, control.NATNone), snap(2, control.NATEndpointIndependent)}, 2, 2},
		{"older run finishing late is dropped", []*netSnapshot{snap(2, control.NATNone), snap(1, control.NATUDPBlocked)}, 2, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			d := &Daemon{log: slog.New(slog.NewTextHandler(&buf, nil))}
			for _, s := range tc.publish {
				d.publishNetcheck(s)
			}
			if got := d.lastNet.Load().seq; got != tc.wantSeq {
				t.Errorf("cached run %d, want %d", got, tc.wantSeq)
			}
			if got := strings.Count(buf.String(), "netcheck: "); got != tc.wantLogs {
				t.Errorf("%d verdict lines, want %d:\n%s", got, tc.wantLogs, buf.String())
			}
		})
	}
}

// TestServersKey: the key ignores order, so only a real change of servers
// re-runs the netcheck.
func TestServersKey(t *testing.T) {
	a := []stunTarget{{hostPort: "127.0.0.1:3478"}, {hostPort: "192.0.2.1:3478"}}
	b := []stunTarget{{hostPort: "192.0.2.1:3478"}, {hostPort: "127.0.0.1:3478"}}
	c := []stunTarget{{hostPort: "127.0.0.1:3478"}}
	if serversKey(a) != serversKey(b) {
		t.Error("same servers in another order give another key")
	}
	if serversKey(a) == serversKey(c) || serversKey(nil) == serversKey(c) {
		t.Error("different servers give the same key")
	}
}
