package tunnel

import (
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestOfflinePeerBacksOff: while the peer cannot be signaled the link fails
// with ErrSignaling, backs off (logging the reason once), and connects as
// soon as the peer is reachable.
func TestOfflinePeerBacksOff(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	sink := &logSink{}
	ma := startManager(t, sig, a, func(o *Options) { o.Logger = slog.New(sink) })
	mb := startManager(t, sig, b, nil)
	sig.setOffline("bravo", true)
	var mu sync.Mutex
	var gaps []time.Duration // from entering Failed to the next attempt
	var failedAt time.Time
	unsub := ma.Subscribe(func(ev Event) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ev.State == StateFailed:
			failedAt = ev.Time
		case ev.State == StateChecking && !failedAt.IsZero():
			gaps = append(gaps, ev.Time.Sub(failedAt))
		}
	})
	defer unsub()
	ab := mustLink(t, ma, b.peer)
	ba := mustLink(t, mb, a.peer)

	testutil.WaitFor(t, 20*time.Second, "five failed attempts", func() bool { return ab.Status().Failures >= 5 })
	mu.Lock()
	if len(gaps) < 4 {
		t.Fatalf("gaps %v", gaps)
	}
	// RetryMin 100ms doubling to RetryMax 1s, ±20%: about 100, 200, 400, 800ms.
	if gaps[3] < 500*time.Millisecond || gaps[3] <= gaps[0] {
		t.Errorf("backoff does not grow: %v", gaps)
	}
	t.Logf("backoff gaps: %v", gaps)
	mu.Unlock()
	st := ab.Status()
	if !errors.Is(st.LastError, ErrSignaling) || !errors.Is(st.LastError, errOffline) {
		t.Fatalf("last error %v, want ErrSignaling wrapping the signaler's error", st.LastError)
	}
	if st.State == StateConnected {
		t.Fatal("connected while the peer is offline")
	}
	if n := sink.count(slog.LevelInfo, "link attempt failed; retrying with backoff", "error", ErrSignaling.Error()); n != 1 {
		t.Errorf("signaling failure logged %d times over %d failures, want once", n, st.Failures)
	}
	// Backoff grows: the attempts are not back to back.
	if st.Attempts > st.Failures+1 {
		t.Errorf("attempts %d > failures %d + 1", st.Attempts, st.Failures)
	}

	sig.setOffline("bravo", false)
	testutil.WaitFor(t, 20*time.Second, "connected once the peer is reachable", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	var atB collector
	ba.SetReceiver(atB.receive)
	exchange(t, ab, &atB, "hello", 5*time.Second)
}

// TestPeerRestartReconnects: the peer's manager goes away and comes back
// (a daemon restart); the link reconnects with a new session.
func TestPeerRestartReconnects(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	for _, restart := range []string{"alpha", "bravo"} {
		t.Run("restart "+restart, func(t *testing.T) {
			sig := newMemSignals()
			ma := startManager(t, sig, a, nil)
			mb := startManager(t, sig, b, nil)
			ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
			testutil.WaitFor(t, 20*time.Second, "connected", func() bool {
				return ab.State() == StateConnected && ba.State() == StateConnected
			})
			stay, stayLink := mb, ba
			node, peer := a, b.peer
			if restart == "bravo" {
				stay, stayLink = ma, ab
				node, peer = b, a.peer
			}
			gen := stayLink.Status().Generation
			old := mb
			if restart == "alpha" {
				old = ma
			}
			_ = old.Close()
			fresh := startManager(t, sig, node, nil)
			fl := mustLink(t, fresh, peer)
			testutil.WaitFor(t, 30*time.Second, "reconnected", func() bool {
				return fl.State() == StateConnected && stayLink.State() == StateConnected && stayLink.Status().Generation != gen
			})
			var got collector
			fl.SetReceiver(got.receive)
			exchange(t, stayLink, &got, "again", 5*time.Second)
			_ = stay
		})
	}
}

// TestPeerUpdateRestartsSession: a new certificate in the registry makes
// the link verify against it in a new session.
func TestPeerUpdateRestartsSession(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	ma := startManager(t, sig, a, nil)
	mb := startManager(t, sig, b, nil)
	ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	testutil.WaitFor(t, 20*time.Second, "connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	gen := ab.Status().Generation

	// Same peer: nothing happens.
	if l, err := ma.Link(b.peer); err != nil || l != ab {
		t.Fatalf("Link(same peer) = %p, %v; want the existing link", l, err)
	}
	// bravo now routes a subnet its certificate allows: new expectation,
	// new session, still connected.
	p := b.peer
	p.Subnets = b.creds.Cert.Identity.Subnets
	if _, err := ma.Link(p); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "reconnected with the new expectation", func() bool {
		st := ab.Status()
		return st.State == StateConnected && st.Generation != gen && len(ab.Peer().Subnets) == 1
	})
}

func TestManagerLifecycle(t *testing.T) {
	testutil.LeakCheck(t)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	m, err := NewManager(Options{Credentials: a.creds, Verifier: nil, Signaler: sig.from("alpha")})
	if !errors.Is(err, ErrInvalidOptions) || m != nil {
		t.Fatalf("NewManager without a verifier = %v, %v", m, err)
	}
	ma := startManager(t, sig, a, nil)
	for _, p := range []Peer{
		{},
		{Name: "Bad Name", Addr: b.peer.Addr, Fingerprint: b.peer.Fingerprint},
		{Name: "bravo", Fingerprint: b.peer.Fingerprint},
		{Name: "bravo", Addr: b.peer.Addr, Fingerprint: "ABC"},
		a.peer, // ourselves
	} {
		if _, err := ma.Link(p); !errors.Is(err, ErrInvalidPeer) {
			t.Errorf("Link(%+v) = %v, want ErrInvalidPeer", p, err)
		}
	}
	if err := ma.HandleSignal("bravo", []byte{1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 1}); !errors.Is(err, ErrUnknownPeer) {
		t.Errorf("signal from an unknown peer: %v", err)
	}
	if err := ma.HandleSignal("bravo", []byte{9}); !errors.Is(err, ErrBadSignal) {
		t.Errorf("garbage signal: %v", err)
	}
	if s := ma.Stats(); s.SignalsUnknownPeer != 1 || s.SignalsInvalid != 1 {
		t.Errorf("stats %+v", s)
	}
	l := mustLink(t, ma, b.peer)
	if got := ma.Links(); len(got) != 1 || got[0] != l {
		t.Fatalf("Links() = %v", got)
	}
	ma.Remove("bravo")
	ma.Remove("bravo") // unknown now: no-op
	if len(ma.Links()) != 0 {
		t.Fatal("link still listed after Remove")
	}
	if err := ma.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ma.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := ma.Link(b.peer); !errors.Is(err, ErrClosed) {
		t.Fatalf("Link after Close = %v", err)
	}
	if err := ma.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}

	// A manager closed without being started has nothing to release.
	m2, err := NewManager(Options{Credentials: a.creds, Verifier: ma.opts.Verifier, Signaler: sig.from("alpha")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Link(b.peer); err != nil {
		t.Fatal(err)
	}
	if err := m2.HandleSignal("bravo", []byte{1, 4, 0, 0, 0, 0, 0, 0, 0, 1}); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("HandleSignal before Start = %v", err)
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
}
