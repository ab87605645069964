package discovery

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// startCluster starts n coordinators, each joined to all earlier ones, and
// waits until they form one cluster.
func startCluster(t *testing.T, m *testMesh, n int, tweaks ...coordTweak) []*testCoord {
	t.Helper()
	var cs []*testCoord
	var join []string
	for i := range n {
		c := m.startCoord(t, fmt.Sprintf("coord-%d", i+1), 200+i, append([]string(nil), join...), tweaks...)
		join = append(join, c.GossipAddr())
		cs = append(cs, c)
	}
	testutil.WaitFor(t, 10*time.Second, "coordinators form one cluster", func() bool {
		for _, c := range cs {
			if len(c.Members()) != n {
				return false
			}
		}
		return true
	})
	return cs
}

// prefer orders coordinator addresses starting at index i.
func prefer(cs []*testCoord, i int) []string {
	var out []string
	for j := range cs {
		out = append(out, cs[(i+j)%len(cs)].addr())
	}
	return out
}

func TestClusterConvergeFailoverAndSignals(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	coords := startCluster(t, m, 3)

	var nodes []*testClient
	var names []string
	for i := range 6 {
		name := fmt.Sprintf("node-%d", i)
		names = append(names, name)
		nodes = append(nodes, m.startClient(t, m.creds(t, name, i+1), prefer(coords, i%3)))
	}
	testutil.WaitFor(t, 10*time.Second, "every node sees every other node online", func() bool {
		for _, n := range nodes {
			if !seesAll(n.Client, names, true) {
				return false
			}
		}
		return true
	})
	for i, n := range nodes {
		if st := n.Status(); !st.Connected || st.Coordinator != fmt.Sprintf("coord-%d", i%3+1) {
			t.Fatalf("%s: status %+v", n.Name(), st)
		}
		if got, ok := n.Peer(names[(i+1)%6]); !ok || got.Cert == nil || len(got.Addrs) != 1 {
			t.Fatalf("%s: Peer lookup: %+v %v", n.Name(), got, ok)
		}
	}

	// Signals between nodes on different coordinators, and to unknown nodes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[0].SendSignal(ctx, "node-1", []byte("offer from 0")); err != nil {
		t.Fatalf("cross-coordinator signal: %v", err)
	}
	expectSignal(t, nodes[1], "node-0", "offer from 0")
	if err := nodes[2].SendSignal(ctx, "node-5", []byte("same coordinator")); err != nil {
		t.Fatalf("local signal: %v", err)
	}
	expectSignal(t, nodes[5], "node-2", "same coordinator")
	err := nodes[0].SendSignal(ctx, "node-nobody", []byte("x"))
	var se *SignalError
	if !errors.Is(err, ErrUnknownPeer) || !errors.As(err, &se) || se.To != "node-nobody" {
		t.Fatalf("unknown target: %v", err)
	}
	if err := nodes[0].SendSignal(ctx, "node-1", make([]byte, MaxSignalPayload+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("oversized payload: %v", err)
	}

	// Close coordinator 1: its nodes (0 and 3) move; the registry stays complete.
	if err := coords[0].Close(); err != nil {
		t.Fatal(err)
	}
	// Meanwhile the nodes keep serving what they knew.
	if !seesAll(nodes[0].Client, names, false) || !seesAll(nodes[3].Client, names, false) {
		t.Fatal("a node forgot its registry when its coordinator went away")
	}
	testutil.WaitFor(t, 10*time.Second, "nodes of coord-1 fail over and everyone is online again", func() bool {
		for _, i := range []int{0, 3} {
			if st := nodes[i].Status(); !st.Connected || st.Coordinator == "coord-1" || st.Failovers == 0 {
				return false
			}
		}
		for _, n := range nodes {
			if !seesAll(n.Client, names, true) {
				return false
			}
		}
		for _, c := range coords[1:] {
			for _, name := range names {
				if !coordHas(c.Coordinator, name, func(r Record) bool { return r.Presence.Online && r.Presence.Coordinator != "coord-1" }) {
					return false
				}
			}
		}
		return true
	})
	if err := nodes[0].SendSignal(ctx, "node-3", []byte("after failover")); err != nil {
		t.Fatalf("signal after failover: %v", err)
	}
	expectSignal(t, nodes[3], "node-0", "after failover")

	// A node that goes away without leaving is offline: signals to it fail.
	if err := nodes[5].Close(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node-5 offline everywhere", func() bool {
		p, ok := nodes[1].Peer("node-5")
		return ok && !p.Presence.Online && coordHas(coords[2].Coordinator, "node-5", func(r Record) bool { return !r.Presence.Online })
	})
	if err := nodes[1].SendSignal(ctx, "node-5", []byte("x")); !errors.Is(err, ErrPeerOffline) {
		t.Fatalf("offline target: %v", err)
	}

	// A node that leaves is removed everywhere (tombstone).
	if err := nodes[4].Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	testutil.WaitFor(t, 5*time.Second, "node-4's departure reaches every node", func() bool {
		for _, i := range []int{0, 1, 2, 3} {
			if _, ok := nodes[i].Peer("node-4"); ok || !nodes[i].hasChange(PeerRemoved, "node-4", ReasonLeft) {
				return false
			}
		}
		return true
	})
	for _, c := range coords[1:] {
		var tomb bool
		for _, r := range c.Records() {
			tomb = tomb || (r.Name == "node-4" && r.Left)
		}
		if !tomb {
			t.Errorf("%s holds no tombstone for node-4", c.Name())
		}
	}
	if err := nodes[0].SendSignal(ctx, "node-4", []byte("x")); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("signal to a departed node: %v", err)
	}
	if st := coords[0].Stats(); st.SignalsForwarded == 0 {
		t.Errorf("coord-1 forwarded no signal to coord-2: %+v", st)
	}
}

func expectSignal(t *testing.T, n *testClient, from, payload string) {
	t.Helper()
	select {
	case s := <-n.sigs:
		if s.from != from || string(s.payload) != payload {
			t.Fatalf("%s got signal %q from %s, want %q from %s", n.Name(), s.payload, s.from, payload, from)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no signal from %s", n.Name(), from)
	}
}

func TestPartitionHeals(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	coords := startCluster(t, m, 3)
	n1 := m.startClient(t, m.creds(t, "node-1", 1), []string{coords[0].addr()})
	n3 := m.startClient(t, m.creds(t, "node-3", 3), []string{coords[2].addr()})
	testutil.WaitFor(t, 10*time.Second, "two nodes see each other", func() bool {
		return seesAll(n1.Client, []string{"node-3"}, true) && seesAll(n3.Client, []string{"node-1"}, true)
	})

	coords[2].ft.drop.Store(true)
	testutil.WaitFor(t, 10*time.Second, "coord-3 is declared dead and its node offline", func() bool {
		return len(coords[0].Members()) == 2 && len(coords[2].Members()) == 1 &&
			coordHas(coords[0].Coordinator, "node-3", func(r Record) bool { return !r.Presence.Online })
	})

	// Changes on the majority side while coord-3 is cut off.
	newEP := LocalInfo{Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:5000")}}
	if err := n1.UpdateRecord(newEP); err != nil {
		t.Fatal(err)
	}
	n4 := m.startClient(t, m.creds(t, "node-4", 4), []string{coords[1].addr()})
	testutil.WaitFor(t, 10*time.Second, "majority side converges", func() bool {
		return seesAll(n4.Client, []string{"node-1", "node-3"}, false) &&
			coordHas(coords[1].Coordinator, "node-1", func(r Record) bool { return len(r.Endpoints) == 1 })
	})
	if coordHas(coords[2].Coordinator, "node-4", nil) {
		t.Fatal("partitioned coordinator learnt of node-4")
	}

	coords[2].ft.drop.Store(false)
	testutil.WaitFor(t, 15*time.Second, "partition heals and every replica converges", func() bool {
		for _, c := range coords {
			if len(c.Members()) != 3 {
				return false
			}
			for _, name := range []string{"node-1", "node-3", "node-4"} {
				if !coordHas(c.Coordinator, name, func(r Record) bool { return r.Presence.Online }) {
					return false
				}
			}
			if !coordHas(c.Coordinator, "node-1", func(r Record) bool { return len(r.Endpoints) == 1 }) {
				return false
			}
		}
		p, ok := n3.Peer("node-1")
		return ok && len(p.Endpoints) == 1 && seesAll(n3.Client, []string{"node-1", "node-4"}, true) &&
			seesAll(n1.Client, []string{"node-3", "node-4"}, true)
	})
	// A coordinator forwards signals only to members that proved the
	// coordinator role (gossipauth.go); after the heal coord-3's proof
	// reaches the others with its next Hello, so the first signal may
	// still find node-3 unreachable for a moment.
	var lastErr error
	healed := time.Now()
	if !testutil.Eventually(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		lastErr = n4.SendSignal(ctx, "node-3", []byte("healed"))
		return lastErr == nil
	}) {
		t.Fatalf("signal across the healed partition: %v", lastErr)
	}
	t.Logf("a signal crossed the healed partition %v after the registries converged", time.Since(healed).Round(time.Millisecond))
	expectSignal(t, n3, "node-4", "healed")

	// A coordinator that joins late gets the whole registry by push/pull.
	late := m.startCoord(t, "coord-late", 299, []string{coords[1].GossipAddr()})
	testutil.WaitFor(t, 10*time.Second, "late joiner converges", func() bool {
		return coordHas(late.Coordinator, "node-1", func(r Record) bool { return len(r.Endpoints) == 1 && r.Presence.Online }) &&
			coordHas(late.Coordinator, "node-3", func(r Record) bool { return r.Presence.Online }) &&
			coordHas(late.Coordinator, "node-4", func(r Record) bool { return r.Presence.Online })
	})
}

func TestRevocationDropsNodeEverywhere(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	coords := startCluster(t, m, 2)
	a := m.startClient(t, m.creds(t, "node-a", 1), prefer(coords, 0))
	b := m.startClient(t, m.creds(t, "node-b", 2), prefer(coords, 1))
	xc := m.creds(t, "node-x", 3)
	x := m.startClient(t, xc, prefer(coords, 0))
	all := []string{"node-a", "node-b", "node-x"}
	testutil.WaitFor(t, 10*time.Second, "all nodes see each other", func() bool {
		return seesAll(a.Client, all, true) && seesAll(b.Client, all, true) && seesAll(x.Client, all, true)
	})

	crl, err := m.ca.Revoke(nil, []*x509.Certificate{xc.Cert.Cert}, "key compromised", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.PublishCRL(crl); err != nil {
		t.Fatal(err)
	}
	// The requirement: a revoked node is gone mesh-wide within 5 s.
	testutil.WaitFor(t, 5*time.Second, "node-x dropped by every coordinator and node", func() bool {
		for _, c := range coords {
			if coordHas(c.Coordinator, "node-x", nil) {
				return false
			}
		}
		_, inA := a.Peer("node-x")
		_, inB := b.Peer("node-x")
		return !inA && !inB && !x.Status().Connected
	})
	testutil.WaitFor(t, 2*time.Second, "node-b told about the CRL and the revoked peer", func() bool {
		return b.hasChange(CRLUpdated, "", "") && b.hasChange(PeerRemoved, "node-x", ReasonRevoked)
	})
	// node-x keeps being refused, with the reason on both ends.
	testutil.WaitFor(t, 5*time.Second, "node-x refused with the reason logged on both ends", func() bool {
		err := x.Status().LastError
		var re *RefusedError
		return errors.As(err, &re) && errors.Is(err, ErrCertificateRejected) && strings.Contains(re.Reason, "revoked") &&
			x.log.contains("coordinator refused the session", "revoked") &&
			coords[0].log.contains("refused node session: certificate rejected", "node-x", "revoked")
	})
	if coords[0].Stats().CRLsInstalled == 0 || coords[1].Stats().CRLsInstalled == 0 {
		t.Error("a coordinator did not install the CRL")
	}

	// A newer CRL installed straight into a node's verifier (as the daemon
	// does when the operator drops a crl.pem) is noticed and spread too; and
	// one given to a coordinator's API.
	yc, zc := m.creds(t, "node-y", 4), m.creds(t, "node-z", 5)
	y := m.startClient(t, yc, prefer(coords, 1))
	z := m.startClient(t, zc, prefer(coords, 0))
	testutil.WaitFor(t, 10*time.Second, "y and z known", func() bool {
		return seesAll(a.Client, []string{"node-b", "node-y", "node-z"}, true) && seesAll(b.Client, []string{"node-a", "node-y", "node-z"}, true)
	})
	crl2, err := m.ca.Revoke(crl, []*x509.Certificate{yc.Cert.Cert}, "retired", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.opts.Verifier.UpdateCRL(crl2); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node-y dropped everywhere", func() bool {
		_, inB := b.Peer("node-y")
		return !inB && !coordHas(coords[1].Coordinator, "node-y", nil) && !y.Status().Connected
	})
	crl3, err := m.ca.Revoke(crl2, []*x509.Certificate{zc.Cert.Cert}, "retired", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := coords[1].PublishCRL(crl3); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "node-z dropped everywhere", func() bool {
		_, inA := a.Peer("node-z")
		return !inA && !coordHas(coords[0].Coordinator, "node-z", nil) && !z.Status().Connected
	})
	if err := coords[1].PublishCRL(crl); err != nil {
		t.Fatalf("older CRL: %v", err)
	}
	if n := coords[1].opts.Verifier.CRL().Number().Int64(); n != 3 {
		t.Fatalf("an older CRL replaced the newer one: number %d", n)
	}
	foreign := newTestMesh(t)
	fcrl, err := foreign.ca.Revoke(nil, nil, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := coords[1].PublishCRL(fcrl); !errors.Is(err, pki.ErrCRLSignature) {
		t.Fatalf("CRL of another CA: %v", err)
	}
}

func TestForeignCertificatesRefused(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	coords := startCluster(t, m, 1)
	foreign := newTestMesh(t)

	// A node with the mesh's CA file but a certificate from another CA: the
	// coordinator refuses it and tells it why.
	fc := foreign.creds(t, "node-f", 9)
	mixed := &pki.Credentials{CA: m.ca.Cert, Cert: fc.Cert, Key: fc.Key}
	f := m.startClient(t, mixed, []string{coords[0].addr()})
	testutil.WaitFor(t, 5*time.Second, "foreign certificate refused, reason logged on both ends", func() bool {
		err := f.Status().LastError
		return errors.Is(err, ErrCertificateRejected) && errors.Is(err, ErrRefused) &&
			f.log.contains("coordinator refused the session", "unknown certificate authority") &&
			coords[0].log.contains("refused node session: certificate rejected", "node-f", "unknown certificate authority")
	})
	if coordHas(coords[0].Coordinator, "node-f", nil) || coords[0].Stats().SessionsRefused == 0 {
		t.Fatal("foreign node registered")
	}

	// A node of another mesh altogether refuses the coordinator's certificate
	// itself; the coordinator sees the failed handshake.
	g := foreign.startClient(t, foreign.creds(t, "node-g", 10), []string{coords[0].addr()})
	testutil.WaitFor(t, 5*time.Second, "node of another mesh refuses the coordinator", func() bool {
		return errors.Is(g.Status().LastError, ErrCertificateRejected) && errors.Is(g.Status().LastError, pki.ErrUnknownCA) &&
			g.log.contains("refusing coordinator: certificate rejected", "unknown certificate authority") &&
			coords[0].log.contains("node session handshake failed", "bad certificate")
	})

	// And a coordinator of another mesh cannot join the cluster: its label
	// (derived from its CA) and gossip key differ.
	other := foreign.startCoord(t, "coord-x", 1, []string{coords[0].GossipAddr()})
	if n := len(other.Members()); n != 1 {
		t.Fatalf("foreign coordinator joined: %d members", n)
	}
	if n := len(coords[0].Members()); n != 1 {
		t.Fatalf("cluster admitted a foreign coordinator: %d members", n)
	}
}

func TestCachedRegistryAfterRestart(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	coords := startCluster(t, m, 1)
	dirA := t.TempDir()
	ac := m.creds(t, "node-a", 1)
	a := m.startClient(t, ac, []string{coords[0].addr()}, func(o *ClientOptions) { o.StateDir = dirA })
	b := m.startClient(t, m.creds(t, "node-b", 2), []string{coords[0].addr()})
	c := m.startClient(t, m.creds(t, "node-c", 3), []string{coords[0].addr()})
	all := []string{"node-a", "node-b", "node-c"}
	testutil.WaitFor(t, 10*time.Second, "nodes see each other", func() bool {
		return seesAll(a.Client, all, true) && seesAll(b.Client, all, true) && seesAll(c.Client, all, true)
	})
	_ = a.Close()
	_ = b.Close()
	_ = c.Close()
	_ = coords[0].Close()
	st, err := os.Stat(dirA + "/" + CacheFile)
	if err != nil {
		t.Fatalf("cache not written: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("cache mode %v, want 0600", st.Mode().Perm())
	}

	// Every coordinator is down: the restarted node knows its peers at once.
	a2 := m.startClient(t, ac, []string{coords[0].addr()}, func(o *ClientOptions) { o.StateDir = dirA })
	if !seesAll(a2.Client, all, false) {
		t.Fatalf("restarted node knows %v", peerNames(a2.Client))
	}
	testutil.WaitFor(t, 2*time.Second, "cached peers announced to subscribers", func() bool {
		return a2.hasChange(PeerAdded, "node-b", "") && a2.hasChange(PeerAdded, "node-c", "")
	})
	if a2.Status().Connected {
		t.Fatal("connected with every coordinator down")
	}
	testutil.WaitFor(t, 2*time.Second, "connection failures recorded", func() bool { return a2.Status().LastError != nil })

	// A corrupt cache is ignored with a warning, never trusted.
	if err := writeFileAtomic(dirA+"/"+CacheFile, []byte("MESHDREG\x01garbage")); err != nil {
		t.Fatal(err)
	}
	a3 := m.startClient(t, ac, []string{coords[0].addr()}, func(o *ClientOptions) { o.StateDir = dirA })
	if len(a3.Peers()) != 0 || !a3.log.contains("registry cache invalid") {
		t.Fatalf("corrupt cache: peers %v", peerNames(a3.Client))
	}
}
