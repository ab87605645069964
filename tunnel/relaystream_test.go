package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshd/meshd/internal/stunwire"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/tunnel/record"
)

// fastStreamReady reports whether l's records leave as ChannelData on its
// TURN stream (TCP or TLS) and the stream delivers the peer's to it.
func fastStreamReady(l *Link) bool {
	rt := l.route.Load()
	if rt == nil {
		return false
	}
	s, ok := rt.relay.(*turnStream)
	if !ok {
		return false
	}
	t := s.fast.table()
	c := t.peer(rt.remote.Addr)
	return c != nil && c.ready && t.link(rt.remote.Addr) == l
}

// TestRelayStreamFastPath: on a link relayed through pion's TURN server
// over TCP and over TLS, records leave as ChannelData framed in place on
// the stream (no allocation per packet) and arrive in batches (pion's
// path hands over one frame at a time), intact both ways.
func TestRelayStreamFastPath(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 120*time.Second)
	srv := startLoopbackTURN(t)
	for _, tc := range []struct{ name, url string }{
		{"tcp", "turn:" + srv.tcpAddr + "?transport=tcp"},
		{"tls", "turns:" + srv.tlsAddr + "?transport=tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ab, ba, atA, atB := relayedPairVia(t, srv, tc.url, fastStreamReady)
			checkRelayFastPath(t, ab, ba, atA, atB, fastStreamReady)
		})
	}
}

// TestRelayStreamRekeys: on the fast path over TURN over TLS, packets
// keep flowing both ways through several rekeys without a loss (a record
// of the next epoch goes through pion, which installs it).
func TestRelayStreamRekeys(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 90*time.Second)
	srv := startLoopbackTURN(t)
	checkRelayRekeys(t, fastStreamReady, func(fast func(*Options)) (ab, ba *Link, atA, atB *batchCollector) {
		return relayedPairVia(t, srv, "turns:"+srv.tlsAddr+"?transport=tcp", fastStreamReady, fast)
	})
}

// streamFixture is a turnStream read from a scripted conn, with one link
// attached for peer on channel 0x4001, and a sealer whose records the
// link opens.
type streamFixture struct {
	s      *turnStream
	conn   *scriptConn
	l      *Link
	sealer *record.Sealer
	got    [][]byte // packets delivered to l, in order
	calls  int      // deliveries
}

const (
	fixtureChan  = 0x4001
	fixtureOther = 0x4002 // bound by nobody
)

var fixturePeer = netip.MustParseAddrPort("198.51.100.7:40000")

func newStreamFixture(t testing.TB) *streamFixture {
	t.Helper()
	m := &Manager{}
	l := &Link{m: m, name: "peer"}
	sendKS, recvKS := testKeyPair(t, 7, &Link{m: m, name: "sender"}, l)
	l.keys.Store(recvKS)
	f := &streamFixture{conn: &scriptConn{}, l: l, sealer: sendKS.rs.NewSealer()}
	l.SetReceiver(func(bufs [][]byte, off int) {
		f.calls++
		for _, b := range bufs {
			f.got = append(f.got, bytes.Clone(b[off:]))
		}
	})
	f.s = newTurnStream(f.conn, nil, nil)
	f.s.fast.tab.Store(&relayTable{
		chans: []relayChan{{num: fixtureChan, peer: fixturePeer, ready: true}},
		links: []relayLink{{peer: fixturePeer, l: l}},
	})
	return f
}

// record seals payload.
func (f *streamFixture) record(t testing.TB, payload string) []byte {
	t.Helper()
	buf := make([]byte, record.HeaderLen+len(payload), record.HeaderLen+len(payload)+record.TagLen)
	copy(buf[record.HeaderLen:], payload)
	rec, err := f.sealer.SealInPlace(buf, record.HeaderLen, len(payload))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// readAll reads the stream as pion's STUNConn would until the script
// ends, returning what pion was given.
func (f *streamFixture) readAll(t testing.TB) []byte {
	t.Helper()
	var out []byte
	p := make([]byte, 1<<16)
	for {
		n, err := f.s.Read(p)
		out = append(out, p[:n]...)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("Read returned nothing and no error")
		}
	}
}

// scriptConn returns its chunks one Read each, then io.EOF, and keeps
// what is written to it.
type scriptConn struct {
	net.Conn
	chunks [][]byte
	mu     sync.Mutex
	writes [][]byte
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 3478}
}
func (c *scriptConn) Close() error { return nil }

// TestRelayStreamReader: whatever chunks the stream arrives in (split at
// every offset), data records on the attached channel are delivered in
// order, and everything else reaches pion unchanged and in order: STUN
// messages, ChannelData on a channel nobody bound (even carrying a valid
// record), ICE checks inside ChannelData, a record of an epoch not
// installed yet, a peer's forged Allocate answer inside a Data indication
// (which teaches nothing), and, after bytes that follow no framing, the
// rest of the stream as it came.
func TestRelayStreamReader(t *testing.T) {
	relayed := netip.MustParseAddrPort("203.0.113.1:50000")
	forged := netip.MustParseAddrPort("192.0.2.66:1")
	xor := xorAttr
	allocOK := stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse)
	// The relayed address is learnt from the server's Allocate answer.
	f := newStreamFixture(t)
	f.conn.chunks = [][]byte{stunMessage(t, allocOK, xor(stun.AttrXORRelayedAddress, relayed))}
	f.readAll(t)
	if got := f.s.fast.table().relayed; got != relayed {
		t.Fatalf("relayed address %v, want %v", got, relayed)
	}
	for _, tc := range []struct {
		name  string
		chunk func(stream []byte) [][][]byte // ways to cut the stream
	}{
		{"split at every offset", func(s []byte) (out [][][]byte) {
			for k := 1; k < len(s); k++ {
				out = append(out, [][]byte{s[:k], s[k:]})
			}
			return out
		}},
		{"one byte at a time", func(s []byte) [][][]byte {
			var c [][]byte
			for i := range s {
				c = append(c, s[i:i+1])
			}
			return [][][]byte{c}
		}},
		{"whole", func(s []byte) [][][]byte { return [][][]byte{{s}} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cuts := 0
			for cut := 0; ; cut++ {
				f := newStreamFixture(t)
				var stream, forPion []byte
				var want []string
				data := func(payload string) {
					want = append(want, payload)
					stream = append(stream, tcpChannelData(fixtureChan, f.record(t, payload))...)
				}
				toPion := func(frame []byte) {
					stream = append(stream, frame...)
					forPion = append(forPion, frame...)
				}
				data("one")
				data("two, odd length")
				toPion(permissionError(t, createPermission(t), stun.CodeForbidden))
				toPion(tcpChannelData(fixtureOther, f.record(t, "not on a bound channel")))
				toPion(tcpChannelData(fixtureChan, bindingRequest(t, "a:b")))
				data("three")
				next := f.record(t, "next epoch")
				binary.BigEndian.PutUint16(next[3:5], record.FirstEpoch+1)
				toPion(tcpChannelData(fixtureChan, next))
				toPion(stunMessage(t, stun.NewType(stun.MethodData, stun.ClassIndication), xor(stun.AttrXORPeerAddress, fixturePeer),
					stun.RawAttribute{Type: stun.AttrData, Value: stunMessage(t, allocOK, xor(stun.AttrXORRelayedAddress, forged))}))
				data("four")
				data("five, after which the framing is lost")
				toPion([]byte{0xff, 0x00, 0x00, 0x04})
				toPion(tcpChannelData(fixtureChan, f.record(t, "after the garbage: pion's")))

				ways := tc.chunk(stream)
				if cut >= len(ways) {
					break
				}
				cuts++
				f.conn.chunks = ways[cut]
				got := f.readAll(t)
				if !bytes.Equal(got, forPion) {
					t.Fatalf("cut %d: pion got %d bytes, want the %d bytes of its frames unchanged and in order", cut, len(got), len(forPion))
				}
				if len(f.got) != len(want) {
					t.Fatalf("cut %d: %d packets delivered, want %d", cut, len(f.got), len(want))
				}
				for i, w := range want {
					if string(f.got[i]) != w {
						t.Fatalf("cut %d: packet %d is %q, want %q", cut, i, f.got[i], w)
					}
				}
				if tab := f.s.fast.table(); tab.relayed.IsValid() {
					t.Fatalf("cut %d: relayed address %v learnt from a peer's datagram", cut, tab.relayed)
				}
				if tab := f.s.fast.table(); tab.channel(fixtureOther) != nil {
					t.Fatalf("cut %d: a channel learnt from the server's stream", cut)
				}
				if tc.name == "whole" && f.calls != 3 {
					t.Errorf("%d deliveries for three runs of records, want 3", f.calls)
				}
			}
			if cuts == 0 {
				t.Fatal("no cut tried")
			}
		})
	}
}

// TestRelayStreamReceiveAllocs: the reader opens and delivers records off
// the stream without allocating.
func TestRelayStreamReceiveAllocs(t *testing.T) {
	f := newStreamFixture(t)
	var delivered int
	f.l.SetReceiver(func(bufs [][]byte, _ int) { delivered += len(bufs) })
	const batch, runs = 32, 11
	end := stunMessage(t, stun.NewType(stun.MethodRefresh, stun.ClassSuccessResponse))
	for range runs {
		var chunk []byte
		for i := range batch {
			chunk = append(chunk, tcpChannelData(fixtureChan, f.record(t, fmt.Sprintf("%1200d", i)))...)
		}
		f.conn.chunks = append(f.conn.chunks, append(chunk, end...))
	}
	p := make([]byte, 1<<16)
	read := func() {
		if n, err := f.s.Read(p); err != nil || !bytes.Equal(p[:n], end) {
			t.Fatalf("Read = %d, %v", n, err)
		}
	}
	read() // the first makes the buffers
	if a := testing.AllocsPerRun(runs-2, read); a != 0 {
		t.Errorf("%.1f allocations per %d records read", a, batch)
	}
	if delivered != runs*batch {
		t.Errorf("%d packets delivered, want %d", delivered, runs*batch)
	}
}

// TestRelayStreamSend: before pion has bound a channel to the peer (or
// before the server accepted it) a batch goes the slow way; once pion
// sent ChannelData on it, the batch leaves as one write of ChannelData
// frames, each padded to 4 bytes, and nothing of the caller's buffers is
// kept.
func TestRelayStreamSend(t *testing.T) {
	f := newStreamFixture(t)
	s := f.s
	s.fast.tab.Store(&relayTable{})
	recs := [][]byte{make([]byte, chanHdrLen+29), make([]byte, chanHdrLen+30), make([]byte, chanHdrLen+31), make([]byte, chanHdrLen+32)}
	for i, r := range recs {
		for j := chanHdrLen; j < len(r); j++ {
			r[j] = byte(i + 1)
		}
	}
	check := func(step string, want bool) {
		t.Helper()
		ok, err := s.sendRecords(nil, recs, fixturePeer)
		if ok != want || err != nil {
			t.Fatalf("%s: sendRecords = %v, %v; want %v", step, ok, err, want)
		}
	}
	check("no channel", false)
	bind := stunMessage(t, stun.NewType(stun.MethodChannelBind, stun.ClassRequest), channelNumber(fixtureChan),
		xorAttr(stun.AttrXORPeerAddress, fixturePeer))
	if _, err := s.Write(bind); err != nil {
		t.Fatal(err)
	}
	check("bind requested", false)
	// ChannelData read from the server proves nothing about the bind.
	f.conn.chunks = [][]byte{tcpChannelData(fixtureChan, []byte("from the server"))}
	f.readAll(t)
	check("ChannelData from the server", false)
	if _, err := s.Write(tcpChannelData(fixtureChan, []byte("pion's"))); err != nil {
		t.Fatal(err)
	}
	f.conn.writes = nil
	check("pion sent ChannelData", true)
	if len(f.conn.writes) != 1 {
		t.Fatalf("%d writes for a batch, want 1", len(f.conn.writes))
	}
	var want []byte
	for _, r := range recs {
		want = append(want, tcpChannelData(fixtureChan, r[chanHdrLen:])...)
	}
	if !bytes.Equal(f.conn.writes[0], want) {
		t.Fatalf("wrote\n%x\nwant\n%x", f.conn.writes[0], want)
	}
}

// TestRelayStreamSendTCP: on plain TCP the batch goes out with writev,
// framed and padded as on TLS, without allocating.
func TestRelayStreamSendTCP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peerSide, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peerSide.Close()
	s := newTurnStream(c, nil, nil)
	defer s.Close()
	s.fast.tab.Store(&relayTable{chans: []relayChan{{num: fixtureChan, peer: fixturePeer, ready: true}}})
	recs := make([][]byte, 32)
	var want []byte
	for i := range recs {
		recs[i] = bytes.Repeat([]byte{byte(i)}, chanHdrLen+1200+i)
		want = append(want, tcpChannelData(fixtureChan, recs[i][chanHdrLen:])...)
	}
	if ok, err := s.sendRecords(nil, recs, fixturePeer); !ok || err != nil {
		t.Fatal(ok, err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(peerSide, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the stream does not carry the batch's frames")
	}
	for _, v := range s.fast.iov {
		if v != nil {
			t.Fatal("a caller's buffer is kept")
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			if _, err := peerSide.Read(buf); err != nil {
				return
			}
		}
	}()
	// AllocsPerRun counts every goroutine's: the best of a few trials.
	if a := testutil.MinAllocsPerRun(4, 20, func() {
		if ok, err := s.sendRecords(nil, recs, fixturePeer); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}); a != 0 {
		t.Errorf("%.1f allocations per batch", a)
	}
	_ = s.Close()
	<-done
}

// FuzzStreamFrame: whatever the stream holds, a frame is within what was
// read and no longer than pion cuts (stunwire.FuzzStreamFrame checks the
// cut against pion's), and the reader hands pion
// exactly the bytes it does not deliver.
func FuzzStreamFrame(f *testing.F) {
	f.Add(append(tcpChannelData(0x4001, []byte("x")), 0x00, 0x01), 3)
	f.Add([]byte{0x40, 0x01, 0xff, 0xff, 1, 2, 3}, 1)
	f.Add([]byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 7)
	f.Fuzz(func(t *testing.T, b []byte, chunk int) {
		if fr, kind := streamFrame(b); kind == stunwire.FrameSTUN || kind == stunwire.FrameChannelData {
			if len(fr) > len(b) || len(fr) > maxStreamFrame || len(fr) < chanHdrLen {
				t.Fatalf("frame of %d bytes from %d", len(fr), len(b))
			}
		} else if fr != nil {
			t.Fatal("a frame of kind", kind)
		}
		// Through the reader, with no link attached: pion gets it all.
		chunk = max(1, chunk%97)
		conn := &scriptConn{}
		for r := b; len(r) > 0; r = r[min(chunk, len(r)):] {
			conn.chunks = append(conn.chunks, r[:min(chunk, len(r))])
		}
		fx := &streamFixture{s: newTurnStream(conn, nil, nil), conn: conn}
		got := fx.readAll(t)
		// A frame cut short by the end of the stream never reaches pion.
		if len(got) > len(b) || !bytes.Equal(got, b[:len(got)]) {
			t.Fatalf("pion got %x of %x", got, b)
		}
	})
}
