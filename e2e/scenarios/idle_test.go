//go:build e2e

package scenarios

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// Idle budget (issue 12, item 6): an idle link costs on average at most one
// packet per 10 s each way. A node with 4 peers therefore sends and receives
// at most 0.4 UDP packets/s for its links; on top of that come the node's
// TURN allocation refreshes to the coordinator (a few per 5 minutes). The
// coordinator's uplink carries its own 4 links plus the STUN/TURN traffic
// of the 4 nodes. The asserted limits are those figures times a margin of
// 1.5 (plus a constant for the TURN refreshes and permission refreshes that
// may fall into the window), so that the test checks the order of
// magnitude, not the jitter of a 60 s window.
const (
	idleWindow       = 60 * time.Second
	idleLinkRate     = 0.1 // packets/s each way per idle link (the budget)
	idleMargin       = 1.5
	idleRefreshSlack = 6 // TURN refreshes/permissions that may fall in a window
)

// TestIdle is issue 12 item 6: a coordinator and 4 nodes (two public, one
// behind a port-restricted NAT, one behind a symmetric NAT whose link to
// the port-restricted node is relayed), every link up, then 60 s of no
// traffic at all. nft counters on each host's uplink count meshd's UDP
// packets both ways during the window; the rate must stay within the idle
// budget. The NAT routers forget a UDP mapping after 25 s of silence (a
// common home-router figure), so the keepalives must come often enough to
// keep them. After the window a ping between every pair of nodes must be
// answered at once (the path still works: no reconnect needed), and the
// time to the first reply is recorded.
func TestIdle(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true, turnTCP: true})
	opts := nodeOpts{join: []*node{coord}}
	nodes := []*node{
		m.addNode(l.AddHost(t, "alpha", lab.HostOptions{}), opts),
		m.addNode(l.AddHost(t, "beta", lab.HostOptions{}), opts),
		m.addNode(l.AddNode(t, "gamma", lab.NATPortRestrictedMasq, lab.HostOptions{}), opts),
		m.addNode(l.AddNode(t, "delta", lab.NATSymmetric, lab.HostOptions{}), opts),
	}
	for _, n := range nodes[2:] {
		r := n.host.Site().Router()
		if err := r.SetConntrackTimeouts(lab.ConntrackTimeouts{UDP: 25 * time.Second, UDPStream: 25 * time.Second, TCPEstablished: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	all := append([]*node{coord}, nodes...)
	ctx := context.Background()
	for _, n := range all {
		for _, argv := range [][]string{
			{"nft", "add", "table", "inet", "mdidle"},
			{"nft", "add", "chain", "inet", "mdidle", "out", "{ type filter hook output priority 0 ; policy accept ; }"},
			{"nft", "add", "chain", "inet", "mdidle", "in", "{ type filter hook input priority 0 ; policy accept ; }"},
			{"nft", "add", "rule", "inet", "mdidle", "out", "oifname", "eth0", "meta", "l4proto", "udp", "counter"},
			{"nft", "add", "rule", "inet", "mdidle", "out", "oifname", "eth0", "meta", "l4proto", "tcp", "counter"},
			{"nft", "add", "rule", "inet", "mdidle", "in", "iifname", "eth0", "meta", "l4proto", "udp", "counter"},
			{"nft", "add", "rule", "inet", "mdidle", "in", "iifname", "eth0", "meta", "l4proto", "tcp", "counter"},
		} {
			if out, err := n.host.Run(ctx, argv[0], argv[1:]...); err != nil {
				t.Fatalf("%s: %s: %v\n%s", n.name, strings.Join(argv, " "), err, out)
			}
		}
	}
	for _, n := range all {
		n.start()
	}
	for _, n := range all {
		n.waitSession(t, sessionTimeout)
	}
	for _, n := range all {
		for _, p := range all {
			if p != n {
				mustPeer(t, n, p.name, isOnline, linkTimeout, "online")
			}
		}
	}
	// Links are up: from here on nothing but meshd's own upkeep moves. A
	// link goes idle Timers.IdleAfter after its last data record; wait
	// until every host's last 5 s were within the budget (or give up after
	// 45 s and measure anyway: the window then shows what it costs).
	slice := 5 * time.Second
	quiet := func() (bool, string) {
		prev := map[*node]idleCounts{}
		for _, n := range all {
			prev[n] = readIdleCounts(t, n)
		}
		<-time.After(slice)
		var loud []string
		for _, n := range all {
			c := readIdleCounts(t, n).minus(prev[n])
			limit := idleLimit(n == coord, len(all)-1, slice.Seconds())
			if float64(c.udpOut) > limit || float64(c.udpIn) > limit {
				loud = append(loud, fmt.Sprintf("%s %d/%d", n.name, c.udpOut, c.udpIn))
			}
		}
		return len(loud) == 0, strings.Join(loud, ", ")
	}
	took, loud, ok := waitUntil(45*time.Second, 0, quiet)
	t.Logf("links quiet after %v (%v; still loud: %s)", took.Round(time.Second), ok, loud)
	// Every link's state and path changes in the window, so that a loud
	// node explains itself (a link that restarted or moved is not idle).
	for _, n := range all {
		n.startEvents(t)
	}
	// The window is a measurement period, not a wait for a condition.
	before := map[*node]idleCounts{}
	for _, n := range all {
		before[n] = readIdleCounts(t, n)
	}
	start := time.Now()
	<-time.After(idleWindow)
	secs := time.Since(start).Seconds()
	var report []string
	for _, n := range all {
		c := readIdleCounts(t, n).minus(before[n])
		limit := idleLimit(n == coord, len(all)-1, secs)
		line := fmt.Sprintf("%s: UDP out %d (%.2f/s) in %d (%.2f/s), TCP out %d in %d over %.0f s (limit %.0f each way)",
			n.name, c.udpOut, float64(c.udpOut)/secs, c.udpIn, float64(c.udpIn)/secs, c.tcpOut, c.tcpIn, secs, limit)
		t.Log(line)
		report = append(report, line)
		if float64(c.udpOut) > limit || float64(c.udpIn) > limit {
			t.Errorf("%s: idle links cost more than the budget: %s", n.name, line)
		}
	}
	for _, n := range all {
		// Which links moved data records during the window, and which
		// changed state or path in it (diagnostics).
		if ps, err := n.peers(ctx); err == nil {
			var parts []string
			for _, p := range ps {
				parts = append(parts, fmt.Sprintf("%s rx=%d tx=%d", p.Name, p.RxPackets, p.TxPackets))
				if p.Since.After(start) {
					t.Logf("%s: link to %s changed state %v into the window: %s path_changes=%d",
						n.name, p.Name, p.Since.Sub(start).Round(time.Millisecond), describePeer(p), p.PathChanges)
				}
			}
			t.Logf("%s: overlay packets per peer: %s", n.name, strings.Join(parts, ", "))
		}
		for _, ev := range n.eventsSince(start) {
			t.Logf("%s: event %v into the window: %s %s %s→%s %s", n.name, ev.Time.Sub(start).Round(time.Millisecond), ev.Kind, ev.Peer, ev.From, ev.To, ev.Message)
		}
	}
	// Traffic after the idle window flows at once, on every pair.
	var worst time.Duration
	for _, n := range nodes {
		for _, p := range all {
			if p == n {
				continue
			}
			sent := time.Now()
			got, err := firstReply(ctx, n.host.Namespace, p.addr, 5*time.Second)
			if err != nil {
				pathDiag(t, n, p)
				t.Errorf("%s → %s after %v idle: %v", n.name, p.name, idleWindow, err)
				continue
			}
			d := got.Sub(sent)
			worst = max(worst, d)
			if d > time.Second {
				t.Errorf("%s → %s: first ping reply %v after an idle window, want ≤ 1 s", n.name, p.name, d.Round(time.Millisecond))
			}
		}
	}
	t.Logf("first ping reply after %v idle: worst %v over every pair", idleWindow, worst.Round(time.Millisecond))
	for _, n := range all {
		n.alive(t)
	}
	text := strings.Join(report, "\n") + fmt.Sprintf("\nfirst reply after idle: worst %v\n", worst.Round(time.Millisecond))
	_ = os.WriteFile(filepath.Join(l.ArtifactDir(), "idle.txt"), []byte(text), 0o644)
}

// idleLimit is the most UDP packets each way a host's uplink may carry
// over secs seconds of idleness with links idle links.
func idleLimit(coordinator bool, links int, secs float64) float64 {
	if coordinator {
		// The coordinator's own links, plus the STUN/TURN upkeep of every node.
		return 2*float64(links)*idleLinkRate*idleMargin*secs + 2*idleRefreshSlack
	}
	return float64(links)*idleLinkRate*idleMargin*secs + idleRefreshSlack
}

// idleCounts are the packets an mdidle table counted on a host's uplink.
type idleCounts struct{ udpOut, tcpOut, udpIn, tcpIn int }

func (c idleCounts) minus(o idleCounts) idleCounts {
	return idleCounts{c.udpOut - o.udpOut, c.tcpOut - o.tcpOut, c.udpIn - o.udpIn, c.tcpIn - o.tcpIn}
}

var idleCounterRE = regexp.MustCompile(`l4proto (udp|tcp) counter packets (\d+)`)

// readIdleCounts reads the mdidle counters of n's host.
func readIdleCounts(t *testing.T, n *node) idleCounts {
	t.Helper()
	var c idleCounts
	for _, chain := range []string{"out", "in"} {
		out, err := n.host.Run(context.Background(), "nft", "list", "chain", "inet", "mdidle", chain)
		if err != nil {
			t.Fatalf("%s: nft list: %v\n%s", n.name, err, out)
		}
		mm := idleCounterRE.FindAllStringSubmatch(out, -1)
		if len(mm) != 2 {
			t.Fatalf("%s: want 2 counters in:\n%s", n.name, out)
		}
		for _, m := range mm {
			v, _ := strconv.Atoi(m[2])
			switch {
			case chain == "out" && m[1] == "udp":
				c.udpOut = v
			case chain == "out":
				c.tcpOut = v
			case m[1] == "udp":
				c.udpIn = v
			default:
				c.tcpIn = v
			}
		}
	}
	return c
}
