package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/pki"
)

var _ overlay.PeerConn = (*Link)(nil)

func TestHeaderRoomMatchesOverlay(t *testing.T) {
	if HeaderRoom != overlay.HeaderRoom {
		t.Fatalf("tunnel.HeaderRoom = %d, overlay.HeaderRoom = %d", HeaderRoom, overlay.HeaderRoom)
	}
}

// TestLoopbackLink: two managers on loopback connect directly over host
// candidates and carry packets both ways.
func TestLoopbackLink(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)

	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	down := overlay.ErrLinkDown
	ma := startManager(t, sig, a, func(o *Options) { o.LinkDownError = down })
	mb := startManager(t, sig, b, func(o *Options) { o.LinkDownError = down })

	var mu sync.Mutex
	var events []Event
	unsub := ma.Subscribe(func(ev Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	})
	defer unsub()

	ab := mustLink(t, ma, b.peer)
	// Before the peer has a link, writes fail with the overlay's sentinel.
	if n, err := ab.WriteBatch([][]byte{packet("early")}, HeaderRoom); n != 0 || !errors.Is(err, overlay.ErrLinkDown) || !errors.Is(err, ErrLinkDown) {
		t.Fatalf("WriteBatch before connect = %d, %v; want 0 and a link-down error", n, err)
	}
	ba := mustLink(t, mb, a.peer)
	if ab.Status().Controlling == ba.Status().Controlling {
		t.Fatalf("both sides have Controlling=%v", ab.Status().Controlling)
	}

	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)

	testutil.WaitFor(t, 20*time.Second, "both links connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	exchange(t, ab, &atB, "a-to-b", 5*time.Second)
	exchange(t, ba, &atA, "b-to-a", 5*time.Second)

	// A batch arrives complete and in order.
	batch := make([][]byte, 50)
	for i := range batch {
		batch[i] = packet(fmt.Sprintf("batch-%02d", i))
	}
	if n, err := ab.WriteBatch(batch, HeaderRoom); n != len(batch) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	testutil.WaitFor(t, 5*time.Second, "batch delivered", func() bool {
		for i := range batch {
			if !atB.has([]byte(fmt.Sprintf("batch-%02d", i))) {
				return false
			}
		}
		return true
	})
	atB.mu.Lock()
	var order []string
	for _, p := range atB.packets {
		if len(p) == 8 && string(p[:6]) == "batch-" {
			order = append(order, string(p))
		}
	}
	atB.mu.Unlock()
	for i, p := range order {
		if want := fmt.Sprintf("batch-%02d", i); p != want {
			t.Fatalf("packet %d is %q, want %q (order lost)", i, p, want)
		}
	}

	if n, err := ab.WriteBatch([][]byte{packet("x")}, HeaderRoom-1); n != 0 || !errors.Is(err, ErrBadOffset) {
		t.Fatalf("WriteBatch with a short offset = %d, %v; want ErrBadOffset", n, err)
	}

	for _, l := range []*Link{ab, ba} {
		st := l.Status()
		if st.State != StateConnected || st.Path != PathDirect || st.Local.Type != "host" || st.Remote.Type != "host" {
			t.Errorf("%s: status %v path %v local %v remote %v; want connected direct host/host", st.Peer, st.State, st.Path, st.Local, st.Remote)
		}
		if st.PacketsSent == 0 || st.PacketsReceived == 0 || st.BytesSent == 0 || st.BytesReceived == 0 {
			t.Errorf("%s: counters not moving: %+v", st.Peer, st)
		}
		if st.HandshakeDuration <= 0 || st.LastHandshake.IsZero() || st.Generation == 0 {
			t.Errorf("%s: handshake fields not set: %v %v gen %d", st.Peer, st.HandshakeDuration, st.LastHandshake, st.Generation)
		}
		if st.CipherSuite != "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" {
			t.Errorf("%s: cipher suite %q", st.Peer, st.CipherSuite)
		}
		if want := map[string]string{"bravo": b.peer.Fingerprint, "alpha": a.peer.Fingerprint}[st.Peer]; st.PeerFingerprint != want {
			t.Errorf("%s: peer fingerprint %q, want %q", st.Peer, st.PeerFingerprint, want)
		}
		if len(st.Pairs) == 0 {
			t.Errorf("%s: no candidate pairs in status", st.Peer)
		}
		sel := 0
		for _, p := range st.Pairs {
			if p.Selected {
				sel++
			}
		}
		if sel != 1 {
			t.Errorf("%s: %d selected pairs, want 1: %+v", st.Peer, sel, st.Pairs)
		}
	}

	// Events arrived in order, through Handshaking to Connected.
	mu.Lock()
	var seq []State
	for _, ev := range events {
		if ev.Kind == EventState && ev.Peer == "bravo" {
			seq = append(seq, ev.State)
		}
	}
	mu.Unlock()
	want := []State{StateChecking, StateHandshaking, StateConnected}
	if len(seq) < len(want) {
		t.Fatalf("events %v, want a prefix %v", seq, want)
	}
	for i := range want {
		if seq[i] != want[i] {
			t.Fatalf("events %v, want a prefix %v", seq, want)
		}
	}

	// Removing one side: the other notices and stops carrying traffic.
	mb.Remove("alpha")
	select {
	case <-ba.Done():
	default:
		t.Fatal("Remove returned before the link was done")
	}
	testutil.WaitFor(t, 10*time.Second, "alpha notices bravo's link is gone", func() bool {
		return ab.State() != StateConnected
	})
	if _, err := ab.WriteBatch([][]byte{packet("late")}, HeaderRoom); !errors.Is(err, overlay.ErrLinkDown) {
		t.Fatalf("WriteBatch after the peer left: %v, want link down", err)
	}
}

// TestEd25519Keys: nodes with Ed25519 keys (pki.KeyEd25519) link up with
// the same ECDHE AEAD suites; one side may use ECDSA.
func TestEd25519Keys(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	ed, err := pki.GenerateKey(pki.KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	a := ca.nodeWithKey(t, "alpha", 1, ed, time.Hour, nil)
	b := ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	ma := startManager(t, sig, a, nil)
	mb := startManager(t, sig, b, nil)
	ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	exchange(t, ab, &atB, "ed-a", 5*time.Second)
	exchange(t, ba, &atA, "ed-b", 5*time.Second)
}

// TestLoopbackIPv6: the shared socket on an IPv6 address yields IPv6 host
// candidates and a working link.
func TestLoopbackIPv6(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	probe, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	_ = probe.Close()
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	v6 := func(o *Options) { o.ListenAddr = netip.IPv6Loopback() }
	ma := startManager(t, sig, a, v6)
	mb := startManager(t, sig, b, v6)
	ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	var atB collector
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	exchange(t, ab, &atB, "v6", 5*time.Second)
	if st := ab.Status(); !st.Local.Addr.Addr().Is6() || !st.Remote.Addr.Addr().Is6() {
		t.Fatalf("path %v -> %v is not IPv6", st.Local, st.Remote)
	}
}
