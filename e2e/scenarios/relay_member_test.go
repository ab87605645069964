//go:build e2e

package scenarios

import (
	"fmt"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// memberRelayPort is relay.listen's port on the relay hosts.
const memberRelayPort = 3479

// TestMemberRelays: three members serve as relays ([relay] enabled, public
// hosts), the coordinator relays nothing (coordinator.turn off), and a pair
// of relay-only nodes behind symmetric NATs has no relay configuration of
// its own. The relays are made unequal: r1 is clean; r2's uplink is a
// tc tbf of 4 Mbit/s kept full by a ping flood (a standing queue of up to
// 40 ms, and some loss); r3's a tbf of 2 Mbit/s flooded far beyond it (up
// to 100 ms of queue, most packets lost). The pair must settle on r1 (the
// lowest RTT through a relay; peers names it, peers --why says why); then
// r1's meshd is SIGKILLed while a ping runs every 100 ms, and the pair must
// move to another relay: the gap is logged against the 3 s target and
// asserted within a generous bound.
func TestMemberRelays(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	c := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true, noTURN: true})
	join := nodeOpts{join: []*node{c}}
	var relays []*node
	for _, name := range []string{"r1", "r2", "r3"} {
		h := l.AddHost(t, name, lab.HostOptions{})
		o := join
		o.extra = fmt.Sprintf("\n[relay]\nenabled = true\nlisten = %q\nmax_allocations = 64\n", netip.AddrPortFrom(h.IP(), memberRelayPort))
		relays = append(relays, m.addNode(h, o))
	}
	relayOnly := join
	relayOnly.ice = []string{"relay_only = true"}
	a := m.addNode(l.AddSite(t, "asite", lab.SiteOptions{NAT: lab.NATSymmetric}).AddHost(t, "a", lab.HostOptions{}), relayOnly)
	b := m.addNode(l.AddSite(t, "bsite", lab.SiteOptions{NAT: lab.NATSymmetric}).AddHost(t, "b", lab.HostOptions{}), relayOnly)

	// Make r2 and r3 worse before anything starts: a tbf on the uplink,
	// filled by a ping flood to the coordinator.
	for _, u := range []struct {
		n           *node
		rate, lat   string
		flood, size string
	}{
		{relays[1], "4mbit", "40ms", "0.0025", "1400"}, // ~4.6 Mbit/s into 4: a standing queue, ~12% loss
		{relays[2], "2mbit", "100ms", "0.001", "1400"}, // ~11 Mbit/s into 2: full queue, most lost
	} {
		if out, err := u.n.host.Run(t.Context(), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", u.rate, "burst", "8kb", "latency", u.lat); err != nil {
			t.Fatalf("tbf on %s: %v\n%s", u.n.name, err, out)
		}
		fl, err := u.n.host.StartWith(lab.ProcOptions{Label: "flood"}, "ping", "-q", "-n", "-i", u.flood, "-s", u.size, c.host.IP().String())
		if err != nil {
			t.Fatal(err)
		}
		defer fl.Stop()
	}
	for _, n := range m.allNodes() {
		n.start()
	}
	for _, n := range m.allNodes() {
		n.waitSession(t, sessionTimeout)
	}
	relayName := func(n *node, peer string) string {
		p, _, _ := n.peer(t.Context(), peer)
		if !isRelay(p) {
			return ""
		}
		return p.RelayNode
	}
	mustPeer(t, a, "b", isRelay, linkTimeout, "relayed")
	took, why, ok := waitUntil(30*time.Second, 200*time.Millisecond, func() (bool, string) {
		ra, rb := relayName(a, "b"), relayName(b, "a")
		return ra == "r1" && rb == "r1", "a's relay " + strconv.Quote(ra) + ", b's " + strconv.Quote(rb)
	})
	var pw control.PeerWhy
	if err := a.ctlJSON(t.Context(), &pw, "peers", "--why", "b"); err == nil {
		t.Logf("a: peers --why b: %s", pw.Explanation)
	}
	if !ok {
		pathDiag(t, a, b)
		t.Fatalf("the pair did not settle on r1 (the fastest relay) within 30 s: %s", why)
	}
	t.Logf("the pair is relayed through r1 %v after it was first relayed", took.Round(time.Millisecond))
	if out, err := a.ctl(t.Context(), "peers"); err == nil {
		t.Logf("a: meshctl peers\n%s", out)
	}

	pinger, err := a.host.StartWith(lab.ProcOptions{Label: "ping-member-relay"}, "ping", "-n", "-D", "-i", "0.1", "-W", "1", b.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Stop()
	if _, _, ok := waitUntil(20*time.Second, 100*time.Millisecond, func() (bool, string) { return len(parsePingD(pinger.Stdout())) >= 10, "" }); !ok {
		t.Fatalf("pings do not get through r1:\n%s", tailLines(pinger.Stdout(), 3))
	}

	killed := time.Now()
	relays[0].kill()
	t.Logf("r1 (carrying the link) SIGKILLed")
	_, why, ok = waitUntil(relayRecoverBound, 100*time.Millisecond, func() (bool, string) {
		k := 0
		for _, r := range parsePingD(pinger.Stdout()) {
			if r.at.After(killed) {
				k++
			}
		}
		return k >= 20, strconv.Itoa(k) + " replies since"
	})
	resumed, gap, lost := gapAfter(parsePingD(pinger.Stdout()), killed, time.Now())
	switch {
	case !ok || (lost && resumed.IsZero()):
		pathDiag(t, a, b)
		t.Fatalf("pings did not come back within %v after r1 died (%s)", relayRecoverBound, why)
	case lost:
		t.Logf("r1 dies: pings lost for %v, replies again %v after the kill (target %v)", gap.Round(time.Millisecond), resumed.Sub(killed).Round(time.Millisecond), relayRecoverTarget)
	default:
		t.Logf("r1 dies: no ping lost")
	}
	p := mustPeer(t, a, "b", isRelay, linkTimeout, "relayed")
	if p.RelayNode == "r1" || p.RelayNode == "" {
		t.Errorf("after r1 died a's link to b is relayed through %q (%s)", p.RelayNode, describePeer(p))
	}
	t.Logf("after r1 died: a → b through %s", p.RelayNode)
	if err := a.ctlJSON(t.Context(), &pw, "peers", "--why", "b"); err == nil {
		t.Logf("a: peers --why b: %s", pw.Explanation)
	}
	for _, n := range []*node{a, b, relays[1], relays[2]} {
		n.alive(t)
	}
}
