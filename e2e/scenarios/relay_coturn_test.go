//go:build e2e

package scenarios

import (
	"context"
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
	add := func(h *lab.Host, label string, class natClass) {
		nodes = append(nodes, &matrixNode{node: m.addNode(h, join), label: label, class: class})
	}
	add(l.AddNode(t, "pub", lab.NATNone, lab.HostOptions{}), "no NAT", classOpen)
	add(l.AddNode(t, "fw", lab.NATFirewall, lab.HostOptions{}), "public + stateful firewall", classFirewall)
	add(l.AddNode(t, "full", lab.NATFullCone, lab.HostOptions{}), "full cone", classFullCone)
	add(l.AddNode(t, "addr", lab.NATAddressRestricted, lab.HostOptions{}), "address-restricted cone", classAddrRestricted)
	add(l.AddNode(t, "port", lab.NATPortRestricted, lab.HostOptions{}), "port-restricted cone", classPortRestricted)
	add(l.AddNode(t, "sym", lab.NATSymmetric, lab.HostOptions{}), "symmetric", classSymmetric)
	dbl := l.AddSite(t, "dbl", lab.SiteOptions{NAT: lab.NATFullCone, Carrier: lab.NATPortRestricted})
	add(dbl.AddHost(t, "dbl", lab.HostOptions{}), "double NAT", classPortRestricted)
	add(l.AddNode(t, "udpb", lab.NATUDPBlocked, lab.HostOptions{}), "UDP blocked (TCP only)", classUDPBlocked)
	lan := l.AddSite(t, "lan", lab.SiteOptions{NAT: lab.NATSymmetric})
	add(lan.AddHost(t, "lan1", lab.HostOptions{}), "same LAN #1, behind symmetric NAT", classSymmetric)
	add(lan.AddHost(t, "lan2", lab.HostOptions{}), "same LAN #2, behind symmetric NAT", classSymmetric)
	t.Logf("topology:\n%s", l.Describe())

	var pairs []*pairResult
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			pairs = append(pairs, &pairResult{a: nodes[i], b: nodes[j], want: expect(nodes[i], nodes[j])})
		}
	}
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
			ctx, cancel := context.WithTimeout(context.Background(), linkTimeout+10*time.Second)
			defer cancel()
			at, err := firstReply(ctx, p.a.host.Namespace, p.b.addr, linkTimeout)
			if err != nil {
				p.replyErr = err
				return
			}
			_, sa := p.a.process()
			_, sb := p.b.process()
			p.firstReply = at.Sub(later(sa, sb))
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
