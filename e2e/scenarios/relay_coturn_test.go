//go:build e2e

package scenarios

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// TestCoturnMatrix is the NAT matrix (TestNATMatrix's nodes) with an
// external coturn — static-auth-secret, its default configuration otherwise
// — as the only relay: the coordinator's TURN is off, and every node lists
// coturn over UDP and over TCP in [[ice.turn_servers]]. Every pair must
// answer a ping over the overlay, and every pair LAB.md §3 determines as
// relayed must be relayed through coturn, with the relay label naming
// coturn and the transport the node's allocation really uses (tcp for the
// UDP-blocked node, whose label used to read "3478/udp"). coturn's log must not show a refused CreatePermission
// or ChannelBind (the 400s of issue 18).
func TestCoturnMatrix(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	// coturn's own default relay range: every node allocates per link and
	// per TURN URL, more than the lab helper's narrow default holds.
	turn := l.AddTURN(t, "coturn", lab.TURNOptions{MinPort: 49152, MaxPort: 65535})
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true, noTURN: true})
	extra := fmt.Sprintf("[[ice.turn_servers]]\nurl = %q\nsecret = %q\n\n[[ice.turn_servers]]\nurl = %q\nsecret = %q\n",
		"turn:"+turn.Addr.String()+"?transport=udp", turn.Secret, "turn:"+turn.Addr.String()+"?transport=tcp", turn.Secret)
	join := nodeOpts{join: []*node{coord}, extra: extra}

	var nodes []*matrixNode
	addNATLineup(t, l, func(h *lab.Host, label string, class natClass, v6 ipv6Class) {
		nodes = append(nodes, &matrixNode{node: m.addNode(h, join), label: label, class: class, ipv6: v6})
	}, false)
	t.Logf("topology:\n%s", l.Describe())

	pairs := matrixPairs(nodes)
	coord.start()
	for _, n := range nodes {
		n.start()
	}
	for _, n := range nodes {
		n.waitSession(t, sessionTimeout)
	}
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.pingFirstReply()
		}()
	}
	wg.Wait()

	turnIP := turn.Addr.Addr().String()
	relayed := 0
	for _, p := range pairs {
		if p.replyErr != nil {
			t.Errorf("%s ↔ %s: no ping reply through the overlay: %v", p.a.name, p.b.name, p.replyErr)
			continue
		}
		if p.want.path != control.PathRelay || !p.want.determined {
			t.Logf("%-5s ↔ %-5s first reply after %v", p.a.name, p.b.name, p.firstReply.Round(time.Millisecond))
			continue
		}
		relayed++
		_, view, ok := p.a.waitPeer(linkTimeout, p.b.name, isRelay)
		if !ok {
			t.Errorf("%s ↔ %s: not relayed: %s", p.a.name, p.b.name, describePeer(view))
			continue
		}
		t.Logf("%-5s ↔ %-5s first reply after %v: %s", p.a.name, p.b.name, p.firstReply.Round(time.Millisecond), describePeer(view))
		if !strings.Contains(view.Relay, turnIP) {
			t.Errorf("%s → %s: relay %q is not coturn's %s", p.a.name, p.b.name, view.Relay, turnIP)
		}
		// Its own allocation is labelled with the transport it uses: a
		// node with UDP may pick its TCP allocation too (both URLs are
		// listed), the UDP-blocked one has only TCP.
		if view.LocalCandidate == control.CandidateRelay {
			switch {
			case p.a.class == classUDPBlocked && !strings.HasSuffix(view.Relay, "/tcp"):
				t.Errorf("%s → %s: relay label %q, want the transport /tcp (no UDP on %s)", p.a.name, p.b.name, view.Relay, p.a.name)
			case !strings.HasSuffix(view.Relay, "/udp") && !strings.HasSuffix(view.Relay, "/tcp"):
				t.Errorf("%s → %s: relay label %q names no transport", p.a.name, p.b.name, view.Relay)
			}
		}
	}
	if relayed == 0 {
		t.Fatal("no relayed pair in the matrix")
	}
	log := turn.Log()
	for _, method := range []string{"CREATE_PERMISSION", "CHANNEL_BIND"} {
		if n := strings.Count(log, "incoming packet "+method+" processed, error 400"); n > 0 {
			t.Errorf("coturn answered %d %s requests with 400", n, method)
		}
	}
	for _, n := range append(nodes, &matrixNode{node: coord}) {
		n.alive(t)
	}
}
