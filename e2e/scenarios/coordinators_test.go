//go:build e2e

package scenarios

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// TestCoordinators runs the control-plane failure scenarios on one lab of
// three coordinators (a gossip cluster) and nodes that list all three:
//
//   - failover: the coordinator the nodes use crashes (SIGKILL); the nodes
//     move to another, direct links keep carrying pings throughout, a
//     relayed link (whose TURN allocation was on the dead coordinator)
//     recovers, and a node started afterwards still connects to everyone;
//   - node restart: a node's meshd is SIGKILLed and started again; its links
//     come back without touching its peers;
//   - coordinator restart: the crashed coordinator starts again and learns
//     the whole registry (also the record of a node that is stopped) from
//     the others: a node that joins through it alone sees every peer.
func TestCoordinators(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	var coords []*node
	for _, name := range []string{"c1", "c2", "c3"} {
		coords = append(coords, m.addNode(l.AddHost(t, name, lab.HostOptions{}), nodeOpts{coordinator: true}))
	}
	for i, c := range coords {
		for j, o := range coords {
			if i != j {
				c.opts.coordPeers = append(c.opts.coordPeers, o)
			}
		}
		c.writeConfig()
	}
	join := nodeOpts{join: coords}
	n1 := m.addNode(l.AddNode(t, "n1", lab.NATFullCone, lab.HostOptions{}), join)
	n2 := m.addNode(l.AddNode(t, "n2", lab.NATPortRestricted, lab.HostOptions{}), join)
	// n3's links are relayed by configuration (ice.relay_only), not only by
	// its NAT: this scenario is about a relayed link surviving the death of
	// the coordinator that holds its allocation, and must have one every
	// run. (Port-restricted ↔ symmetric is relayed by the NATs alone, and
	// TestNATMatrix asserts that; one fresh run saw this pair direct here,
	// not reproduced in repeated loaded runs: mustPeer now logs the pairs and both
	// NATs' mappings should it happen again.)
	relayOnly := join
	relayOnly.ice = []string{"relay_only = true"}
	n3 := m.addNode(l.AddNode(t, "n3", lab.NATSymmetric, lab.HostOptions{}), relayOnly)
	for _, c := range coords {
		c.start()
	}
	for _, c := range coords {
		c.waitSession(t, sessionTimeout)
	}
	nodes := []*node{n1, n2, n3}
	for _, n := range nodes {
		n.start()
	}
	for _, n := range nodes {
		n.waitSession(t, sessionTimeout)
		n.startEvents(t)
	}
	mustPeer(t, n1, "n2", isDirect, linkTimeout, "direct")
	mustPeer(t, n2, "n3", isRelay, linkTimeout, "relayed (n3: ice.relay_only)")
	mustPeer(t, n1, "n3", isOnline, linkTimeout, "up")

	t.Run("failover", func(t *testing.T) { testFailover(t, m, coords, nodes) })
	if t.Failed() {
		return
	}
	t.Run("node-restart", func(t *testing.T) { testNodeRestart(t, n2, []*node{n1, n3}) })
	t.Run("coordinator-restart", func(t *testing.T) { testCoordinatorRestart(t, l, m, coords) })
}

// coordinatorOf returns the name of the coordinator n's session is with,
// or "" if it has none.
func coordinatorOf(n *node) string {
	st, err := n.status(context.Background())
	if err != nil || st.Coordinator.State != control.SessionConnected {
		return ""
	}
	return st.Coordinator.Name
}

func testFailover(t *testing.T, m *mesh, coords, nodes []*node) {
	used := coordinatorOf(nodes[0])
	var victim *node
	for _, c := range coords {
		if c.name == used {
			victim = c
		}
	}
	if victim == nil {
		t.Fatalf("n1 reports coordinator %q, not one of the three", used)
	}
	for _, n := range nodes {
		t.Logf("%s uses coordinator %s", n.name, coordinatorOf(n))
	}
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	pDirect, err := n1.host.StartWith(lab.ProcOptions{Label: "ping-failover-direct"}, "ping", "-n", "-D", "-i", "0.1", "-W", "1", n2.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pDirect.Stop()
	pRelay, err := n2.host.StartWith(lab.ProcOptions{Label: "ping-failover-relay"}, "ping", "-n", "-D", "-i", "0.1", "-W", "1", n3.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pRelay.Stop()
	// Let both pings get going before the crash.
	if _, _, ok := waitUntil(linkTimeout, 100*time.Millisecond, func() (bool, string) {
		return len(parsePingD(pDirect.Stdout())) >= 5 && len(parsePingD(pRelay.Stdout())) >= 5, ""
	}); !ok {
		t.Fatalf("pings do not get through before the crash:\n%s\n%s", tailLines(pDirect.Stdout(), 3), tailLines(pRelay.Stdout(), 3))
	}

	crash := time.Now()
	victim.kill()
	t.Logf("%s SIGKILLed", victim.name)
	for _, n := range nodes {
		took, _, ok := waitUntil(linkTimeout, 100*time.Millisecond, func() (bool, string) {
			c := coordinatorOf(n)
			return c != "" && c != victim.name, ""
		})
		if !ok {
			t.Errorf("%s did not fail over within %v of %s's crash", n.name, linkTimeout, victim.name)
			continue
		}
		t.Logf("%s failed over to %s within %v of the crash", n.name, coordinatorOf(n), took.Round(time.Millisecond))
	}
	for _, n := range nodes {
		// The daemon polls its session a few times a second; the event
		// follows the failover shortly.
		var ev *control.Event
		waitUntil(linkTimeout, 100*time.Millisecond, func() (bool, string) {
			for _, e := range n.eventsSince(crash) {
				if e.Kind == control.EventCoordinatorFailover && ev == nil {
					ev = &e
				}
			}
			return ev != nil, ""
		})
		if ev == nil {
			t.Errorf("%s: events --json reported no coordinator_failover within %v", n.name, linkTimeout)
		} else {
			t.Logf("%s: events --json: coordinator_failover %s → %s %v after the crash", n.name, ev.From, ev.To, ev.Time.Sub(crash).Round(time.Millisecond))
		}
	}
	// The relayed link's allocation died with the coordinator: it must be
	// rebuilt through a surviving coordinator's TURN.
	took, p, ok := n2.waitPeer(linkTimeout, "n3", func(p control.Peer) bool {
		return isRelay(p) && !strings.Contains(p.Relay, victim.host.IP().String())
	})
	if ok {
		t.Logf("n2 ↔ n3 relayed again, not through %s, %v after the crash: %s", victim.name, time.Since(crash).Round(time.Millisecond), describePeer(p))
	} else {
		t.Errorf("n2 ↔ n3 not relayed through a surviving coordinator %v after the crash: %s", took.Round(time.Millisecond), describePeer(p))
	}
	// Keep pinging until the relayed ping has answered a few times after
	// the recovery, then judge.
	recovered := time.Now()
	waitUntil(linkTimeout, 100*time.Millisecond, func() (bool, string) {
		n := 0
		for _, r := range parsePingD(pRelay.Stdout()) {
			if r.at.After(recovered) {
				n++
			}
		}
		return n >= 5, ""
	})
	end := time.Now()
	_ = pDirect.Stop()
	_ = pRelay.Stop()
	rs := parsePingD(pDirect.Stdout())
	if _, gap, lost := gapAfter(rs, crash, end); lost && gap > time.Second {
		t.Errorf("the direct link n1 → n2 stalled %v after the coordinator crash; it must keep flowing", gap.Round(time.Millisecond))
	} else {
		t.Logf("direct link n1 → n2 during the failover: %d replies, longest gap %v", len(rs), gap.Round(time.Millisecond))
	}
	if resumed, gap, lost := gapAfter(parsePingD(pRelay.Stdout()), crash, end); lost && resumed.IsZero() {
		t.Errorf("relayed link n2 → n3: pings never came back after the crash")
	} else if lost {
		t.Logf("relayed link n2 → n3: pings lost for %v, replies again %v after the crash", gap.Round(time.Millisecond), resumed.Sub(crash).Round(time.Millisecond))
	} else {
		t.Logf("relayed link n2 → n3: no ping lost across the crash")
	}

	// A node that starts now reaches the mesh through a survivor.
	n4 := m.addNode(m.lab.AddNode(t, "n4", lab.NATAddressRestricted, lab.HostOptions{}), nodeOpts{join: coords})
	started := time.Now()
	n4.start()
	n4.waitSession(t, sessionTimeout)
	t.Logf("n4 (started after the crash) has a session with %s after %v", coordinatorOf(n4), time.Since(started).Round(time.Millisecond))
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), linkTimeout+10*time.Second)
		at, err := firstReply(ctx, n4.host.Namespace, n.addr, linkTimeout)
		cancel()
		if err != nil {
			t.Errorf("new node n4 cannot reach %s: %v", n.name, err)
			continue
		}
		t.Logf("n4 → %s overlay ping answered %v after n4 started", n.name, at.Sub(started).Round(time.Millisecond))
	}
}

// testNodeRestart SIGKILLs n's meshd and starts it again: the peers, which
// keep running, must get their links to it back.
func testNodeRestart(t *testing.T, n *node, peers []*node) {
	killed := time.Now()
	n.kill()
	n.start()
	n.waitSession(t, sessionTimeout)
	for _, p := range peers {
		ctx, cancel := context.WithTimeout(context.Background(), linkTimeout+10*time.Second)
		at, err := firstReply(ctx, p.host.Namespace, n.addr, linkTimeout)
		cancel()
		if err != nil {
			pp, _, _ := p.peer(context.Background(), n.name)
			t.Errorf("%s cannot reach the restarted %s: %v (%s)", p.name, n.name, err, describePeer(pp))
			continue
		}
		pp, _, _ := p.peer(context.Background(), n.name)
		t.Logf("%s → %s (SIGKILLed and restarted) answers %v after the kill: %s", p.name, n.name, at.Sub(killed).Round(time.Millisecond), describePeer(pp))
	}
}

// testCoordinatorRestart stops a node (its record stays, offline), starts
// the crashed coordinator again, and checks that it has every registry
// entry: a new node that knows only that coordinator lists every peer, and
// every running node's list is complete.
func testCoordinatorRestart(t *testing.T, l *lab.Lab, m *mesh, coords []*node) {
	var dead *node
	for _, c := range coords {
		if p, _ := c.process(); p.Exited() {
			dead = c
		}
	}
	if dead == nil {
		t.Fatal("no crashed coordinator to restart")
	}
	n4 := m.nodeNamed("n4")
	if err := n4.stop(); err != nil {
		t.Errorf("n4: exit status after SIGTERM: %v", err)
	}
	restarted := time.Now()
	dead.start()
	dead.waitSession(t, sessionTimeout)
	n5 := m.addNode(l.AddNode(t, "n5", lab.NATFullCone, lab.HostOptions{}), nodeOpts{join: []*node{dead}})
	n5.start()
	n5.waitSession(t, sessionTimeout)
	if c := coordinatorOf(n5); c != dead.name {
		t.Fatalf("n5 uses coordinator %q, want %s (its only one)", c, dead.name)
	}
	var everyone []string
	for _, n := range m.allNodes() {
		everyone = append(everyone, n.name)
	}
	sort.Strings(everyone)
	for _, n := range m.allNodes() {
		if n == n4 {
			continue
		}
		want := slices.DeleteFunc(slices.Clone(everyone), func(s string) bool { return s == n.name })
		var got []string
		_, _, ok := waitUntil(linkTimeout, 200*time.Millisecond, func() (bool, string) {
			ps, err := n.peers(context.Background())
			if err != nil {
				return false, err.Error()
			}
			got = got[:0]
			for _, p := range ps {
				got = append(got, p.Name)
			}
			sort.Strings(got)
			return slices.Equal(got, want), ""
		})
		if !ok {
			t.Errorf("%s's peer list %v, want %v (missing registry entries after %s restarted)", n.name, got, want, dead.name)
			continue
		}
		if n == n5 || n == dead {
			t.Logf("%s lists all %d peers (n4 offline included) %v after %s restarted", n.name, len(got), time.Since(restarted).Round(time.Millisecond), dead.name)
		}
	}
	p, _, _ := n5.peer(context.Background(), "n4")
	if p.Online {
		t.Errorf("n5 lists the stopped n4 as online: %s", describePeer(p))
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		ctx, cancel := context.WithTimeout(context.Background(), linkTimeout+10*time.Second)
		_, err := firstReply(ctx, n5.host.Namespace, m.nodeNamed(name).addr, linkTimeout)
		cancel()
		if err != nil {
			t.Errorf("n5 (joined through the restarted %s) cannot reach %s: %v", dead.name, name, err)
		}
	}
}
