//go:build e2e

package scenarios

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// TestExternalTURN: two nodes behind symmetric NATs, a coordinator whose
// embedded TURN is off, and coturn (static-auth-secret) configured on the
// nodes as [[ice.turn_servers]] with the shared secret. The nodes must
// connect through coturn: relayed path, relay address coturn's, coturn's
// log showing both nodes' allocations, and traffic flowing.
func TestExternalTURN(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	turn := l.AddTURN(t, "coturn", lab.TURNOptions{})
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true, noTURN: true})
	extra := fmt.Sprintf("[[ice.turn_servers]]\nurl = %q\nsecret = %q\n", "turn:"+turn.Addr.String()+"?transport=udp", turn.Secret)
	s1 := m.addNode(l.AddNode(t, "s1", lab.NATSymmetric, lab.HostOptions{}), nodeOpts{join: []*node{coord}, extra: extra})
	s2 := m.addNode(l.AddNode(t, "s2", lab.NATSymmetric, lab.HostOptions{}), nodeOpts{join: []*node{coord}, extra: extra})
	for _, n := range []*node{coord, s1, s2} {
		n.start()
	}
	for _, n := range []*node{coord, s1, s2} {
		n.waitSession(t, sessionTimeout)
	}
	turnIP := turn.Addr.Addr().String()
	for _, c := range []struct{ n, peer *node }{{s1, s2}, {s2, s1}} {
		took, p, ok := c.n.waitPeer(linkTimeout, c.peer.name, isRelay)
		if !ok {
			t.Fatalf("%s → %s not relayed within %v: %s", c.n.name, c.peer.name, linkTimeout, describePeer(p))
		}
		t.Logf("%s → %s relayed after %v: %s", c.n.name, c.peer.name, took.Round(time.Millisecond), describePeer(p))
		if !strings.Contains(p.Relay, turnIP) && !strings.Contains(p.Endpoint.String(), turnIP) {
			t.Errorf("%s → %s: relay %q / endpoint %v is not coturn's %s", c.n.name, c.peer.name, p.Relay, p.Endpoint, turnIP)
		}
	}
	ctx := context.Background()
	sent, recv, out, err := ping(ctx, s1.host.Namespace, s2.addr, 5)
	if err != nil || recv != sent {
		t.Errorf("s1 → s2 through coturn: %d/%d replies (%v)\n%s", recv, sent, err, out)
	}
	s2.startSink(t)
	r, err := send(ctx, s1.host.Namespace, m.tool, s2.addr, 1<<20, 0, 20*time.Second)
	if err != nil {
		t.Errorf("s1 → s2 TCP through coturn: %v", err)
	} else {
		t.Logf("s1 → s2: 1 MiB over TCP through coturn intact in %v", r.Duration.Round(time.Millisecond))
	}
	var why control.PeerWhy
	if err := s1.ctlJSON(ctx, &why, "peers", "--why", "s2"); err == nil {
		t.Logf("s1: peers --why s2: %s", why.Explanation)
	}
	// coturn saw both nodes allocate with credentials derived from the
	// shared secret (username "<expiry>:<node name>").
	log := turn.Log()
	for _, n := range []string{"s1", "s2"} {
		if !strings.Contains(log, ":"+n+">: incoming packet ALLOCATE processed, success") {
			t.Errorf("coturn's log has no successful allocation by %s", n)
		}
	}
	for _, n := range []*node{coord, s1, s2} {
		n.alive(t)
	}
}
