package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/internal/testutil"
)

// TestMemberRelay: a node with [relay] enabled carries the link of two
// relay-only nodes that have no other relay (the coordinator's TURN is
// off) and no relay configuration of their own; peers names it, peers
// --why says why, and its counters show the allocations and traffic.
func TestMemberRelay(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	nc := m.node(t, "coord", 1, nodeSpec{})
	nr := m.node(t, "relay-1", 2, nodeSpec{})
	na := m.node(t, "alpha", 3, nodeSpec{})
	nb := m.node(t, "beta", 4, nodeSpec{})
	c := startDaemon(t, nc, m.config(t, nc, confSpec{coordinator: true, noTURN: true}))
	join := []string{c.sessionAddr()}
	r := startDaemon(t, nr, m.config(t, nr, confSpec{join: join, extra: "[relay]\nenabled = true\nlisten = \"127.0.0.1:0\"\nmax_allocations = 16\n"}))
	fw := "[[firewall.inbound]]\nproto = \"udp\"\nport = \"7000\"\npeer = \"any\"\n"
	a := startDaemon(t, na, m.config(t, na, confSpec{join: join, relayOnly: true, extra: fw}))
	b := startDaemon(t, nb, m.config(t, nb, confSpec{join: join, relayOnly: true, extra: fw}))
	for _, d := range []*testDaemon{c, r, a, b} {
		waitReady(t, d)
	}
	if ri := r.relayInfo(); ri.Capacity != 16 || ri.Addr.Port() == 0 {
		t.Fatalf("announced relay %+v", ri)
	}
	testutil.WaitFor(t, 30*time.Second, "alpha and beta linked through relay-1", func() bool {
		pa, pb := peerOf(t, a, "beta"), peerOf(t, b, "alpha")
		return pa.Online && pb.Online && pa.RelayNode == "relay-1" && pb.RelayNode == "relay-1"
	})
	if p := peerOf(t, a, "beta"); p.Path != control.PathRelay || !strings.HasPrefix(p.Relay, "127.0.0.1:") {
		t.Fatalf("alpha's view of beta: %+v", p)
	}
	testutil.WaitFor(t, 10*time.Second, "UDP alpha → beta through the member relay", func() bool { return udpExchange(t, a, b, 7000) })

	why, err := a.PeerWhy(context.Background(), "beta")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(why.Explanation, "relayed through relay-1 (") || !strings.Contains(why.Explanation, "relays answering") {
		t.Errorf("peers --why: %q", why.Explanation)
	}
	st := r.relay.Load().Stats()
	if st.AllocationsMade < 2 || st.Allocations < 2 || st.PacketsRelayed == 0 || st.BytesRelayed == 0 {
		t.Errorf("relay stats %+v", st)
	}
}
