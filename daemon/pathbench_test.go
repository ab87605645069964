package daemon

import (
	"context"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/overlay/overlaytest"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel"
	"github.com/meshd/meshd/tunnel/tunneltest"
)

// Shape of BenchmarkWholePath's traffic.
const (
	// wholePathSize is the IP packet size (UDP, so 1372 bytes of payload).
	wholePathSize = 1400
	// wholePathBatch is what the TUN double's BatchSize reports, so it is
	// the overlay's read batch: the kernel TUN's with offloads
	// (wireguard/conn.IdealBatchSize).
	wholePathBatch = 128
	// wholePathWindow bounds the packets in flight (injected into A's TUN,
	// not yet written to B's), as a congestion-controlled flow would: the
	// benchmark measures the sustainable rate, not receive-buffer overflow.
	wholePathWindow = 16 * wholePathBatch
	// wholePathStall is how long no packet may arrive while the window is
	// full before the packets in flight are counted as lost and the window
	// reopens (a lost datagram would otherwise block the sender forever).
	wholePathStall = 250 * time.Millisecond
	wholePathPort  = 5201
)

// BenchmarkWholePath measures the whole data path between two nodes in one
// process: TUN double (A) → overlay A (parse, route, outbound firewall) →
// tunnel.Link (seal in place, batched UDP socket on 127.0.0.1) → tunnel.Link
// of B (batched read, open) → overlay B (anti-spoofing, inbound firewall
// with conntrack) → TUN double (B), which counts. The links are real: two
// tunnel.Managers connected over loopback by ICE and keyed by a DTLS
// handshake, signalling through tunneltest.Router.
//
// One op is one packet injected into A's TUN; allocs/op is allocations per
// packet in steady state (the flow is established and the pools grown during
// warm-up), both ends counted since both run in this process. It reports
// the delivered rate (packets/s, Mbit/s of IP packets) and loss%.
//
// CPU profile (both nodes share the 2 cores, as the goroutines of the two
// ends compete like two processes would):
//
//	go test -run '^$' -bench BenchmarkWholePath -benchtime 3s -cpuprofile cpu.out ./daemon/
//	go tool pprof -top -nodecount 15 cpu.out
//
// Allocation sources: -memprofile mem.out -memprofilerate 1, then
// go tool pprof -sample_index=alloc_objects -top mem.out.
func BenchmarkWholePath(b *testing.B) {
	testutil.LeakCheck(b)
	// progress wakes the sender when B's TUN got packets; capacity 1 and a
	// non-blocking send, so the writer never waits on the benchmark.
	var delivered atomic.Uint64
	progress := make(chan struct{}, 1)
	ta := overlaytest.NewTUN(overlaytest.TUNOptions{Name: "alpha0", BatchSize: wholePathBatch})
	tb := overlaytest.NewTUN(overlaytest.TUNOptions{Name: "bravo0", BatchSize: wholePathBatch, OnWrite: func(bufs [][]byte, _ int) {
		delivered.Add(uint64(len(bufs)))
		select {
		case progress <- struct{}{}:
		default:
		}
	}})
	pp := startPathPair(b, ta, tb)
	oa, ob := pp.oa, pp.ob
	pkts := make([][]byte, wholePathBatch)
	for i := range pkts {
		pkts[i] = pp.packet(false, wholePathSize)
	}
	// B may get its data keys a moment after A (the first records are then
	// dropped): send single packets until one comes through.
	testutil.WaitFor(b, 10*time.Second, "first packet through both overlays", func() bool {
		if delivered.Load() > 0 {
			return true
		}
		if err := ta.Inject(pkts[0]); err != nil {
			b.Fatal(err)
		}
		return false
	})

	stall := time.NewTimer(wholePathStall)
	defer stall.Stop()
	// pump injects n packets, keeping at most wholePathWindow in flight, and
	// returns once all arrived or none arrived for wholePathStall; it returns
	// how many of them B's TUN received.
	pump := func(n int) uint64 {
		base := delivered.Load()
		var sent, lost uint64
		inFlight := func() uint64 {
			done := delivered.Load() - base + lost
			if done >= sent {
				return 0
			}
			return sent - done
		}
		// wait blocks until a delivery or until wholePathStall without
		// one, in which case it counts the packets in flight as lost.
		wait := func() {
			stall.Reset(wholePathStall)
			select {
			case <-progress:
			case <-stall.C:
				lost += inFlight()
			}
		}
		for sent < uint64(n) {
			k := min(wholePathBatch, n-int(sent))
			for inFlight()+uint64(k) > wholePathWindow {
				wait()
			}
			if err := ta.Inject(pkts[:k]...); err != nil {
				b.Fatal(err)
			}
			sent += uint64(k)
		}
		for inFlight() > 0 {
			wait()
		}
		return min(delivered.Load()-base, sent)
	}

	// Warm-up: conntrack entry, socket and pool buffers; it also absorbs
	// the first-packet probes still in flight.
	pump(4 * wholePathWindow)
	beforeA, beforeB := oa.Stats(), ob.Stats()
	// allocs/op is an integer (rounded down), which hides a per-batch
	// allocation (1/128 per packet); mallocs/pkt is the exact ratio,
	// background goroutines (ICE keepalives, timers) included.
	var msBefore, msAfter runtime.MemStats
	runtime.ReadMemStats(&msBefore)
	b.ReportAllocs()
	b.ResetTimer()
	got := pump(b.N)
	b.StopTimer()
	runtime.ReadMemStats(&msAfter)

	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(got)/secs, "packets/s")
	b.ReportMetric(float64(got)*wholePathSize*8/secs/1e6, "Mbit/s")
	b.ReportMetric(100*(1-float64(got)/float64(b.N)), "loss%")
	b.ReportMetric(float64(msAfter.Mallocs-msBefore.Mallocs)/float64(b.N), "mallocs/pkt")
	// Overlay drops mean a misconfigured path (route, firewall, spoofing),
	// not load: the figures would be meaningless.
	if afterA, afterB := oa.Stats(), ob.Stats(); afterA.Drops != beforeA.Drops || afterB.Drops != beforeB.Drops {
		b.Fatalf("overlay dropped packets: A %+v → %+v, B %+v → %+v", beforeA.Drops, afterA.Drops, beforeB.Drops, afterB.Drops)
	}
}

// pathPair is two nodes in one process, alpha and bravo, joined by real
// links over 127.0.0.1, each with an overlay on a TUN double; alpha may
// send UDP to bravo's wholePathPort (and conntrack lets the replies back).
type pathPair struct {
	na, nb *testNode
	la, lb *tunnel.Link
	oa, ob *overlay.Interface
	ma, mb *tunnel.Manager
}

// startPathPair starts the pair on ta (alpha) and tb (bravo) and returns
// once both links are connected; everything is closed at cleanup.
func startPathPair(b *testing.B, ta, tb *overlaytest.TUN) *pathPair {
	b.Helper()
	mesh := newTestMesh(b)
	spec := nodeSpec{groups: []string{"bench"}}
	pp := &pathPair{na: mesh.node(b, "alpha", 1, spec), nb: mesh.node(b, "bravo", 2, spec)}
	router := tunneltest.NewRouter()
	pp.ma = startPathManager(b, router, mesh, pp.na)
	pp.mb = startPathManager(b, router, mesh, pp.nb)
	var err error
	if pp.la, err = pp.ma.Link(pathPeer(pp.nb)); err != nil {
		b.Fatal(err)
	}
	if pp.lb, err = pp.mb.Link(pathPeer(pp.na)); err != nil {
		b.Fatal(err)
	}
	rule := []overlay.Rule{{Groups: []string{"bench"}, Proto: overlay.ProtoUDP, Ports: []overlay.PortRange{{First: wholePathPort, Last: wholePathPort}}}}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	pp.oa = startPathOverlay(ctx, b, ta, pp.na, pp.nb, pp.la, overlay.FirewallConfig{Outbound: rule})
	pp.ob = startPathOverlay(ctx, b, tb, pp.nb, pp.na, pp.lb, overlay.FirewallConfig{Inbound: rule})
	testutil.WaitFor(b, 20*time.Second, "links connected", func() bool {
		return pp.la.State() == tunnel.StateConnected && pp.lb.State() == tunnel.StateConnected
	})
	return pp
}

// packet returns an IP packet of size bytes: UDP alpha:40000 →
// bravo:wholePathPort, or the reverse if reply.
func (pp *pathPair) packet(reply bool, size int) []byte {
	p := overlaytest.Packet{Src: pp.na.cert.Identity.Addr.Addr(), Dst: pp.nb.cert.Identity.Addr.Addr(), Proto: overlaytest.ProtoUDP,
		SrcPort: 40000, DstPort: wholePathPort, Payload: make([]byte, size-28)}
	if reply {
		p.Src, p.Dst, p.SrcPort, p.DstPort = p.Dst, p.Src, p.DstPort, p.SrcPort
	}
	return p.Marshal()
}

// startPathManager starts a tunnel.Manager for n on 127.0.0.1, registered
// with router; it is closed at cleanup.
func startPathManager(b *testing.B, router *tunneltest.Router, mesh *testMesh, n *testNode) *tunnel.Manager {
	b.Helper()
	creds, err := pki.LoadCredentials(mesh.caPath, n.certPath, n.keyPath)
	if err != nil {
		b.Fatal(err)
	}
	m, err := tunnel.NewManager(tunnel.Options{
		Credentials:   creds,
		Verifier:      pki.NewVerifier(creds.CA, creds.Cert),
		Signaler:      router.Signaler(n.name),
		ListenAddr:    netip.MustParseAddr("127.0.0.1"),
		LinkDownError: overlay.ErrLinkDown,
		Timers:        *testTuning().TunnelTimers,
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	router.Register(n.name, m.HandleSignal)
	b.Cleanup(func() { _ = m.Close() })
	return m
}

// pathPeer is n as its peers' tunnel.Manager sees it.
func pathPeer(n *testNode) tunnel.Peer {
	return tunnel.Peer{Name: n.name, Addr: n.cert.Identity.Addr.Addr(), Fingerprint: n.cert.Fingerprint}
}

// startPathOverlay starts an overlay on dev for self with one peer reached
// through link; it is closed at cleanup (before the managers, which were
// registered earlier).
func startPathOverlay(ctx context.Context, b *testing.B, dev *overlaytest.TUN, self, peer *testNode, link *tunnel.Link, fw overlay.FirewallConfig) *overlay.Interface {
	b.Helper()
	o, err := overlay.New(overlay.Options{Device: dev})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = o.Close() })
	peerAddr := peer.cert.Identity.Addr.Addr()
	if err := o.Reconfig(overlay.Config{
		Addresses: []netip.Prefix{self.cert.Identity.Addr},
		Peers: []overlay.PeerConfig{{
			Name:            peer.name,
			Groups:          peer.cert.Identity.Groups,
			AllowedPrefixes: []netip.Prefix{netip.PrefixFrom(peerAddr, peerAddr.BitLen())},
			Conn:            link,
		}},
		Firewall: fw,
	}); err != nil {
		b.Fatal(err)
	}
	if err := o.Start(ctx); err != nil {
		b.Fatal(err)
	}
	return o
}
