package tunnel

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshd/meshd/internal/testutil"
)

// relayedPair connects alpha and bravo through the loopback TURN server
// over UDP only (relay candidates only) and waits until both links send
// through their relay socket's fast path.
func relayedPair(t testing.TB, extra ...func(*Options)) (ab, ba *Link, atA, atB *batchCollector) {
	t.Helper()
	srv := startLoopbackTURN(t)
	return relayedPairVia(t, srv, "turn:"+srv.udpAddr+"?transport=udp", fastRelayReady, extra...)
}

// relayedPairVia connects alpha and bravo through srv at url (relay
// candidates only) and waits until ready holds for both links.
func relayedPairVia(t testing.TB, srv *loopbackTURN, url string, ready func(*Link) bool, extra ...func(*Options)) (ab, ba *Link, atA, atB *batchCollector) {
	t.Helper()
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	servers := []ICEServer{{URL: url, Username: "user", Password: "pass"}}
	sig := newMemSignals()
	tweak := func(o *Options) {
		o.Logger = nil
		o.ForceRelay = true
		o.Servers = func() []ICEServer { return servers }
		o.TURNTLSConfig = &tls.Config{RootCAs: srv.roots}
		for _, f := range extra {
			f(o)
		}
	}
	ma := startManager(t, sig, a, tweak)
	mb := startManager(t, sig, b, tweak)
	ab, ba = mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	atA, atB = &batchCollector{}, &batchCollector{}
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "links connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	// pion binds a channel on its first write to the peer and sends
	// ChannelData once the server accepts; ICE consent checks keep writing.
	testutil.WaitFor(t, 20*time.Second, "fast relay path ready on both ends", func() bool {
		return ready(ab) && ready(ba)
	})
	return ab, ba, atA, atB
}

// fastRelayReady reports whether l's records leave as ChannelData on its
// relay socket.
func fastRelayReady(l *Link) bool {
	rt := l.route.Load()
	if rt == nil {
		return false
	}
	f, ok := rt.relay.(*relayFast)
	if !ok || f.fc.Load() == nil {
		return false
	}
	t := f.table()
	c := t.peer(rt.remote.Addr)
	return c != nil && c.ready && t.link(rt.remote.Addr) == l
}

// batchCollector keeps received packets and the largest delivery.
type batchCollector struct {
	mu       sync.Mutex
	packets  map[string]bool
	maxBatch int
}

func (c *batchCollector) receive(bufs [][]byte, offset int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.packets == nil {
		c.packets = make(map[string]bool)
	}
	for _, b := range bufs {
		c.packets[string(b[offset:])] = true
	}
	c.maxBatch = max(c.maxBatch, len(bufs))
}

func (c *batchCollector) has(p string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.packets[p]
}

func (c *batchCollector) largest() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxBatch
}

// TestRelayFastPath: on a link relayed through a UDP TURN server, records
// leave as ChannelData built in place on the relay socket (no allocation
// per packet, which pion's TURN client makes several of) and arrive in
// batches (pion's path hands over one datagram at a time, so the overlay
// could never write more than one packet per TUN call), intact both ways.
func TestRelayFastPath(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 90*time.Second)
	ab, ba, atA, atB := relayedPair(t)
	checkRelayFastPath(t, ab, ba, atA, atB, fastRelayReady)
}

// checkRelayFastPath checks a relayed pair both ways: a batch of packets
// delivered in one call, intact, WriteBatch without allocating, and the
// links still on their fast path (ready).
func checkRelayFastPath(t *testing.T, ab, ba *Link, atA, atB *batchCollector, ready func(*Link) bool) {
	for _, dir := range []struct {
		name     string
		from, to *Link
		into     *batchCollector
	}{{"a-to-b", ab, ba, atB}, {"b-to-a", ba, ab, atA}} {
		t.Run(dir.name, func(t *testing.T) {
			const batch = 32
			bufs := make([][]byte, batch)
			round := 0
			fill := func() {
				round++
				for i := range bufs {
					p := fmt.Sprintf("%s-%d-%d-%s", dir.name, round, i, bytes.Repeat([]byte{'x'}, 1200))
					bufs[i] = packet(p)
				}
			}
			fill()
			if n, err := dir.from.WriteBatch(bufs, HeaderRoom); n != batch || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			testutil.WaitFor(t, 10*time.Second, "a batch of more than one packet delivered", func() bool {
				if dir.into.largest() > 1 {
					return true
				}
				fill()
				_, _ = dir.from.WriteBatch(bufs, HeaderRoom)
				return false
			})
			// UDP may drop under load: send the batch again until its last
			// packet arrives.
			last := fmt.Sprintf("%s-%d-%d-%s", dir.name, round, batch-1, bytes.Repeat([]byte{'x'}, 1200))
			testutil.WaitFor(t, 10*time.Second, "the last packet delivered intact", func() bool {
				if dir.into.has(last) {
					return true
				}
				fill()
				_, _ = dir.from.WriteBatch(bufs, HeaderRoom)
				last = fmt.Sprintf("%s-%d-%d-%s", dir.name, round, batch-1, bytes.Repeat([]byte{'x'}, 1200))
				return false
			})

			// Count what arrives without allocating: AllocsPerRun counts
			// every goroutine's allocations.
			var arrived atomic.Uint64
			dir.to.SetReceiver(func(bufs [][]byte, _ int) { arrived.Add(uint64(len(bufs))) })
			pkts := make([][]byte, batch)
			for i := range pkts {
				pkts[i] = make([]byte, HeaderRoom+1200, HeaderRoom+1200+64)
			}
			// A few batches per trial, and between trials the receiver
			// catches up: a receiver slowed by load must not make the
			// sender wait on a full socket buffer inside the measurement.
			// AllocsPerRun counts every goroutine's allocations, so the
			// best of several trials is taken (testutil.MinAllocsPerRun);
			// an allocation in WriteBatch shows in every one.
			send := func() {
				if n, err := dir.from.WriteBatch(pkts, HeaderRoom); n != batch || err != nil {
					t.Fatalf("WriteBatch = %d, %v", n, err)
				}
			}
			allocs := -1.0
			for trial := 0; trial < 8 && allocs != 0; trial++ {
				sent := arrived.Load()
				a := testing.AllocsPerRun(8, send)
				if allocs < 0 || a < allocs {
					allocs = a
				}
				testutil.Eventually(2*time.Second, func() bool { return arrived.Load() >= sent+8*batch })
			}
			if allocs != 0 {
				t.Errorf("WriteBatch of %d relayed packets: %.1f allocations, want 0", batch, allocs)
			}
			testutil.WaitFor(t, 5*time.Second, "packets of the measured batches delivered", func() bool { return arrived.Load() > 0 })
			if !ready(dir.from) {
				t.Error("the link left the fast relay path")
			}
		})
	}
}

// TestRelayFastPathNoTailRoom: packets without tail room for the tag are
// copied to the spill arena, which keeps room for the ChannelData header.
func TestRelayFastPathNoTailRoom(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 90*time.Second)
	ab, _, _, atB := relayedPair(t)
	i := 0
	testutil.WaitFor(t, 10*time.Second, "a packet without tail room delivered", func() bool {
		i++
		p := fmt.Sprintf("tight-%d", i)
		b := packet(p)
		_, _ = ab.WriteBatch([][]byte{b[:len(b):len(b)]}, HeaderRoom)
		for j := 1; j <= i; j++ {
			if atB.has(fmt.Sprintf("tight-%d", j)) {
				return true
			}
		}
		return false
	})
}

// TestRelayFastPathRekeys: on the fast relayed path, packets keep flowing
// both ways through several rekeys without a loss (a record of the next
// epoch goes the slow way, through pion and the ICE reader, which installs
// the staged keys; the fast path then opens that epoch).
func TestRelayFastPathRekeys(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 90*time.Second)
	checkRelayRekeys(t, fastRelayReady, func(fast func(*Options)) (ab, ba *Link, atA, atB *batchCollector) {
		return relayedPair(t, fast)
	})
}

// checkRelayRekeys rekeys a relayed pair that pair makes (with the options
// fast) several times under traffic both ways and checks that nothing is
// lost and the links stay on their fast path (ready).
func checkRelayRekeys(t *testing.T, ready func(*Link) bool, pair func(fast func(*Options)) (ab, ba *Link, atA, atB *batchCollector)) {
	timers := testTimers()
	timers.RekeyInterval = 250 * time.Millisecond
	timers.RekeyOverlap = time.Second
	ab, ba, atA, atB := pair(func(o *Options) { o.Timers = timers })
	r0a, r0b := ab.Status().Rekeys, ba.Status().Rekeys
	tr := newTrafficBothWays(t, "rk", ab, ba, atA.has, atB.has)
	start := time.Now()
	for time.Since(start) < time.Second || ab.Status().Rekeys < r0a+3 || ba.Status().Rekeys < r0b+3 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("after 20 s: %d and %d rekeys, want 3 more", ab.Status().Rekeys-r0a, ba.Status().Rekeys-r0b)
		}
		tr.step(4, "rekeys")
	}
	if lost := tr.undelivered(); len(lost) > 0 {
		t.Fatalf("lost during rekeys: %v", lost)
	}
	if !ready(ab) || !ready(ba) {
		t.Error("a link left the fast relay path")
	}
}

// stunMessage builds a STUN message of type typ with attrs, as pion would.
func stunMessage(t testing.TB, typ stun.MessageType, attrs ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, typ}, attrs...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// channelNumber is a CHANNEL-NUMBER attribute.
type channelNumber uint16

func (c channelNumber) AddTo(m *stun.Message) error {
	v := make([]byte, 4)
	binary.BigEndian.PutUint16(v, uint16(c))
	m.Add(stun.AttrChannelNumber, v)
	return nil
}

func TestRelayObserve(t *testing.T) {
	peer := netip.MustParseAddrPort("198.51.100.7:40000")
	peer6 := netip.MustParseAddrPort("[2001:db8::7]:40001")
	relayed := netip.MustParseAddrPort("203.0.113.1:50000")
	server := netip.MustParseAddrPort("203.0.113.1:3478")
	xor := xorAttr
	bindReq := stun.NewType(stun.MethodChannelBind, stun.ClassRequest)
	allocOK := stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse)

	var f relayFast
	// An answer from anywhere but the server pion writes to teaches nothing.
	f.serverSeen.Store(&server)
	f.observeRead(stunMessage(t, allocOK, xor(stun.AttrXORRelayedAddress, netip.MustParseAddrPort("192.0.2.66:1")), stun.Fingerprint),
		netip.MustParseAddrPort("192.0.2.66:3478"))
	if tab := f.table(); tab.relayed.IsValid() {
		t.Fatalf("a stranger's Allocate answer was believed: relayed %v", tab.relayed)
	}
	f.observeRead(stunMessage(t, allocOK, xor(stun.AttrXORRelayedAddress, relayed), stun.Fingerprint), server)
	if tab := f.table(); tab.relayed != relayed || tab.server != server {
		t.Fatalf("after the Allocate answer: relayed %v server %v", tab.relayed, tab.server)
	}
	f.observeWrite(stunMessage(t, bindReq, channelNumber(0x4001), xor(stun.AttrXORPeerAddress, peer), stun.Fingerprint))
	f.observeWrite(stunMessage(t, bindReq, xor(stun.AttrXORPeerAddress, peer6), channelNumber(0x4002)))
	for _, tc := range []struct {
		num  uint16
		peer netip.AddrPort
	}{{0x4001, peer}, {0x4002, peer6}} {
		c := f.table().channel(tc.num)
		if c == nil || c.peer != tc.peer || c.ready {
			t.Fatalf("channel %#x: %+v, want peer %v, not ready", tc.num, c, tc.peer)
		}
	}
	f.observeWrite([]byte{0x40, 0x01, 0x00, 0x01, 0xff})
	if !f.table().channel(0x4001).ready || f.table().channel(0x4002).ready {
		t.Fatal("ChannelData on 0x4001 must ready that channel only")
	}
	// Refused: out-of-range channel, no peer, another method.
	for name, p := range map[string][]byte{
		"channel 0x3fff": stunMessage(t, bindReq, channelNumber(0x3fff), xor(stun.AttrXORPeerAddress, peer)),
		"no peer":        stunMessage(t, bindReq, channelNumber(0x4003)),
		"refresh":        stunMessage(t, stun.NewType(stun.MethodRefresh, stun.ClassRequest), channelNumber(0x4004), xor(stun.AttrXORPeerAddress, peer)),
		"truncated":      stunMessage(t, bindReq, channelNumber(0x4005), xor(stun.AttrXORPeerAddress, peer))[:30],
	} {
		f.observeWrite(p)
		if n := len(f.table().chans); n != 2 {
			t.Errorf("%s: %d channels, want 2", name, n)
		}
	}
}

// xorAttr is an XOR-address attribute of type typ holding ap.
func xorAttr(typ stun.AttrType, ap netip.AddrPort) stun.Setter {
	a := &stun.XORMappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
	return setterFunc(func(m *stun.Message) error { return a.AddToAs(m, typ) })
}

type setterFunc func(m *stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

// FuzzRelayObserve: whatever pion writes or the server answers, learning
// never panics, and keeps its bounds and channel range.
func FuzzRelayObserve(f *testing.F) {
	peer := &stun.XORMappedAddress{IP: []byte{198, 51, 100, 7}, Port: 4000}
	m, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
		channelNumber(0x4001), setterFunc(func(m *stun.Message) error { return peer.AddToAs(m, stun.AttrXORPeerAddress) }))
	f.Add(m.Raw)
	m2, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse),
		setterFunc(func(m *stun.Message) error { return peer.AddToAs(m, stun.AttrXORRelayedAddress) }))
	f.Add(m2.Raw)
	f.Add([]byte{0x40, 0x01, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, p []byte) {
		var rf relayFast
		srv := netip.MustParseAddrPort("203.0.113.1:3478")
		rf.serverSeen.Store(&srv)
		rf.observeRead(p, srv)
		for i := 0; i < maxRelayPeers+2; i++ {
			rf.observeWrite(p)
		}
		tab := rf.table()
		if len(tab.chans) > maxRelayPeers {
			t.Fatalf("%d channels", len(tab.chans))
		}
		for _, c := range tab.chans {
			if c.num < minChannel || c.num > maxChannel || !c.peer.IsValid() {
				t.Fatalf("bad channel %+v", c)
			}
		}
	})
}

// BenchmarkRelayChannelDataSend measures the client's relayed send path
// alone: 1400-byte records framed as ChannelData in place and sent in
// batches of 32 with sendmmsg/GSO from a relay socket to a UDP sink on
// loopback (standing in for the TURN server, which drops them). One op is
// one packet; allocs/op is the send path's (0).
func BenchmarkRelayChannelDataSend(b *testing.B) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	s := &relaySocket{UDPConn: uc, fast: relayFast{uc: uc}}
	defer s.Close()
	fc, err := newFastConn(uc, 0, false)
	if err != nil {
		b.Skip("no batched sockets here:", err)
	}
	s.fast.fc.Store(fc)
	peer := netip.MustParseAddrPort("198.51.100.7:40000")
	s.fast.tab.Store(&relayTable{
		server: sink.LocalAddr().(*net.UDPAddr).AddrPort(),
		chans:  []relayChan{{num: 0x4001, peer: peer, ready: true}},
	})
	const size, batch = 1400, 32
	recs := make([][]byte, batch)
	for i := range recs {
		recs[i] = make([]byte, chanHdrLen+size+29)
	}
	var tx fastTx
	b.ReportAllocs()
	b.SetBytes(size)
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += batch {
		n := min(batch, b.N-sent)
		if ok, err := s.fast.sendRecords(&tx, recs[:n], peer); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkRelayLink is BenchmarkLinkWindowed through a TURN server over
// UDP on loopback (pion's, in this process: its forwarding allocations
// count here too): 1400-byte packets in batches of 32 from alpha to bravo,
// at most 4096 in flight. One op is one packet.
func BenchmarkRelayLink(b *testing.B) {
	testutil.LeakCheck(b)
	ab, ba, _, _ := relayedPair(b)
	var got atomic.Uint64
	ba.SetReceiver(func(bufs [][]byte, _ int) { got.Add(uint64(len(bufs))) })
	measureLink(b, ab, &got, 4096)
}
