package discovery

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/meshd/meshd/internal/stunwire"
	"github.com/meshd/meshd/internal/testutil"
)

// startStreamTURN starts the embedded server on loopback with its TCP and
// TLS listeners only (loopback peers allowed), a pion client over TCP or
// TLS with a relay allocated, and a peer socket; with the fast path on,
// it waits until the fast path holds the client's binding to the peer.
func startStreamTURN(t testing.TB, noFast, overTLS bool, allowed ...netip.Prefix) (ts *turnService, relay net.PacketConn, stream net.Conn, peer *net.UDPConn) {
	t.Helper()
	if allowed == nil {
		allowed = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}
	o := TURNOptions{AllowedPeers: allowed, noFastPath: noFast}
	o.Secret = testTURNSecret
	o.TCPAddr, o.TLSAddr = "127.0.0.1:0", "127.0.0.1:0"
	o.RelayAddress = mustAddr("127.0.0.1")
	o.RelayBindAddress = "127.0.0.1"
	o.RelayPortMin, o.RelayPortMax = 45000, 45999
	_, cs := shared(t)
	ts, err := newTURNService(o, cs[0].TLSCertificate(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	prefix, scheme := "turn:", "?transport=tcp"
	if overTLS {
		prefix = "turns:"
	}
	var host string
	for _, u := range ts.urls {
		if h, ok := bytes.CutPrefix([]byte(u), []byte(prefix)); ok && bytes.HasSuffix(h, []byte(scheme)) {
			host = string(bytes.TrimSuffix(h, []byte(scheme)))
			break
		}
	}
	stream, err = net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	if overTLS {
		stream = tls.Client(stream, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a test of framing, not of trust
	}
	t.Cleanup(func() { _ = stream.Close() })
	stream = &handoffConn{Conn: stream, parked: make(chan struct{}), release: make(chan struct{})}
	peer = listenLoopback(t)
	user, pass := turnCredentials(testTURNSecret, "node-a", time.Now().Add(time.Hour))
	relay, tc, err := turnAllocateTB(t, turn.NewSTUNConn(stream), host, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	t.Cleanup(func() { _ = relay.Close() })
	return ts, relay, stream, peer
}

// handoffConn is a client's stream that a test can take over from pion's
// client (takeOver) to read it itself.
type handoffConn struct {
	net.Conn
	taken   atomic.Bool
	once    sync.Once
	parked  chan struct{} // closed when pion's reader has stopped
	release chan struct{} // closed to let it go
}

func (h *handoffConn) Read(p []byte) (int, error) {
	if !h.taken.Load() {
		n, err := h.Conn.Read(p)
		if !h.taken.Load() || n > 0 {
			return n, err
		}
	}
	h.once.Do(func() { close(h.parked) })
	<-h.release
	return 0, net.ErrClosed
}

// takeOver stops pion's client reading the stream: what arrives from now
// on is read from h.Conn by the test.
func (h *handoffConn) takeOver(t testing.TB) {
	h.taken.Store(true)
	_ = h.Conn.SetReadDeadline(time.Now())
	select {
	case <-h.parked:
	case <-time.After(10 * time.Second):
		t.Fatal("pion's client kept reading")
	}
	_ = h.Conn.SetReadDeadline(time.Time{})
	t.Cleanup(func() { close(h.release) }) // before the client closes
}

// streamBindings counts the fast path's bindings of stream clients.
func streamBindings(f *turnFast) int {
	n := 0
	for k := range f.tab.Load().byClient {
		if k.client.stream != nil {
			n++
		}
	}
	return n
}

// streamForwarded is the frames f forwarded for stream clients (TCP and
// TLS) in direction dir.
func streamForwarded(f *turnFast, dir int) uint64 {
	return f.fwd[turnTCP][dir].frames.Load() + f.fwd[turnTLS][dir].frames.Load()
}

// allForwarded is the frames f forwarded for any client in direction dir.
func allForwarded(f *turnFast, dir int) uint64 {
	return streamForwarded(f, dir) + f.fwd[turnUDP][dir].frames.Load()
}

// TestTURNStreamFastForwarding: a client on the TCP and on the TLS listener,
// with a channel bound to a UDP peer, exchanges data with it both ways
// through the stream fast path, byte for byte, lengths not a multiple of 4
// included (padding), counted under its own transport (frames and payload
// bytes, TURNFastStats); and the bindings go with the connection.
func TestTURNStreamFastForwarding(t *testing.T) {
	if !batchIOSupported {
		t.Skip("batched UDP I/O is Linux-only")
	}
	for _, overTLS := range []bool{false, true} {
		name := map[bool]string{false: "tcp", true: "tls"}[overTLS]
		t.Run(name, func(t *testing.T) {
			testutil.LeakCheck(t)
			ts, relay, stream, peer := startStreamTURN(t, false, overTLS)
			f := ts.fast
			warmChannel(t, relay, peer, func(int) bool { return streamBindings(f) > 0 })
			toPeer0, toClient0 := streamForwarded(f, dirToPeer), streamForwarded(f, dirToClient)
			const rounds = 50
			exchange(t, relay, peer, rounds, 1201, 101) // lengths of every remainder mod 4
			// Counted after the send returns, which may be after the
			// datagram arrived.
			testutil.WaitFor(t, 5*time.Second, "the datagrams each way through the stream fast path", func() bool {
				return streamForwarded(f, dirToPeer)-toPeer0 >= rounds && streamForwarded(f, dirToClient)-toClient0 >= rounds
			})
			// Payload bytes: the exchange's lengths, without headers or padding.
			wantBytes := map[string]uint64{"to_peer": 1201 * rounds, "to_client": 101 * rounds}
			for i := range rounds {
				wantBytes["to_peer"] += uint64(i)
				wantBytes["to_client"] += uint64(i)
			}
			for _, st := range f.stats() {
				switch {
				case st.Transport != name && st.Frames+st.Bytes != 0:
					t.Errorf("%+v counted for a %s client", st, name)
				case st.Transport == name && (st.Frames < rounds || st.Bytes < wantBytes[st.Direction]):
					t.Errorf("%+v, want at least %d frames of %d payload bytes", st, rounds, wantBytes[st.Direction])
				}
			}

			_ = relay.Close()
			_ = stream.Close()
			testutil.WaitFor(t, 10*time.Second, "bindings dropped with the connection", func() bool {
				return streamBindings(f) == 0
			})
		})
	}
}

// TestTURNStreamPolicyDenied: a stream client cannot reach a peer the peer
// policy refuses (loopback, not allowed here) through the fast path or
// pion, and no binding is made.
func TestTURNStreamPolicyDenied(t *testing.T) {
	if !batchIOSupported {
		t.Skip("batched UDP I/O is Linux-only")
	}
	testutil.LeakCheck(t)
	ts, relay, _, peer := startStreamTURN(t, false, false, netip.MustParsePrefix("192.0.2.0/24"))
	for i := 0; i < 20; i++ {
		_, _ = relay.WriteTo([]byte("refused"), peer.LocalAddr())
	}
	// The peer writes to the relay address too: nothing reaches the client.
	_, _ = peer.WriteTo([]byte("to the client"), relay.LocalAddr())
	testutil.WaitFor(t, 10*time.Second, "the refusals counted", func() bool {
		return ts.peers.refused.Load() > 0
	})
	_ = peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := peer.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatalf("a refused peer got %d bytes", n)
	}
	if n := streamBindings(ts.fast); n != 0 || streamForwarded(ts.fast, dirToPeer) != 0 || streamForwarded(ts.fast, dirToClient) != 0 {
		t.Fatalf("%d bindings, %d to the peer, %d to the client through the fast path, want none",
			n, streamForwarded(ts.fast, dirToPeer), streamForwarded(ts.fast, dirToClient))
	}
}

// chunkConn is a stream that reads as the given chunks, then io.EOF, and
// records what is written to it.
type chunkConn struct {
	net.Conn // nil: only Read, Write and Close are used
	chunks   [][]byte
	written  bytes.Buffer
}

func (c *chunkConn) Read(p []byte) (int, error) {
	for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	return n, nil
}

func (c *chunkConn) Write(p []byte) (int, error) { return c.written.Write(p) }
func (c *chunkConn) Close() error                { return nil }

// streamRig is a fast path with one relay socket and a peer socket, for
// stream connections over chunkConns.
type streamRig struct {
	f     *turnFast
	relay *turnRelaySock
	peer  *net.UDPConn
}

func newStreamRig(t testing.TB) *streamRig {
	t.Helper()
	f := newTURNFast(newPeerPolicy(&TURNOptions{}, slog.New(slog.DiscardHandler)))
	if f == nil {
		t.Skip("batched UDP I/O is Linux-only")
	}
	s, ok := f.wrapRelay(listenLoopback(t)).(*turnRelaySock)
	if !ok {
		t.Skip("no batched I/O on the relay socket")
	}
	return &streamRig{f: f, relay: s, peer: listenLoopback(t)}
}

// conn returns a stream reading chunks with channel 0x4001 bound to the
// peer and 0x4003 bound but expired; nothing else is bound.
func (r *streamRig) conn(chunks [][]byte) *turnStreamConn {
	c := &turnStreamConn{Conn: &chunkConn{chunks: chunks}, f: r.f}
	peer := r.peer.LocalAddr().(*net.UDPAddr).AddrPort()
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	all := func(*turnBinding) bool { return true }
	r.f.updateLocked(all, &turnBinding{client: c.id(), ch: 0x4001, relay: r.relay, peer: peer, until: time.Now().Add(time.Hour)})
	r.f.updateLocked(all, &turnBinding{client: c.id(), ch: 0x4003, relay: r.relay, peer: netip.MustParseAddrPort("127.0.0.1:9"), until: time.Now().Add(-time.Second)})
	return c
}

// readAll reads c as pion does until an error: the bytes pion gets.
func readAll(t testing.TB, c *turnStreamConn) []byte {
	var out []byte
	p := make([]byte, turnStreamMTU)
	for {
		n, err := c.Read(p)
		out = append(out, p[:n]...)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// channelBindRequest is a ChannelBind request for ch to peer.
func channelBindRequest(t testing.TB, ch uint16, peer netip.AddrPort) []byte {
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest))
	if err != nil {
		t.Fatal(err)
	}
	m.Add(stun.AttrChannelNumber, []byte{byte(ch >> 8), byte(ch), 0, 0})
	if err := (&stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}).AddToAs(m, stun.AttrXORPeerAddress); err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// paddedChannelData frames payload for channel ch as over a stream.
func paddedChannelData(ch uint16, payload []byte) []byte {
	b := channelData(ch, payload)
	return append(b, make([]byte, -len(b)&3)...)
}

// TestTURNStreamSplitFrames: whatever way the stream is cut into reads —
// at every single offset, and one byte at a time — ChannelData of the
// bound channel goes to the peer, in order and byte for byte, and
// everything else reaches pion unchanged and in order: STUN messages, a
// channel whose ChannelBind pion has not answered, an expired binding, and
// frames after a ChannelData pion would frame differently.
func TestTURNStreamSplitFrames(t *testing.T) {
	rig := newStreamRig(t)
	var stream, forPion []byte
	var forPeer [][]byte
	add := func(frame []byte, fast bool) {
		stream = append(stream, frame...)
		if fast {
			forPeer = append(forPeer, frame[4:4+binary.BigEndian.Uint16(frame[2:4])])
		} else {
			forPion = append(forPion, frame...)
		}
	}
	add(channelBindRequest(t, 0x4002, netip.MustParseAddrPort("192.0.2.7:4000")), false)
	add(paddedChannelData(0x4001, []byte("hello")), true)
	add(paddedChannelData(0x4002, []byte("unconfirmed")), false)
	add(paddedChannelData(0x4001, bytes.Repeat([]byte{0xab}, 1201)), true)
	add(paddedChannelData(0x4003, []byte("expired")), false)
	add(paddedChannelData(0x4001, []byte{}), true)
	add(paddedChannelData(0x4001, bytes.Repeat([]byte{0xcd}, 2100)), false) // longer than the fast path takes
	add(channelBindRequest(t, 0x4001, netip.MustParseAddrPort("192.0.2.8:4000")), false)
	add(paddedChannelData(0x4001, []byte("last fast")), true)
	// A ChannelData frame whose payload starts with the STUN cookie: pion
	// may cut it as STUN, so it and everything after go to pion.
	add(paddedChannelData(0x4001, []byte{0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}), false)
	add(paddedChannelData(0x4001, []byte("after the ambiguous frame")), false)

	check := func(t *testing.T, chunks [][]byte) {
		t.Helper()
		c := rig.conn(chunks)
		defer c.Close()
		if got := readAll(t, c); !bytes.Equal(got, forPion) {
			t.Fatalf("pion got %d bytes, want %d:\n%x\nwant\n%x", len(got), len(forPion), got, forPion)
		}
		buf := make([]byte, 4096)
		for i, want := range forPeer {
			_ = rig.peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := rig.peer.ReadFrom(buf)
			if err != nil || !bytes.Equal(buf[:n], want) {
				t.Fatalf("peer datagram %d: %d bytes (%v), want %d", i, n, err, len(want))
			}
		}
		rig.f.mu.Lock()
		_, pending := rig.f.pending[[12]byte(stream[8:20])]
		rig.f.mu.Unlock()
		if !pending {
			t.Fatal("the ChannelBind request was not observed on its way to pion")
		}
	}
	for k := 0; k <= len(stream); k++ {
		check(t, [][]byte{bytes.Clone(stream[:k]), bytes.Clone(stream[k:])})
	}
	ones := make([][]byte, len(stream))
	for i := range stream {
		ones[i] = stream[i : i+1 : i+1]
	}
	check(t, ones)
	if got := streamForwarded(rig.f, dirToPeer); got != uint64((len(stream)+2)*len(forPeer)) {
		t.Errorf("%d frames counted to the peer, want %d", got, (len(stream)+2)*len(forPeer))
	}
	payload := 0
	for _, p := range forPeer {
		payload += len(p)
	}
	if got := rig.f.fwd[turnTCP][dirToPeer].bytes.Load(); got != uint64((len(stream)+2)*payload) {
		t.Errorf("%d bytes counted to the peer, want %d (payloads only)", got, (len(stream)+2)*payload)
	}
}

// TestTURNStreamWritesFrames: datagrams from the peer reach a stream client
// as ChannelData frames padded to a multiple of 4, one write per batch,
// and pion's own writes still go through whole.
func TestTURNStreamWritesFrames(t *testing.T) {
	rig := newStreamRig(t)
	c := rig.conn(nil)
	cc := c.Conn.(*chunkConn)
	run := [][]byte{
		append([]byte{0x40, 0x01, 0, 5}, "hello"...),
		{0x40, 0x01, 0, 0},
		append([]byte{0x40, 0x01, 0, 8}, "12345678"...),
	}
	var sw []byte
	if err := c.writeFrames(&sw, run); err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte{0x40, 0x01, 0, 5}, "hello\x00\x00\x00"...), 0x40, 0x01, 0, 0), append([]byte{0x40, 0x01, 0, 8}, "12345678"...)...)
	if !bytes.Equal(cc.written.Bytes(), want) {
		t.Fatalf("wrote\n%x\nwant\n%x", cc.written.Bytes(), want)
	}
	allocs := testing.AllocsPerRun(100, func() {
		cc.written.Reset()
		_ = c.writeFrames(&sw, run)
	})
	if allocs != 0 {
		t.Errorf("writing a batch: %.1f allocations, want 0", allocs)
	}
}

// FuzzTURNStreamFrames: whatever a client sends, cut into reads of any
// size, pion gets exactly the frames a reference cut of the whole stream
// leaves it, in order, and the fast path sends exactly the bound channel's
// ChannelData frames on; no read is longer than asked.
func FuzzTURNStreamFrames(f *testing.F) {
	f.Add([]byte{0x40, 0x01, 0, 5, 'h', 'e', 'l', 'l', 'o', 0, 0, 0, 0x40, 0x02, 0, 1, 'x', 0, 0, 0}, uint8(3))
	f.Add([]byte{0x00, 0x09, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x40, 0x01, 0, 0}, uint8(1))
	f.Add([]byte{0x40, 0x01, 0, 4, 0x21, 0x12, 0xa4, 0x42, 0x40, 0x01, 0, 0}, uint8(7))
	rig := newStreamRig(f)
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		wantPion, wantFast := referenceCut(in)
		var chunks [][]byte
		for rest := bytes.Clone(in); len(rest) > 0; {
			n := min(len(rest), int(step)+1)
			chunks, rest = append(chunks, rest[:n:n]), rest[n:]
		}
		before := streamForwarded(rig.f, dirToPeer)
		c := rig.conn(chunks)
		defer c.Close()
		if got := readAll(t, c); !bytes.Equal(got, wantPion) {
			t.Fatalf("pion got\n%x\nwant\n%x", got, wantPion)
		}
		if got := streamForwarded(rig.f, dirToPeer) - before; got != uint64(wantFast) {
			t.Fatalf("%d frames forwarded, want %d", got, wantFast)
		}
	})
}

// referenceCut cuts a whole stream as turnStreamConn does with channel
// 0x4001 bound: what pion gets, and how many frames are forwarded. An
// incomplete frame at the end that would be waited for whole is not
// handed on.
func referenceCut(in []byte) (pion []byte, fast int) {
	for pos := 0; pos < len(in); {
		b := in[pos:]
		n, kind := stunwire.StreamFrame(b)
		switch kind {
		case stunwire.FrameIncomplete:
			return pion, fast
		case stunwire.FrameUnframed:
			return append(pion, b...), fast
		case stunwire.FrameSTUN:
			if n < turnStreamMTU && n > len(b) {
				return pion, fast
			}
		case stunwire.FrameChannelData:
			if binary.BigEndian.Uint16(b) == 0x4001 && n <= turnStreamMaxWait {
				if n > len(b) {
					return pion, fast
				}
				fast++
				pos += n
				continue
			}
		}
		n = min(n, len(b))
		pion = append(pion, b[:n]...)
		pos += n
	}
	return pion, fast
}

// TestTURNStreamForwardingAllocs: forwarding ChannelData of a TCP client's
// bound channel allocates nothing (pion's own path: about 11 allocations
// per frame, BenchmarkTURNForward/tcp-pion).
func TestTURNStreamForwardingAllocs(t *testing.T) {
	if !batchIOSupported {
		t.Skip("batched UDP I/O is Linux-only")
	}
	ts, relay, stream, peer := startStreamTURN(t, false, false)
	warmChannel(t, relay, peer, func(int) bool { return streamBindings(ts.fast) > 0 })
	var ch uint16
	for k := range ts.fast.tab.Load().byClient {
		ch = k.ch
	}
	const batch = 64
	frames := bytes.Repeat(paddedChannelData(ch, bytes.Repeat([]byte{0xab}, 1201)), batch)
	forwardAllocs(t, peer, batch, func() error {
		_, err := stream.Write(frames)
		return err
	})
}

// BenchmarkTURNForwardToStream measures the embedded server forwarding
// datagrams from a peer to a client on its TCP or TLS listener, over
// loopback: 1400-byte datagrams sent by the peer in batches of 64
// (sendmmsg), the client's stream read and cut into frames, at most 4096
// in flight. One op is one datagram forwarded; the metrics are
// BenchmarkTURNForward's. "pion" is pion's own forwarding (one write per
// datagram), "fast" this package's (one write per batch).
func BenchmarkTURNForwardToStream(b *testing.B) {
	if !batchIOSupported {
		b.Skip("batched UDP I/O is Linux-only")
	}
	const size, batch = 1400, 64
	for _, mode := range []struct {
		name            string
		noFast, overTLS bool
	}{
		{"tcp-pion", true, false}, {"tcp-fast", false, false},
		{"tls-pion", true, true}, {"tls-fast", false, true},
	} {
		b.Run(mode.name, func(b *testing.B) {
			ts, relay, stream, peer := startStreamTURN(b, mode.noFast, mode.overTLS)
			warmChannel(b, relay, peer, func(i int) bool {
				if mode.noFast {
					return i > 20 // pion's bind completes within a round trip
				}
				return streamBindings(ts.fast) > 0
			})
			// A few datagrams back, so pion's server has bound its side.
			for i := 0; i < 20; i++ {
				_, _ = peer.WriteTo([]byte("warm"), relay.LocalAddr())
			}
			hc := stream.(*handoffConn)
			hc.takeOver(b)
			pc, err := newBatchConn(peer)
			if err != nil {
				b.Fatal(err)
			}
			dst := relay.LocalAddr().(*net.UDPAddr).AddrPort()
			msgs := make([][]byte, batch)
			for i := range msgs {
				msgs[i] = bytes.Repeat([]byte{0xab}, size)
			}
			tx := newTxBatch(batch)
			buf := make([]byte, 256<<10)
			r, w := 0, 0
			recv := func() (int, error) {
				w = copy(buf, buf[r:w])
				r = 0
				n, err := hc.Conn.Read(buf[w:])
				if err != nil {
					return 0, err
				}
				w += n
				frames := 0
				for {
					fn, kind := stunwire.StreamFrame(buf[r:w])
					if kind == stunwire.FrameIncomplete || kind == stunwire.FrameUnframed || fn > w-r {
						break
					}
					if kind == stunwire.FrameChannelData {
						frames++ // not the warm-up's Data indications
					}
					r += fn
				}
				return frames, nil
			}
			benchLoop(b, size, batch, func(n int) error { return pc.send(tx, msgs[:n], dst) }, recv, func() { _ = hc.Conn.Close() })
		})
	}
}

// TestTURNStreamDataConnection: once pion answers an RFC 6062
// ConnectionBind on a connection, its bytes are a TCP peer's: they reach
// pion as they come, however few, never cut into frames.
func TestTURNStreamDataConnection(t *testing.T) {
	rig := newStreamRig(t)
	raw := [][]byte{{0x40, 0x01, 0, 1}, {0x40, 0x01, 0, 0, 'x'}, {1, 2, 3}}
	c := rig.conn(raw)
	defer c.Close()
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodConnectionBind, stun.ClassSuccessResponse))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(m.Raw); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 64)
	for i, want := range raw {
		if n, err := c.Read(p); err != nil || !bytes.Equal(p[:n], want) {
			t.Fatalf("read %d: %x (%v), want %x", i, p[:n], err, want)
		}
	}
	if got := streamForwarded(rig.f, dirToPeer); got != 0 {
		t.Fatalf("%d frames of a data connection forwarded", got)
	}
}
