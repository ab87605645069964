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
// its own. The relays are made unequal: r3's uplink is a tc tbf of 2 Mbit/s
// that a ping flood keeps full (about 100 ms of queue and most packets
// lost: a congested relay); r1 and r2 are clean. The pair must settle on
// the clean relays (the lowest RTT through a relay; peers names the relay
// node, peers --why says why); then the relay carrying a's side of the
// link is SIGKILLed while a ping runs every 100 ms, and the pair must move
// to the other clean relay, not the congested one: the ping gap is logged
// against the 3 s target and asserted within a generous bound.
func TestMemberRelays(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	c := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true, noTURN: true})
	join := nodeOpts{join: []*node{c}}
	relays := map[string]*node{}
	for _, name := range []string{"r1", "r2", "r3"} {
		h := l.AddHost(t, name, lab.HostOptions{})
		o := join
		o.extra = fmt.Sprintf("\n[relay]\nenabled = true\nlisten = %q\nmax_allocations = 64\n", netip.AddrPortFrom(h.IP(), memberRelayPort))
		relays[name] = m.addNode(h, o)
	}
	relayOnly := join
	relayOnly.ice = []string{"relay_only = true"}
	a := m.addNode(l.AddSite(t, "asite", lab.SiteOptions{NAT: lab.NATSymmetric}).AddHost(t, "a", lab.HostOptions{}), relayOnly)
	b := m.addNode(l.AddSite(t, "bsite", lab.SiteOptions{NAT: lab.NATSymmetric}).AddHost(t, "b", lab.HostOptions{}), relayOnly)

	// Congest r3 before anything starts: a tbf on its uplink, kept full by
	// a ping flood (~11 Mbit/s) to the coordinator.
	r3 := relays["r3"]
	if out, err := r3.host.Run(t.Context(), "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "2mbit", "burst", "8kb", "latency", "100ms"); err != nil {
		t.Fatalf("tbf on r3: %v\n%s", err, out)
	}
	flood, err := r3.host.StartWith(lab.ProcOptions{Label: "flood"}, "ping", "-q", "-n", "-i", "0.001", "-s", "1400", c.host.IP().String())
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Stop()
	for _, n := range m.allNodes() {
		n.start()
	}
	for _, n := range m.allNodes() {
		n.waitSession(t, sessionTimeout)
	}
	relayOf := func(n *node, peer string) string {
		p, _, _ := n.peer(t.Context(), peer)
		if !isRelay(p) {
			return ""
		}
		return p.RelayNode
	}
	clean := func(r string) bool { return r == "r1" || r == "r2" }
	mustPeer(t, a, "b", isRelay, linkTimeout, "relayed")
	took, why, ok := waitUntil(30*time.Second, 200*time.Millisecond, func() (bool, string) {
		ra, rb := relayOf(a, "b"), relayOf(b, "a")
		return clean(ra) && clean(rb), "a's relay " + strconv.Quote(ra) + ", b's " + strconv.Quote(rb)
	})
	var pw control.PeerWhy
	if err := a.ctlJSON(t.Context(), &pw, "peers", "--why", "b"); err == nil {
		t.Logf("a: peers --why b: %s", pw.Explanation)
	}
	if !ok {
		pathDiag(t, a, b)
		t.Fatalf("the pair did not settle on the clean relays within 30 s: %s", why)
	}
	t.Logf("the pair is relayed through clean relays %v after it was first relayed (%s)", took.Round(time.Millisecond), why)
	if out, err := a.ctl(t.Context(), "peers"); err == nil {
		t.Logf("a: meshctl peers\n%s", out)
	}

	pinger, err := a.host.StartWith(lab.ProcOptions{Label: "ping-member-relay"}, "ping", "-n", "-D", "-i", "0.1", "-W", "1", b.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pinger.Stop()
	if _, _, ok := waitUntil(20*time.Second, 100*time.Millisecond, func() (bool, string) { return len(parsePingD(pinger.Stdout())) >= 10, "" }); !ok {
		t.Fatalf("pings do not get through the member relay:\n%s", tailLines(pinger.Stdout(), 3))
	}

	victim := relayOf(a, "b")
	if !clean(victim) {
		t.Fatalf("a's link to b moved off the clean relays: %q", victim)
	}
	other := map[string]string{"r1": "r2", "r2": "r1"}[victim]
	killed := time.Now()
	relays[victim].kill()
	t.Logf("%s (carrying a's side of the link) SIGKILLed", victim)
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
		t.Fatalf("pings did not come back within %v after %s died (%s)", relayRecoverBound, victim, why)
	case lost:
		t.Logf("%s dies: pings lost for %v, replies again %v after the kill (target %v)", victim, gap.Round(time.Millisecond), resumed.Sub(killed).Round(time.Millisecond), relayRecoverTarget)
	default:
		t.Logf("%s dies: no ping lost", victim)
	}
	ra, rb := relayOf(a, "b"), relayOf(b, "a")
	t.Logf("after %s died: a's relay %q, b's %q", victim, ra, rb)
	if ra != other || rb != other {
		t.Errorf("after %s died the link is relayed through a's %q and b's %q, want %s (the clean relay left)", victim, ra, rb, other)
	}
	if err := a.ctlJSON(t.Context(), &pw, "peers", "--why", "b"); err == nil {
		t.Logf("a: peers --why b: %s", pw.Explanation)
	}
	for _, n := range []*node{a, b, relays[other], r3} {
		n.alive(t)
	}
}
