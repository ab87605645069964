package tunnel

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/tunnel/record"
)

// recordSeq returns a data record's epoch and sequence number.
func recordSeq(b []byte) (uint16, uint64) {
	es := binary.BigEndian.Uint64(b[3:11])
	return uint16(es >> 48), es & (1<<48 - 1)
}

// withSeq returns a copy of rec with another sequence number (the AAD no
// longer matches the tag).
func withSeq(rec []byte, seq uint64) []byte {
	b := append([]byte(nil), rec...)
	epoch, _ := recordSeq(b)
	binary.BigEndian.PutUint64(b[3:11], uint64(epoch)<<48|seq)
	return b
}

func withEpoch(rec []byte, epoch uint16) []byte {
	b := append([]byte(nil), rec...)
	binary.BigEndian.PutUint16(b[3:5], epoch)
	return b
}

// dataRecords keeps the data records of ds and fails on any pion
// application_data record (epochs 0 and 1) among them other than the
// session's control messages (4 bytes of plaintext, an 8-byte explicit
// nonce and a 16-byte tag): packets must never travel as DTLS application
// data.
func dataRecords(t *testing.T, what string, ds []datagram) [][]byte {
	t.Helper()
	var out [][]byte
	for _, d := range ds {
		if len(d.b) == 0 || d.b[0] != record.ContentType {
			continue
		}
		if !record.IsDataRecord(d.b) && len(d.b) == record.HeaderLen+ctrlLen+8+16 && binary.BigEndian.Uint16(d.b[3:5]) == 1 {
			continue // a control message on the DTLS connection
		}
		if !record.IsDataRecord(d.b) {
			t.Fatalf("%s: an application_data datagram that is not a meshd data record (epoch %#04x): % x",
				what, binary.BigEndian.Uint16(d.b[3:5]), d.b[:min(16, len(d.b))])
		}
		out = append(out, d.b)
	}
	return out
}

// sendNumbered sends count packets tag-0..tag-(count-1) through l in
// batches and waits until into has them all.
func sendNumbered(t *testing.T, l *Link, into *collector, tag string, count int) {
	t.Helper()
	for i := 0; i < count; i += 10 {
		var batch [][]byte
		for j := i; j < min(i+10, count); j++ {
			batch = append(batch, packet(fmt.Sprintf("%s-%d", tag, j)))
		}
		if n, err := l.WriteBatch(batch, HeaderRoom); n != len(batch) || err != nil {
			t.Fatalf("WriteBatch: %d, %v", n, err)
		}
	}
	testutil.WaitFor(t, 5*time.Second, tag+" delivered", func() bool {
		for j := 0; j < count; j++ {
			if !into.has([]byte(fmt.Sprintf("%s-%d", tag, j))) {
				return false
			}
		}
		return true
	})
}

func dataDrops(s Stats) uint64 {
	return s.DroppedUnknownSource + s.ReplayedRecords + s.DroppedTampered + s.DroppedOldEpoch +
		s.DroppedUnknownEpoch + s.DroppedTruncated + s.DroppedMalformed + s.DroppedGarbage
}

// TestDataRecordsOnTheWireAndDrops: alpha runs on a batched loopback
// socket, bravo and charlie on recording sockets. What the links carry is
// meshd data records, not pion application records. Records injected into
// alpha's socket from bravo's address — replayed, tampered, sealed under
// charlie's key, truncated, of an unknown epoch — and one from a stranger
// are each dropped and counted under their reason, and every link keeps
// working.
func TestDataRecordsOnTheWireAndDrops(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	a, b, c := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil), ca.node(t, "charlie", 3, 0, nil)
	sig := newMemSignals()
	tapB, tapC := newTapConn(t), newTapConn(t)
	ma := startManager(t, sig, a, nil)
	mb := startManager(t, sig, b, func(o *Options) { o.PacketConn = tapB })
	mc := startManager(t, sig, c, func(o *Options) { o.PacketConn = tapC })
	ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	ac, cb := mustLink(t, ma, c.peer), mustLink(t, mc, a.peer)
	var atAfromB, atAfromC, atB, atC collector
	ab.SetReceiver(atAfromB.receive)
	ac.SetReceiver(atAfromC.receive)
	ba.SetReceiver(atB.receive)
	cb.SetReceiver(atC.receive)
	links := []*Link{ab, ba, ac, cb}
	testutil.WaitFor(t, 20*time.Second, "links connected", func() bool {
		for _, l := range links {
			if l.State() != StateConnected {
				return false
			}
		}
		return true
	})
	exchange(t, ab, &atB, "warm-ab", 5*time.Second)
	exchange(t, ba, &atAfromB, "warm-ba", 5*time.Second)
	exchange(t, cb, &atAfromC, "warm-ca", 5*time.Second)

	aAddr := netip.MustParseAddrPort(ma.LocalAddr().String())
	aUDP := net.UDPAddrFromAddrPort(aAddr)
	toA := func(_ []byte, to net.Addr) bool {
		ua, ok := to.(*net.UDPAddr)
		return ok && ua.AddrPort() == aAddr
	}
	tapB.startRecordingOut(toA)
	tapC.startRecordingOut(toA)
	tapB.startRecording(func(d datagram) bool {
		ua, ok := d.from.(*net.UDPAddr)
		return ok && ua.AddrPort() == aAddr
	})
	sendNumbered(t, ba, &atAfromB, "b-to-a", 20)
	sendNumbered(t, ab, &atB, "a-to-b", 20)
	sendNumbered(t, cb, &atAfromC, "c-to-a", 80)
	fromB := dataRecords(t, "bravo to alpha", tapB.stopRecordingOut())
	fromA := dataRecords(t, "alpha to bravo (batched, GSO)", tapB.stopRecording())
	fromC := dataRecords(t, "charlie to alpha", tapC.stopRecordingOut())
	if len(fromB) < 20 || len(fromA) < 20 || len(fromC) < 80 {
		t.Fatalf("recorded %d/%d/%d data records, want at least 20/20/80", len(fromB), len(fromA), len(fromC))
	}
	for _, r := range fromA {
		if e, _ := recordSeq(r); e != record.FirstEpoch {
			t.Fatalf("alpha's record has epoch %#04x, want %#04x", e, record.FirstEpoch)
		}
		if n := len(r) - record.Overhead; n != len("a-to-b-10") && n != len("a-to-b-1") {
			t.Fatalf("alpha's record carries %d bytes, want one packet", n)
		}
	}

	// A batch mixing buffers with tail room (sealed in place: the record
	// header lands in the header room) and without (sealed in a copy).
	var mixed [][]byte
	for i := 0; i < 6; i++ {
		p := fmt.Sprintf("mixed-%d", i)
		b := make([]byte, HeaderRoom+len(p), HeaderRoom+len(p)+record.TagLen*(i%2))
		copy(b[HeaderRoom:], p)
		mixed = append(mixed, b)
	}
	if n, err := ab.WriteBatch(mixed, HeaderRoom); n != len(mixed) || err != nil {
		t.Fatalf("WriteBatch of a mixed batch: %d, %v", n, err)
	}
	for i, b := range mixed {
		if inPlace := record.IsDataRecord(b[HeaderRoom-record.HeaderLen:]); inPlace != (i%2 == 1) {
			t.Errorf("packet %d (tail room %v) sealed in place: %v", i, i%2 == 1, inPlace)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "mixed batch delivered", func() bool {
		for i := range mixed {
			if !atB.has([]byte(fmt.Sprintf("mixed-%d", i))) {
				return false
			}
		}
		return true
	})

	// A record bravo sent, with the highest sequence number so far; one of
	// charlie's that is ahead of everything bravo sent (so it reaches the
	// AEAD check instead of the replay window).
	last := fromB[len(fromB)-1]
	_, lastSeq := recordSeq(last)
	var charlie []byte
	for _, r := range fromC {
		if _, s := recordSeq(r); s > lastSeq+5 {
			charlie = r
			break
		}
	}
	if charlie == nil {
		t.Fatal("no record of charlie's is ahead of bravo's")
	}
	flipped := withSeq(last, lastSeq+50)
	flipped[len(flipped)-20] ^= 0x01

	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	cases := []struct {
		name    string
		b       []byte
		from    *net.UDPConn
		counter func(Stats) uint64
	}{
		{"replayed", last, tapB.conn, func(s Stats) uint64 { return s.ReplayedRecords }},
		{"tampered header", withSeq(last, lastSeq+1000), tapB.conn, func(s Stats) uint64 { return s.DroppedTampered }},
		{"tampered body", flipped, tapB.conn, func(s Stats) uint64 { return s.DroppedTampered }},
		{"under another peer's key", charlie, tapB.conn, func(s Stats) uint64 { return s.DroppedTampered }},
		{"truncated", last[:len(last)-5], tapB.conn, func(s Stats) uint64 { return s.DroppedTruncated }},
		{"unknown epoch", withEpoch(withSeq(last, lastSeq+2000), record.FirstEpoch+7), tapB.conn, func(s Stats) uint64 { return s.DroppedUnknownEpoch }},
		{"unknown source", withSeq(last, lastSeq+3000), stranger, func(s Stats) uint64 { return s.DroppedUnknownSource }},
	}
	for _, tc := range cases {
		before := ma.Stats()
		if _, err := tc.from.WriteTo(tc.b, aUDP); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 5*time.Second, tc.name+" counted", func() bool { return tc.counter(ma.Stats()) == tc.counter(before)+1 })
		if d := dataDrops(ma.Stats()) - dataDrops(before); d != 1 {
			t.Errorf("%s: %d drops counted, want 1 (before %+v after %+v)", tc.name, d, before, ma.Stats())
		}
	}
	// Nothing injected was delivered: alpha holds each of bravo's and
	// charlie's packets exactly once.
	for _, cl := range []*collector{&atAfromB, &atAfromC} {
		cl.mu.Lock()
		seen := map[string]int{}
		for _, p := range cl.packets {
			seen[string(p)]++
			if seen[string(p)] > 1 {
				t.Errorf("packet %q delivered twice", p)
			}
		}
		cl.mu.Unlock()
	}
	if st := ab.Status(); st.ReceiveErrors < 6 {
		t.Errorf("alpha's link to bravo counted %d receive errors, want the 6 injected", st.ReceiveErrors)
	}

	exchange(t, ab, &atB, "after-ab", 5*time.Second)
	exchange(t, ba, &atAfromB, "after-ba", 5*time.Second)
	exchange(t, ac, &atC, "after-ac", 5*time.Second)
	exchange(t, cb, &atAfromC, "after-ca", 5*time.Second)
	for _, l := range links {
		if st := l.Status(); st.State != StateConnected || st.Failures != 0 || st.Epoch != record.FirstEpoch || st.DataCipher == "" {
			t.Errorf("%s: %v, %d failures (last %v), epoch %#04x, cipher %q", st.Peer, st.State, st.Failures, st.LastError, st.Epoch, st.DataCipher)
		}
	}
}

// orderedNodes returns alpha and bravo such that alpha is the controlling
// side (DTLS client) exactly when alphaClient.
func orderedNodes(t *testing.T, ca *testCA, alphaClient bool) (*testNode, *testNode) {
	t.Helper()
	a := ca.node(t, "alpha", 1, 0, nil)
	for {
		b := ca.node(t, "bravo", 2, 0, nil)
		if b.peer.controlling(a.peer.Fingerprint) == alphaClient {
			return a, b
		}
	}
}

// linkedPair is two started managers, alpha's and bravo's, with a
// connected link each way and a collector on each link.
type linkedPair struct {
	ma, mb   *Manager
	ab, ba   *Link      // alpha's link to bravo, bravo's to alpha
	atA, atB *collector // what alpha's (bravo's) link received
}

// startLinkedPair starts managers for a and b, their options adjusted by
// tweakA and tweakB (either may be nil), links them both ways and waits
// until both links are connected and each has carried a packet.
func startLinkedPair(t *testing.T, a, b *testNode, tweakA, tweakB func(*Options)) *linkedPair {
	t.Helper()
	sig := newMemSignals()
	p := &linkedPair{ma: startManager(t, sig, a, tweakA), mb: startManager(t, sig, b, tweakB), atA: &collector{}, atB: &collector{}}
	p.ab, p.ba = mustLink(t, p.ma, b.peer), mustLink(t, p.mb, a.peer)
	p.ab.SetReceiver(p.atA.receive)
	p.ba.SetReceiver(p.atB.receive)
	testutil.WaitFor(t, 20*time.Second, "connected", func() bool {
		return p.ab.State() == StateConnected && p.ba.State() == StateConnected
	})
	exchange(t, p.ab, p.atB, "warm-ab", 5*time.Second)
	exchange(t, p.ba, p.atA, "warm-ba", 5*time.Second)
	return p
}

// trafficBothWays sends numbered packets both ways, tag-ab-i over ab and
// tag-ba-i over ba, one step every 5 ms, and tells which have not arrived.
type trafficBothWays struct {
	t        testing.TB
	tag      string
	ab, ba   *Link
	atA, atB func(payload string) bool // whether alpha's (bravo's) end received payload
	pace     *time.Ticker
	sent     int // packets sent each way
}

func newTrafficBothWays(t testing.TB, tag string, ab, ba *Link, atA, atB func(string) bool) *trafficBothWays {
	tr := &trafficBothWays{t: t, tag: tag, ab: ab, ba: ba, atA: atA, atB: atB, pace: time.NewTicker(5 * time.Millisecond)}
	t.Cleanup(tr.pace.Stop)
	return tr
}

// received adapts c to trafficBothWays.
func received(c *collector) func(string) bool {
	return func(p string) bool { return c.has([]byte(p)) }
}

// step sends n packets each way, a batch on each link, then waits for the
// next tick; during names what goes on meanwhile, for a failure.
func (tr *trafficBothWays) step(n int, during string) {
	tr.t.Helper()
	var x, y [][]byte
	for j := 0; j < n; j++ {
		x = append(x, packet(fmt.Sprintf("%s-ab-%d", tr.tag, tr.sent+j)))
		y = append(y, packet(fmt.Sprintf("%s-ba-%d", tr.tag, tr.sent+j)))
	}
	if got, err := tr.ab.WriteBatch(x, HeaderRoom); got != n || err != nil {
		tr.t.Fatalf("alpha WriteBatch during %s: %d, %v", during, got, err)
	}
	if got, err := tr.ba.WriteBatch(y, HeaderRoom); got != n || err != nil {
		tr.t.Fatalf("bravo WriteBatch during %s: %d, %v", during, got, err)
	}
	tr.sent += n
	<-tr.pace.C
}

// missing lists the packets sent that have not arrived.
func (tr *trafficBothWays) missing() (out []string) {
	for i := 0; i < tr.sent; i++ {
		if p := fmt.Sprintf("%s-ab-%d", tr.tag, i); !tr.atB(p) {
			out = append(out, p)
		}
		if p := fmt.Sprintf("%s-ba-%d", tr.tag, i); !tr.atA(p) {
			out = append(out, p)
		}
	}
	return out
}

// undelivered waits up to 5 s for every packet sent to arrive and returns
// the ones that have not.
func (tr *trafficBothWays) undelivered() []string {
	testutil.Eventually(5*time.Second, func() bool { return len(tr.missing()) == 0 })
	return tr.missing()
}

// TestRekeyKeepsTrafficFlowing: with keys that expire every few hundred
// milliseconds, packets flow both ways through several rekeys without a
// loss; no (epoch, sequence) pair — and so no nonce — repeats in either
// direction; the epoch advances; a record of a retired epoch injected after
// the overlap is dropped as old. Run with the batched side as DTLS client
// and as server.
func TestRekeyKeepsTrafficFlowing(t *testing.T) {
	for _, alphaClient := range []bool{true, false} {
		t.Run(fmt.Sprintf("batched side is client=%v", alphaClient), func(t *testing.T) {
			testRekey(t, alphaClient)
		})
	}
}

func testRekey(t *testing.T, alphaClient bool) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	a, b := orderedNodes(t, newTestCA(t, "mesh"), alphaClient)
	timers := testTimers()
	timers.RekeyInterval = 250 * time.Millisecond
	timers.RekeyOverlap = time.Second
	tap := newTapConn(t)
	p := startLinkedPair(t, a, b, func(o *Options) { o.Timers = timers }, func(o *Options) { o.Timers = timers; o.PacketConn = tap })
	ma, mb, ab, ba, atA, atB := p.ma, p.mb, p.ab, p.ba, p.atA, p.atB
	if ab.Status().Controlling != alphaClient {
		t.Fatalf("alpha controlling = %v, want %v", ab.Status().Controlling, alphaClient)
	}

	aAddr := netip.MustParseAddrPort(ma.LocalAddr().String())
	beforeA, beforeB := dataDrops(ma.Stats()), dataDrops(mb.Stats())
	tap.startRecording(func(d datagram) bool { return len(d.b) > 0 && d.b[0] == record.ContentType })
	tap.startRecordingOut(func(p []byte, to net.Addr) bool { return len(p) > 0 && p[0] == record.ContentType })

	// Steady traffic both ways, 4 packets each way every 5 ms, for at least
	// a second and until both sides have rekeyed three times.
	tr := newTrafficBothWays(t, "rk", ab, ba, received(atA), received(atB))
	start := time.Now()
	for time.Since(start) < time.Second || ab.Status().Rekeys < 3 || ba.Status().Rekeys < 3 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("after 20 s: %d and %d rekeys, want 3", ab.Status().Rekeys, ba.Status().Rekeys)
		}
		tr.step(4, "rekeys")
	}
	if lost := tr.undelivered(); len(lost) > 0 {
		t.Fatalf("lost during rekeys: %v\nalpha %+v\nbravo %+v", lost, ma.Stats(), mb.Stats())
	}
	in, out := tap.stopRecording(), tap.stopRecordingOut()
	for _, d := range []struct {
		name string
		recs [][]byte
	}{{"alpha to bravo", dataRecords(t, "alpha to bravo", in)}, {"bravo to alpha", dataRecords(t, "bravo to alpha", out)}} {
		seen := map[[2]uint64]bool{}
		epochs := map[uint16]bool{}
		for _, r := range d.recs {
			e, s := recordSeq(r)
			k := [2]uint64{uint64(e), s}
			if seen[k] {
				t.Fatalf("%s: epoch %#04x sequence %d sent twice (a repeated nonce)", d.name, e, s)
			}
			seen[k] = true
			epochs[e] = true
		}
		if len(epochs) < 3 {
			t.Errorf("%s: records in %d epochs, want at least 3 (several rekeys)", d.name, len(epochs))
		}
	}
	for _, l := range []*Link{ab, ba} {
		st := l.Status()
		t.Logf("%s: %d rekeys, epoch %#04x, %d packets sent, %d received", st.Peer, st.Rekeys, st.Epoch, st.PacketsSent, st.PacketsReceived)
		if st.Rekeys < 3 || st.Epoch < record.FirstEpoch+3 || st.Failures != 0 || st.State != StateConnected {
			t.Errorf("%s: %d rekeys, epoch %#04x, %d failures (last %v), state %v", st.Peer, st.Rekeys, st.Epoch, st.Failures, st.LastError, st.State)
		}
	}
	if da, db := dataDrops(ma.Stats())-beforeA, dataDrops(mb.Stats())-beforeB; da != 0 || db != 0 {
		t.Errorf("records dropped during rekeys: alpha %d (%+v), bravo %d (%+v)", da, ma.Stats(), db, mb.Stats())
	}

	// A record of the first epoch, long retired, injected into alpha.
	var first []byte
	for _, d := range out {
		if e, _ := recordSeq(d.b); e == record.FirstEpoch {
			first = d.b
		}
	}
	if first == nil {
		t.Fatal("no first-epoch record of bravo's was recorded")
	}
	before := ma.Stats().DroppedOldEpoch
	if _, err := tap.conn.WriteTo(first, net.UDPAddrFromAddrPort(aAddr)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "old-epoch record counted", func() bool { return ma.Stats().DroppedOldEpoch == before+1 })
	exchange(t, ab, atB, "after-ab", 5*time.Second)
	exchange(t, ba, atA, "after-ba", 5*time.Second)
}

// TestRekeyAfterRecords: the record count triggers rekeys on either side.
// When the DTLS server's send key is used up it asks the client, which
// runs the handshake.
func TestRekeyAfterRecords(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	a, b := orderedNodes(t, newTestCA(t, "mesh"), true)
	few := func(o *Options) { o.RekeyAfterRecords = 200 }
	p := startLinkedPair(t, a, b, few, few)
	client, server, atClient, atServer := p.ab, p.ba, p.atA, p.atB

	// Only the server sends.
	sendNumbered(t, server, atClient, "from-server", 300)
	testutil.WaitFor(t, 10*time.Second, "the server's request rekeys both", func() bool {
		return client.Status().Rekeys >= 1 && server.Status().Rekeys >= 1
	})
	sendNumbered(t, server, atClient, "from-server-after", 20)
	r0 := client.Status().Rekeys

	// Only the client sends.
	sendNumbered(t, client, atServer, "from-client", 300)
	testutil.WaitFor(t, 10*time.Second, "the client rekeys", func() bool {
		return client.Status().Rekeys > r0 && server.Status().Rekeys > r0
	})
	sendNumbered(t, client, atServer, "from-client-after", 20)
	for _, l := range []*Link{client, server} {
		if st := l.Status(); st.Failures != 0 || st.Epoch < record.FirstEpoch+2 {
			t.Errorf("%s: %d failures (last %v), epoch %#04x", st.Peer, st.Failures, st.LastError, st.Epoch)
		}
	}
}

// testKeyStates returns two key states that talk to each other (the
// client's sends open on the server's side), from a fake exporter.
func testKeyPair(t testing.TB, seed byte, lc, ls *Link) (client, server *keyState) {
	t.Helper()
	exp := func(label string, _ []byte, n int) ([]byte, error) {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i)
		}
		return b, nil
	}
	mk := func(isClient bool, l *Link) *keyState {
		k, err := record.Derive(exp, isClient, record.FirstEpoch, record.CipherAES128GCM)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := record.NewSession(k, record.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ks := &keyState{l: l, rs: rs}
		for i := range ks.openers {
			ks.openers[i] = rs.NewOpener()
		}
		return ks
	}
	return mk(true, lc), mk(false, ls)
}

// TestDemuxBatchesPerLink: a socket batch with the records of two links
// interleaved, plus junk, reaches each link's receiver in one call, in
// arrival order, with every buffer at HeaderRoom and room to spare for
// the TUN's GRO; the junk is counted.
func TestDemuxBatchesPerLink(t *testing.T) {
	m := &Manager{}
	m.known = newKnownSources()
	m.muxc = newMuxConn(nil, m.known, &m.counters, nil)
	links := []*Link{{m: m, name: "one"}, {m: m, name: "two"}}
	addrs := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("192.0.2.2:2000")}
	var senders []*record.Sealer
	type call struct {
		link string
		pkts []string
	}
	var (
		mu    sync.Mutex
		calls []call
	)
	for i, l := range links {
		peer, local := testKeyPair(t, byte(10*i), nil, l)
		l.keys.Store(local)
		senders = append(senders, peer.rs.NewSealer())
		m.routes.update(l, addrs[i])
		name := l.name
		l.SetReceiver(func(bufs [][]byte, offset int) {
			if offset != HeaderRoom {
				t.Errorf("offset %d", offset)
			}
			c := call{link: name}
			for _, b := range bufs {
				if cap(b)-len(b) < 1<<15 {
					t.Errorf("a delivered buffer has only %d bytes of spare capacity", cap(b)-len(b))
				}
				c.pkts = append(c.pkts, string(b[offset:]))
			}
			mu.Lock()
			calls = append(calls, c)
			mu.Unlock()
		})
	}
	rx := newRxBatch(16)
	n := 0
	add := func(b []byte, src netip.AddrPort) {
		copy(rx.recvViews[n], b)
		rx.sizes[n], rx.srcs[n] = len(b), src
		n++
	}
	seal := func(i int, payload string) []byte {
		buf := make([]byte, record.HeaderLen+len(payload), record.Overhead+len(payload))
		copy(buf[record.HeaderLen:], payload)
		rec, err := senders[i].SealInPlace(buf, record.HeaderLen, len(payload))
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	add(seal(0, "one-a"), addrs[0])
	add(seal(1, "two-a"), addrs[1])
	add(seal(0, "one-b"), addrs[0])
	add([]byte{0xff, 1, 2}, addrs[0]) // garbage
	for k := 0; k < 5; k++ {
		seal(1, "skip") // so that the next is ahead of link one's replay window
	}
	add(seal(1, "two-b"), addrs[0])                               // right record, wrong link: fails authentication
	add(seal(0, "one-c"), netip.MustParseAddrPort("192.0.2.9:9")) // unknown source
	add(seal(0, "one-d")[:record.HeaderLen+3], addrs[0])          // truncated
	add(seal(1, "two-c"), addrs[1])
	m.demux(rx, n, 0, 0)

	want := []call{{"one", []string{"one-a", "one-b"}}, {"two", []string{"two-a", "two-c"}}}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("receiver calls %v, want %v", calls, want)
	}
	s := Stats{
		DroppedGarbage: m.counters.garbage.Load(), DroppedTampered: m.counters.tampered.Load(),
		DroppedUnknownSource: m.counters.unknownSource.Load(), DroppedTruncated: m.counters.truncated.Load(),
		ReplayedRecords: m.counters.replayed.Load(),
	}
	if s != (Stats{DroppedGarbage: 1, DroppedTampered: 1, DroppedUnknownSource: 1, DroppedTruncated: 1}) {
		t.Fatalf("counters %+v", s)
	}
	if st := links[0].packetsReceived.Load(); st != 2 {
		t.Fatalf("link one counted %d packets received", st)
	}
	// The batch state is reset: nothing of the buffers is kept.
	for _, g := range rx.groups {
		if g.l != nil || len(g.bufs) != 0 {
			t.Fatal("a group survived its batch")
		}
	}
}

func TestRouteTable(t *testing.T) {
	var r routes
	l1, l2 := &Link{name: "one"}, &Link{name: "two"}
	a, b, c := netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2"), netip.MustParseAddrPort("192.0.2.3:3")
	check := func(step string, want map[netip.AddrPort]*Link) {
		t.Helper()
		got := r.load().links
		if len(got) != len(want) {
			t.Fatalf("%s: table %v, want %v", step, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: %v maps to %v, want %v", step, k, got[k], v)
			}
		}
	}
	check("empty", nil)
	r.update(l1, a)
	r.update(l2, b)
	check("two links", map[netip.AddrPort]*Link{a: l1, b: l2})
	r.update(l1, c, b) // b is not l1's: kept
	check("l1 moves", map[netip.AddrPort]*Link{a: l1, b: l2, c: l1})
	r.update(l2, a) // l2 takes over a
	r.update(l1, netip.AddrPort{}, a, c)
	check("l1 leaves", map[netip.AddrPort]*Link{a: l2, b: l2})
	before := r.load()
	r.update(l2, netip.AddrPort{}, a, b)
	check("l2 leaves", nil)
	if len(before.links) != 2 {
		t.Fatal("a published table changed")
	}
}

// TestCipherChoice: the handshake settles the data cipher both sides
// offer; a node that insists on ChaCha20-Poly1305 gets it from a peer on
// auto, and records flow under it.
func TestCipherChoice(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	p := startLinkedPair(t, a, b, func(o *Options) { o.Cipher = record.CipherChaCha20Poly1305 }, nil)
	for _, l := range []*Link{p.ab, p.ba} {
		if st := l.Status(); st.DataCipher != "chacha20-poly1305" || st.CipherSuite != "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" {
			t.Errorf("%s: data cipher %q, suite %q", st.Peer, st.DataCipher, st.CipherSuite)
		}
	}
}
