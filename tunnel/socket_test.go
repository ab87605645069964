package tunnel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// tapConn is a UDP socket that records the datagrams it receives and can
// inject datagrams with any source address (what an on-path attacker
// replaying packets would produce).
type tapConn struct {
	conn   *net.UDPConn
	reads  chan datagram
	inject chan datagram
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu       sync.Mutex
	record   func(d datagram) bool
	recorded []datagram
	// out records datagrams this socket sends when it returns true.
	out      func(b []byte, to net.Addr) bool
	outgoing []datagram
}

type datagram struct {
	b    []byte
	from net.Addr
}

func newTapConn(t *testing.T) *tapConn {
	t.Helper()
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := &tapConn{conn: uc, reads: make(chan datagram, 256), inject: make(chan datagram, 16), closed: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(c.reads)
		for {
			buf := make([]byte, 2048)
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			d := datagram{b: buf[:n], from: from}
			c.mu.Lock()
			if c.record != nil && c.record(d) {
				c.recorded = append(c.recorded, datagram{b: bytes.Clone(d.b), from: from})
			}
			c.mu.Unlock()
			select {
			case c.reads <- d:
			case <-c.closed:
				return
			}
		}
	}()
	return c
}

func (c *tapConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.inject:
		return copy(b, d.b), d.from, nil
	case d, ok := <-c.reads:
		if !ok {
			return 0, nil, net.ErrClosed
		}
		return copy(b, d.b), d.from, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *tapConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.mu.Lock()
	if c.out != nil && c.out(b, a) {
		c.outgoing = append(c.outgoing, datagram{b: bytes.Clone(b), from: a})
	}
	c.mu.Unlock()
	return c.conn.WriteTo(b, a)
}

// startRecordingOut records what this socket sends for which keep is true.
func (c *tapConn) startRecordingOut(keep func(b []byte, to net.Addr) bool) {
	c.mu.Lock()
	c.out, c.outgoing = keep, nil
	c.mu.Unlock()
}

func (c *tapConn) stopRecordingOut() []datagram {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = nil
	return c.outgoing
}
func (c *tapConn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *tapConn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *tapConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *tapConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }
func (c *tapConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	err := c.conn.Close()
	c.wg.Wait()
	return err
}

func (c *tapConn) startRecording(keep func(d datagram) bool) {
	c.mu.Lock()
	c.record, c.recorded = keep, nil
	c.mu.Unlock()
}

func (c *tapConn) stopRecording() []datagram {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record = nil
	return c.recorded
}

// TestSharedPortDropsBadDatagrams: garbage, truncated, unknown-source and
// replayed datagrams on the shared port are dropped and counted, nothing
// panics, and the existing link keeps working.
func TestSharedPortDropsBadDatagrams(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)

	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	tap := newTapConn(t)
	ma := startManager(t, sig, a, nil)
	mb := startManager(t, sig, b, func(o *Options) { o.PacketConn = tap })
	ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "links connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	exchange(t, ab, &atB, "warmup", 5*time.Second)

	// A stranger sends junk to bravo's port.
	stranger, err := net.DialUDP("udp4", nil, mb.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	stunTruncated := make([]byte, 12)
	binary.BigEndian.PutUint32(stunTruncated[4:], 0x2112a442)
	stunBadLength := make([]byte, 24)
	stunBadLength[1] = 1
	binary.BigEndian.PutUint16(stunBadLength[2:], 40)
	binary.BigEndian.PutUint32(stunBadLength[4:], 0x2112a442)
	dtlsRecord := func(ct byte, length uint16, body int) []byte {
		r := []byte{ct, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 7, 0, 0}
		binary.BigEndian.PutUint16(r[11:], length)
		return append(r, make([]byte, body)...)
	}
	junk := []struct {
		b    []byte
		kind string
	}{
		{[]byte{0xff, 0xfe, 0x00}, "garbage"},
		{append([]byte{0x80}, "rtp-ish"...), "garbage"},
		{[]byte{23, 0xfe, 0xfd, 0, 1}, "malformed"},           // truncated DTLS header
		{dtlsRecord(23, 100, 10), "malformed"},                // length overruns the datagram
		{dtlsRecord(99, 4, 4), "garbage"},                     // 99 is outside RFC 7983's DTLS range
		{dtlsRecord(30, 4, 4), "malformed"},                   // DTLS range, unknown content type
		{stunTruncated, "malformed"},                          // STUN cookie, short header
		{stunBadLength, "malformed"},                          // STUN length field lies
		{dtlsRecord(23, 32, 32), "unknown source"},            // well-formed, but nobody talks to this address
		{append(dtlsRecord(23, 4, 4), 22, 0xfe), "malformed"}, // second record truncated
	}
	want := map[string]uint64{}
	for _, j := range junk {
		want[j.kind]++
		if _, err := stranger.Write(j.b); err != nil {
			t.Fatal(err)
		}
	}
	before := Stats{}
	testutil.WaitFor(t, 5*time.Second, "junk counted", func() bool {
		s := mb.Stats()
		return s.DroppedGarbage-before.DroppedGarbage >= want["garbage"] &&
			s.DroppedMalformed >= want["malformed"] && s.DroppedUnknownSource >= want["unknown source"]
	})
	if s := mb.Stats(); s.DroppedGarbage != want["garbage"] || s.DroppedMalformed != want["malformed"] || s.DroppedUnknownSource != want["unknown source"] {
		t.Errorf("stats %+v, want garbage %d malformed %d unknown %d", s, want["garbage"], want["malformed"], want["unknown source"])
	}

	// Replays: record alpha's application records to bravo, then inject
	// them again with alpha's address as source.
	aAddr := netip.MustParseAddrPort(ma.LocalAddr().String())
	tap.startRecording(func(d datagram) bool {
		ua, ok := d.from.(*net.UDPAddr)
		return ok && ua.AddrPort() == aAddr && len(d.b) > 0 && d.b[0] == 23
	})
	var probes [][]byte
	for i := 0; i < 10; i++ {
		probes = append(probes, packet(fmt.Sprintf("probe-%d", i)))
	}
	if n, err := ab.WriteBatch(probes, HeaderRoom); n != len(probes) || err != nil {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	testutil.WaitFor(t, 5*time.Second, "probes delivered", func() bool {
		for i := 0; i < 10; i++ {
			if !atB.has([]byte(fmt.Sprintf("probe-%d", i))) {
				return false
			}
		}
		return true
	})
	recorded := tap.stopRecording()
	if len(recorded) < 10 {
		t.Fatalf("recorded %d application records, want at least 10", len(recorded))
	}
	replayedBefore := mb.Stats().ReplayedRecords
	for _, d := range recorded {
		tap.inject <- d
	}
	testutil.WaitFor(t, 5*time.Second, "replays counted", func() bool {
		return mb.Stats().ReplayedRecords-replayedBefore >= uint64(len(recorded))
	})
	// None was delivered twice.
	atB.mu.Lock()
	seen := map[string]int{}
	for _, p := range atB.packets {
		seen[string(p)]++
	}
	atB.mu.Unlock()
	for i := 0; i < 10; i++ {
		if n := seen[fmt.Sprintf("probe-%d", i)]; n != 1 {
			t.Errorf("probe-%d delivered %d times", i, n)
		}
	}

	// The link still works both ways.
	exchange(t, ab, &atB, "after-a", 5*time.Second)
	exchange(t, ba, &atA, "after-b", 5*time.Second)
	if st := ba.Status(); st.State != StateConnected || st.Failures != 0 {
		t.Errorf("bravo's link after the junk: %v, %d failures (last %v)", st.State, st.Failures, st.LastError)
	}
}

func TestScreen(t *testing.T) {
	s := newKnownSources()
	known := netip.MustParseAddrPort("192.0.2.1:4000")
	s.remember(known)
	stranger := netip.MustParseAddrPort("192.0.2.9:4000")
	stun := make([]byte, 20)
	binary.BigEndian.PutUint32(stun[4:], 0x2112a442)
	rec := []byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 2}
	tests := []struct {
		name string
		b    []byte
		from netip.AddrPort
		want dropReason
	}{
		{"empty", nil, known, dropGarbage},
		{"stun", stun, stranger, dropNone},
		{"stun top bits", append([]byte{0xc0}, stun[1:]...), known, dropGarbage},
		{"dtls known", rec, known, dropNone},
		{"dtls stranger", rec, stranger, dropUnknownSource},
		{"dtls mapped address", rec, netip.AddrPortFrom(netip.MustParseAddr("::ffff:192.0.2.1"), 4000), dropNone},
		{"dtls bad version", append([]byte{22, 0xfe, 0x01}, rec[3:]...), known, dropMalformed},
		{"dtls zero length", []byte{23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0}, known, dropMalformed},
	}
	for _, tc := range tests {
		if got := s.screen(tc.b, tc.from); got != tc.want {
			t.Errorf("%s: screen = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestControlMessages(t *testing.T) {
	for _, kind := range []byte{ctrlKeysInstalled, ctrlRekeyRequest, ctrlKeysStaged} {
		b := marshalControl(kind, 0x4abc)
		k, e, err := parseControl(b)
		if err != nil || k != kind || e != 0x4abc {
			t.Fatalf("round trip of kind %d: %d %#x %v", kind, k, e, err)
		}
	}
	for _, b := range [][]byte{nil, {1, 1, 0}, {2, 1, 0, 0}, {1, 9, 0, 0}, {1, 1, 0, 0, 0}} {
		if _, _, err := parseControl(b); err == nil {
			t.Errorf("parseControl(%v) accepted a bad message", b)
		}
	}
}

func TestIsClientHello(t *testing.T) {
	hello := []byte{22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0}
	if !isClientHello(hello) {
		t.Fatal("a ClientHello was not recognized")
	}
	for _, b := range [][]byte{
		{22, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0}, // epoch 1 (encrypted)
		{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 2, 0, 0, 0}, // ServerHello
		{23, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0}, // application data
		hello[:13],
	} {
		if isClientHello(b) {
			t.Errorf("isClientHello(%v) = true", b)
		}
	}
}
