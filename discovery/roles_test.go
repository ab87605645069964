package discovery

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// fakeCoordinator is a TLS server speaking the session ALPN with any
// certificate: a member posing as a coordinator. It counts the frames nodes
// send it.
type fakeCoordinator struct {
	ln     net.Listener
	frames atomic.Int64
	wg     sync.WaitGroup
}

func startFakeCoordinator(t *testing.T, creds *pki.Credentials) *fakeCoordinator {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{creds.TLSCertificate()},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{sessionALPN},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCoordinator{ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(conn)
				var hdr [frameHeaderLen]byte
				for {
					if _, err := readFrame(br, &hdr); err != nil {
						return
					}
					f.frames.Add(1)
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		f.wg.Wait()
	})
	return f
}

// TestNodeRefusesCoordinatorWithoutRole: a member certificate cannot serve
// sessions: the node refuses it in the TLS handshake, says which check
// failed, and sends it nothing (not even its record).
func TestNodeRefusesCoordinatorWithoutRole(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	fake := startFakeCoordinator(t, m.creds(t, "node-m", 5))
	a := m.startClient(t, m.creds(t, "node-a", 1), []string{fake.ln.Addr().String()})
	testutil.WaitFor(t, 5*time.Second, "refusal reported", func() bool {
		return errors.Is(a.Status().LastError, pki.ErrNotCoordinator)
	})
	if !errors.Is(a.Status().LastError, ErrCertificateRejected) {
		t.Errorf("last error %v: want ErrCertificateRejected", a.Status().LastError)
	}
	if !a.log.contains("refusing coordinator: certificate rejected", "lacks the coordinator role") {
		t.Errorf("refusal not logged with its reason:\n%s", a.log.String())
	}
	if n := fake.frames.Load(); n != 0 {
		t.Fatalf("node sent %d frames to a coordinator without the role", n)
	}
}

// TestCoordinatorNamesPinned: with join.coordinator_names a node accepts
// only the named coordinators, even with the role.
func TestCoordinatorNamesPinned(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t)
	pin := func(names ...string) clientTweak {
		return func(o *ClientOptions) { o.CoordinatorNames = names }
	}
	refused := m.startClient(t, m.creds(t, "node-a", 1), []string{c.addr()}, pin("coord-2"))
	ok := m.startClient(t, m.creds(t, "node-b", 2), []string{c.addr()}, pin("coord-2", "coord-1"))
	testutil.WaitFor(t, 5*time.Second, "pinned coordinator accepted", func() bool { return ok.Status().Connected })
	testutil.WaitFor(t, 5*time.Second, "unpinned coordinator refused", func() bool {
		return errors.Is(refused.Status().LastError, ErrCoordinatorNotPinned)
	})
	if refused.Status().Connected || coordHas(c.Coordinator, "node-a", nil) {
		t.Fatal("node registered with a coordinator it does not pin")
	}
}

// TestCoordinatorNeedsRole: a coordinator whose certificate lacks the role
// does not start (nodes would refuse it anyway); the error says why.
func TestCoordinatorNeedsRole(t *testing.T) {
	m := newTestMesh(t)
	_, err := NewCoordinator(CoordinatorOptions{
		Credentials: m.creds(t, "coord-1", 200),
		Verifier:    m.verifier(nil),
		ListenAddr:  "127.0.0.1:0",
		GossipAddr:  "127.0.0.1:0",
		GossipKey:   m.key,
	})
	if !errors.Is(err, pki.ErrNotCoordinator) {
		t.Fatalf("NewCoordinator with a member certificate: %v, want ErrNotCoordinator", err)
	}
}

// startRogueCoord starts a coordinator that proves itself in gossip with a
// member certificate (no coordinator role): a node that got hold of the
// gossip key. Its session listener keeps a coordinator certificate so that
// raw test sessions can register with it.
func (m *testMesh) startRogueCoord(t *testing.T, name string, join []string) *testCoord {
	t.Helper()
	lb := &logBuf{}
	opts := CoordinatorOptions{
		Credentials:     m.coordCreds(t, name, 250),
		Verifier:        m.verifier(nil),
		Logger:          lb.logger(),
		ListenAddr:      "127.0.0.1:0",
		GossipTransport: newFaultTransport(t),
		GossipKey:       m.key,
		Join:            join,
		Timers:          fastTimers,
		SweepInterval:   50 * time.Millisecond,
		RejoinInterval:  200 * time.Millisecond,
		SignalTimeout:   2 * time.Second,
	}
	c, err := NewCoordinator(opts)
	if err != nil {
		t.Fatal(err)
	}
	member := m.creds(t, name, 251)
	c.opts.Credentials = member
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &testCoord{Coordinator: c, creds: member, log: lb}
}

// TestGossipRefusesCoordinatorWithoutRole: a gossip member whose certificate
// lacks the coordinator role is refused as a coordinator: the legitimate
// coordinator logs why, forwards it no signal (a node's signal to a node
// registered there fails as offline instead of being handed to it), while a
// proven coordinator gets signals.
func TestGossipRefusesCoordinatorWithoutRole(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c1 := m.startCoord(t, "coord-1", 200, nil)
	rogue := m.startRogueCoord(t, "coord-x", []string{c1.GossipAddr()})
	testutil.WaitFor(t, 10*time.Second, "rogue joined the gossip cluster", func() bool { return len(c1.Members()) == 2 })

	a := m.startClient(t, m.creds(t, "node-a", 1), []string{c1.addr()})
	b := m.creds(t, "node-b", 2)
	recB, err := newLocalRecord(b, LocalInfo{}, uint64(time.Now().UnixNano()), false)
	if err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	t.Cleanup(readers.Wait)
	if err := registerRaw(t, rogue, b, recB, &readers); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "node-b's record reaches coord-1 and node-a", func() bool {
		p, ok := a.Peer("node-b")
		return ok && p.Presence.Online && p.Presence.Coordinator == "coord-x"
	})
	testutil.WaitFor(t, 10*time.Second, "the rogue's hello refused and logged", func() bool {
		return c1.log.contains("refusing gossip from coordinator: not a proven coordinator", "member=coord-x", "lacks the coordinator role")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.SendSignal(ctx, "node-b", []byte("hi")); !errors.Is(err, ErrPeerOffline) {
		t.Fatalf("signal to a node behind a coordinator without the role: %v, want ErrPeerOffline", err)
	}
	if c1.Stats().SignalsForwarded != 0 {
		t.Fatal("coord-1 forwarded a signal to a member without the coordinator role")
	}
	// The rogue, for its part, accepted coord-1's proof.
	if !rogue.log.contains("coordinator authenticated", "member=coord-1") {
		t.Error("coord-1's hello was not accepted by the other member")
	}
}
