package overlay_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/overlay/overlaytest"
)

// waitTimeout bounds every wait in these tests; the conditions normally hold
// within milliseconds.
const waitTimeout = 10 * time.Second

var (
	addrA = netip.MustParseAddr("100.64.0.1")
	addrB = netip.MustParseAddr("100.64.0.2")
	addrC = netip.MustParseAddr("100.64.0.3")
	addrX = netip.MustParseAddr("100.64.0.99") // nobody

	addrA6 = netip.MustParseAddr("fd7a:115c:a1e0::1")
	addrB6 = netip.MustParseAddr("fd7a:115c:a1e0::2")
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// meshAddr is an address with the mesh prefix length, as in a certificate.
func meshAddr(a netip.Addr) netip.Prefix {
	if a.Is4() {
		return netip.PrefixFrom(a, 10)
	}
	return netip.PrefixFrom(a, 48)
}

// tnode is one overlay over a TUN double.
type tnode struct {
	ifc *overlay.Interface
	tun *overlaytest.TUN
}

// newTNode builds and starts an overlay over a TUN double; mod adjusts the
// options, before runs between New and Start.
func newTNode(t *testing.T, tunOpts overlaytest.TUNOptions, mod func(*overlay.Options), before ...func(*overlay.Interface)) *tnode {
	t.Helper()
	tn := overlaytest.NewTUN(tunOpts)
	opts := overlay.Options{Device: tn, Logger: testLogger(t)}
	if mod != nil {
		mod(&opts)
	}
	ifc, err := overlay.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		if err := ifc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	for _, f := range before {
		f(ifc)
	}
	if err := ifc.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return &tnode{ifc: ifc, tun: tn}
}

func reconfig(t *testing.T, ifc *overlay.Interface, cfg overlay.Config) {
	t.Helper()
	if err := ifc.Reconfig(cfg); err != nil {
		t.Fatalf("Reconfig: %v", err)
	}
}

// pipe returns a connected PeerConn pair closed at cleanup.
func pipe(t *testing.T, async bool) (*overlaytest.Conn, *overlaytest.Conn) {
	a, b := overlaytest.Pipe(overlaytest.PipeOptions{Async: async})
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// recvPacket returns the next packet the overlay wrote into tn.
func recvPacket(t *testing.T, tn *overlaytest.TUN) []byte {
	t.Helper()
	select {
	case p := <-tn.Written():
		return p
	case <-time.After(waitTimeout):
		t.Fatal("no packet written to the TUN")
		return nil
	}
}

// noPacket asserts that nothing is waiting in tn's written queue. Call it
// only after a counter proved the pipeline finished with the batch: the
// direct pipe delivers synchronously, before the sender counts.
func noPacket(t *testing.T, tn *overlaytest.TUN) {
	t.Helper()
	select {
	case p := <-tn.Written():
		t.Fatalf("unexpected packet written to the TUN: % x", p[:min(len(p), 40)])
	default:
	}
}

func inject(t *testing.T, tn *overlaytest.TUN, pkts ...[]byte) {
	t.Helper()
	if err := tn.Inject(pkts...); err != nil {
		t.Fatalf("inject: %v", err)
	}
}

// waitStats waits until cond holds for ifc's counters.
func waitStats(t *testing.T, ifc *overlay.Interface, msg string, cond func(overlay.Stats) bool) overlay.Stats {
	t.Helper()
	var s overlay.Stats
	testutil.WaitFor(t, waitTimeout, msg, func() bool {
		s = ifc.Stats()
		return cond(s)
	})
	return s
}
