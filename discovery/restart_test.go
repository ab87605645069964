package discovery

import (
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// restartCoord closes c and starts a coordinator with the same certificate
// on the same session address and an empty registry, as a restarted (or
// upgraded) coordinator process is.
func (m *testMesh) restartCoord(t *testing.T, c *testCoord) *testCoord {
	t.Helper()
	addr := c.addr()
	_ = c.Close()
	return m.startCoord(t, c.Name(), 200, nil, func(o *CoordinatorOptions) {
		o.Credentials = c.creds
		o.ListenAddr = addr
	})
}

// TestCoordinatorRestartKeepsPeers: restarting the only coordinator does not
// make any node report a peer removed. The first nodes to reconnect get a
// snapshot without the others; they keep them (AbsenceGrace) until the
// others re-register, so a daemon closes no link.
func TestCoordinatorRestartKeepsPeers(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t)
	names := []string{"node-a", "node-b", "node-c"}
	var clients []*testClient
	for i, n := range names {
		clients = append(clients, m.startClient(t, m.creds(t, n, i+1), []string{c.addr()}))
	}
	all := func() bool {
		for _, cl := range clients {
			if !seesAll(cl.Client, names, true) {
				return false
			}
		}
		return true
	}
	testutil.WaitFor(t, 10*time.Second, "nodes see each other", all)

	c = m.restartCoord(t, c)
	testutil.WaitFor(t, 10*time.Second, "every node back on the restarted coordinator, seeing every peer online", func() bool {
		return c.Stats().Sessions == len(names) && all()
	})
	for _, cl := range clients {
		if cl.hasChange(PeerRemoved, "", "") {
			t.Errorf("%s reported a peer removed across the coordinator's restart", cl.Name())
		}
	}
	var sawPartial bool
	for _, cl := range clients {
		sawPartial = sawPartial || cl.log.contains("coordinator snapshot lacks peers; keeping them for the absence grace period")
	}
	if !sawPartial {
		t.Error("no node got a partial snapshot: the test did not exercise the restart")
	}
}

// TestAbsentPeerDroppedAfterGrace: a peer that does not come back after the
// coordinator's restart is dropped as gone once AbsenceGrace has passed,
// while those that come back are kept.
func TestAbsentPeerDroppedAfterGrace(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t)
	const grace = 1500 * time.Millisecond
	withGrace := func(o *ClientOptions) { o.AbsenceGrace = grace }
	a := m.startClient(t, m.creds(t, "node-a", 1), []string{c.addr()}, withGrace)
	b := m.startClient(t, m.creds(t, "node-b", 2), []string{c.addr()}, withGrace)
	gone := m.startClient(t, m.creds(t, "node-x", 3), []string{c.addr()}, withGrace)
	testutil.WaitFor(t, 10*time.Second, "nodes see each other", func() bool {
		return seesAll(a.Client, []string{"node-a", "node-b", "node-x"}, true)
	})
	_ = gone.Close() // no Leave: its record would stay, but the coordinator restarts empty

	c = m.restartCoord(t, c)
	testutil.WaitFor(t, 10*time.Second, "a and b back", func() bool { return c.Stats().Sessions == 2 })
	testutil.WaitFor(t, 10*time.Second, "absent peer dropped after the grace period", func() bool {
		return a.hasChange(PeerRemoved, "node-x", ReasonGone)
	})
	if a.hasChange(PeerRemoved, "node-b", "") || b.hasChange(PeerRemoved, "node-a", "") {
		t.Error("a peer that came back was reported removed")
	}
	if !a.log.contains("peer absent from the coordinator's registry beyond the grace period", "peer=node-x") {
		t.Error("the drop after the grace period was not logged")
	}
}

// TestCoordinatorCacheAfterRestart: a coordinator with a StateDir comes back
// with its registry, so even the first node to reconnect gets every peer in
// its snapshot; a node that does not come back is marked offline once
// StartGrace is over (and kept, as any offline node, until OfflineTTL).
func TestCoordinatorCacheAfterRestart(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	dir := t.TempDir()
	withState := func(o *CoordinatorOptions) { o.StateDir, o.StartGrace = dir, 500*time.Millisecond }
	c := m.startCluster1(t, withState)
	names := []string{"node-a", "node-b", "node-c"}
	var clients []*testClient
	for i, n := range names {
		clients = append(clients, m.startClient(t, m.creds(t, n, i+1), []string{c.addr()}))
	}
	testutil.WaitFor(t, 10*time.Second, "nodes see each other", func() bool {
		for _, cl := range clients {
			if !seesAll(cl.Client, names, true) {
				return false
			}
		}
		return true
	})
	// The coordinator stops while it holds all three sessions (its cache
	// says so); node-c then stops too and does not come back. Closing
	// node-c first would race its session's end against the shutdown.
	addr := c.addr()
	_ = c.Close()
	_ = clients[2].Close()
	c = m.startCoord(t, c.Name(), 200, nil, withState, func(o *CoordinatorOptions) {
		o.Credentials = c.creds
		o.ListenAddr = addr
	})
	if got := len(c.Records()); got != len(names) {
		t.Fatalf("restarted coordinator holds %d records, want the %d it had", got, len(names))
	}
	testutil.WaitFor(t, 10*time.Second, "a and b back", func() bool { return c.Stats().Sessions == 2 })
	for _, cl := range clients[:2] {
		if cl.log.contains("coordinator snapshot lacks peers") {
			t.Errorf("%s got a snapshot without its peers from the restarted coordinator", cl.Name())
		}
	}
	testutil.WaitFor(t, 10*time.Second, "node-c marked offline after the start grace", func() bool {
		return coordHas(c.Coordinator, "node-c", func(r Record) bool { return !r.Presence.Online })
	})
	testutil.WaitFor(t, 5*time.Second, "node-a sees node-c offline, not removed", func() bool {
		p, ok := clients[0].Peer("node-c")
		return ok && !p.Presence.Online
	})
	if !c.log.contains("start grace over: nodes not back marked offline", "offline=1") {
		t.Error("the end of the start grace was not logged")
	}
}
