package discovery

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/stunwire"
	"github.com/meshd/meshd/internal/testutil"
)

// startFastTURN starts the embedded server on loopback with loopback
// peers allowed, and a client with a channel bound to a peer socket.
func startFastTURN(t testing.TB, noFast bool) (ts *turnService, relay net.PacketConn, client, peer *net.UDPConn) {
	t.Helper()
	o := TURNOptions{AllowedPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, noFastPath: noFast}
	o.Secret = testTURNSecret
	o.UDPAddr = "127.0.0.1:0"
	o.RelayAddress = mustAddr("127.0.0.1")
	o.RelayBindAddress = "127.0.0.1"
	o.RelayPortMin, o.RelayPortMax = 44000, 44999
	ts, err := newTURNService(o, tls.Certificate{}, slog.New(slog.DiscardHandler)) // no TLS listener
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	client, peer = listenLoopback(t), listenLoopback(t)
	user, pass := turnCredentials(testTURNSecret, "node-a", time.Now().Add(time.Hour))
	relay, tc, err := turnAllocateTB(t, client, ts.urls[0][len("stun:"):], user, pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	t.Cleanup(func() { _ = relay.Close() })
	warmChannel(t, relay, peer, func(i int) bool {
		if noFast {
			return i > 20 // pion's bind completes within a round trip
		}
		return len(ts.fast.tab.Load().byClient) > 0
	})
	return ts, relay, client, peer
}

// listenLoopback opens a UDP socket on 127.0.0.1, closed with t.
func listenLoopback(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// warmChannel writes to peer through relay until bound(writes so far)
// says the channel is bound: pion binds a channel on the first write and
// uses it once bound.
func warmChannel(t testing.TB, relay net.PacketConn, peer *net.UDPConn, bound func(i int) bool) {
	t.Helper()
	buf := make([]byte, 2048)
	i := 0
	testutil.WaitFor(t, 10*time.Second, "a datagram through a bound channel", func() bool {
		i++
		if _, err := relay.WriteTo([]byte(fmt.Sprintf("warm-%d", i)), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		for {
			if _, _, err := peer.ReadFrom(buf); err != nil {
				break
			}
		}
		return bound(i)
	})
	_ = peer.SetReadDeadline(time.Time{})
}

// TestTURNFastForwarding: with a client's channel bound, the embedded
// server forwards ChannelData to the peer and the peer's datagrams back as
// ChannelData through its batched fast path, byte for byte; a second peer
// works while its channel is being bound; and an allocation the client
// releases takes its bindings with it.
func TestTURNFastForwarding(t *testing.T) {
	testutil.LeakCheck(t)
	ts, relay, _, peer := startFastTURN(t, false)
	f := ts.fast

	exchange(t, relay, peer, 50, 1200, 100)
	buf := make([]byte, 2048)
	// Counted after the send returns, which may be after the datagram
	// arrived.
	testutil.WaitFor(t, 5*time.Second, "50 datagrams each way through the fast path", func() bool {
		return allForwarded(f, dirToPeer) >= 50 && allForwarded(f, dirToClient) >= 50
	})

	// A second peer, reached while its channel is still being bound (the
	// answer may come as a Data indication through pion or as ChannelData
	// through the fast path): it arrives either way.
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	_, _ = relay.WriteTo([]byte("hello"), other.LocalAddr()) // permission (and a bind pion starts)
	_ = other.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := other.ReadFrom(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := other.WriteTo([]byte("from other"), relay.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := relay.ReadFrom(buf); err != nil || string(buf[:n]) != "from other" {
		t.Fatalf("client got %q, %v", buf[:n], err)
	}
	_ = relay.Close()
	testutil.WaitFor(t, 10*time.Second, "bindings dropped with the allocation", func() bool {
		return len(f.tab.Load().byClient) == 0
	})
}

// exchange sends rounds datagrams each way between a client's relay and
// peer, one at a time, and checks each arrives byte for byte: round i
// carries long+i bytes to the peer and short+i back.
func exchange(t testing.TB, relay net.PacketConn, peer *net.UDPConn, rounds, long, short int) {
	t.Helper()
	buf := make([]byte, 2048)
	for i := 0; i < rounds; i++ {
		want := bytes.Repeat([]byte{byte(i)}, long+i)
		if _, err := relay.WriteTo(want, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := peer.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], want) {
			t.Fatalf("peer got %d bytes (%v), want %d", n, err, len(want))
		}
		if _, err := peer.WriteTo(want[:short+i], relay.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := relay.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], want[:short+i]) || from.String() != peer.LocalAddr().String() {
			t.Fatalf("client got %d bytes from %v (%v), want %d from %v", n, from, err, short+i, peer.LocalAddr())
		}
	}
}

// turnAllocateTB is turnAllocate for benchmarks too.
func turnAllocateTB(t testing.TB, conn net.PacketConn, server, user, pass string) (net.PacketConn, interface{ Close() }, error) {
	if tt, ok := t.(*testing.T); ok {
		return turnAllocate(tt, conn, server, user, pass)
	}
	// A benchmark: the same with a throwaway *testing.T for its helpers.
	var tt testing.T
	r, c, err := turnAllocate(&tt, conn, server, user, pass)
	if tt.Failed() {
		t.Fatal("TURN client setup failed")
	}
	return r, c, err
}

// BenchmarkTURNForward measures the embedded server forwarding ChannelData
// from a client to a peer over loopback: 1400-byte payloads sent by the
// client in batches of 64 (sendmmsg over UDP; one write of 64 frames over
// TCP or TLS), received by the peer with recvmmsg, at most 4096 in flight.
// One op is one datagram forwarded. "pion" is pion's own forwarding (the
// fast path off), "fast" this package's; "tcp-" and "tls-" are clients on
// the TCP and TLS listeners (turnstream.go). It reports
// packets/s, the whole process's CPU time per packet (client, server and
// peer share the process; client and peer cost little next to the server)
// as packets per CPU-second, and allocations per packet (the whole process;
// client and peer allocate nothing).
func BenchmarkTURNForward(b *testing.B) {
	if !batchIOSupported {
		b.Skip("batched UDP I/O is Linux-only")
	}
	const size, batch = 1400, 64
	for _, mode := range []struct {
		name    string
		noFast  bool
		stream  bool
		overTLS bool
	}{
		{name: "pion", noFast: true},
		{name: "fast"},
		{name: "tcp-pion", noFast: true, stream: true},
		{name: "tcp-fast", stream: true},
		{name: "tls-pion", noFast: true, stream: true, overTLS: true},
		{name: "tls-fast", stream: true, overTLS: true},
	} {
		b.Run(mode.name, func(b *testing.B) {
			// channel is the channel pion's client bound: the fast path's,
			// or 0x4000, pion's client's first.
			channel := func(ts *turnService) uint16 {
				if ts.fast != nil {
					for k := range ts.fast.tab.Load().byClient {
						return k.ch
					}
				}
				return 0x4000
			}
			payload := bytes.Repeat([]byte{0xab}, size)
			if !mode.stream {
				ts, _, client, peer := startFastTURN(b, mode.noFast)
				server := netip.MustParseAddrPort(strings.TrimPrefix(ts.urls[0], "stun:"))
				cc, err := newBatchConn(client)
				if err != nil {
					b.Fatal(err)
				}
				msgs := make([][]byte, batch)
				for i := range msgs {
					msgs[i] = channelData(channel(ts), payload)
				}
				tx := newTxBatch(batch)
				benchForward(b, peer, batch, size, func(n int) error { return cc.send(tx, msgs[:n], server) })
				return
			}
			ts, relay, stream, peer := startStreamTURN(b, mode.noFast, mode.overTLS)
			warmChannel(b, relay, peer, func(i int) bool {
				if mode.noFast {
					return i > 20 // pion's bind completes within a round trip
				}
				return streamBindings(ts.fast) > 0
			})
			frame := paddedChannelData(channel(ts), payload)
			frames := bytes.Repeat(frame, batch)
			benchForward(b, peer, batch, size, func(n int) error {
				_, err := stream.Write(frames[:n*len(frame)])
				return err
			})
		})
	}
}

// benchForward runs BenchmarkTURNForward's loop: send(n) has the client
// send n datagrams of size bytes to peer through the server, n ≤ batch.
func benchForward(b *testing.B, peer *net.UDPConn, batch, size int, send func(n int) error) {
	pc, err := newBatchConn(peer)
	if err != nil {
		b.Fatal(err)
	}
	pc.setBuffers(8 << 20)
	rx := newRxBatch(batch, 2048, 0)
	benchLoop(b, size, batch, send, func() (int, error) { return pc.read(rx) }, func() { _ = peer.Close() })
}

// benchLoop sends b.N datagrams of size bytes, n ≤ batch per send(n), at
// most a window ahead of what recv (on its own goroutine, until an error
// after stop) reports received, and reports the rates.
func benchLoop(b *testing.B, size, batch int, send func(n int) error, recv func() (int, error), stop func()) {
	const window = 4096
	var got atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			n, err := recv()
			if err != nil {
				return
			}
			got.Add(uint64(n))
		}
	}()
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	sent, stalls := 0, 0
	for sent < b.N {
		if sent-int(got.Load()) > window {
			// Lost datagrams never arrive: give up waiting after a while
			// and count them as loss.
			if stalls++; stalls < 1000 {
				time.Sleep(10 * time.Microsecond)
				continue
			}
		}
		stalls = 0
		n := min(batch, b.N-sent)
		if err := send(n); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	last, lastChange := got.Load(), time.Now()
	for got.Load() < uint64(sent) && time.Since(lastChange) < 200*time.Millisecond {
		time.Sleep(5 * time.Millisecond)
		if g := got.Load(); g != last {
			last, lastChange = g, time.Now()
		}
	}
	secs := time.Since(start).Seconds()
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	stop()
	<-done
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()).Seconds()
	received := float64(got.Load())
	b.ReportMetric(received/secs, "packets/s")
	b.ReportMetric(received/cpu, "packets/cpu-s")
	b.ReportMetric(100*(1-received/float64(sent)), "loss%")
}

// channelData frames payload for channel ch.
func channelData(ch uint16, payload []byte) []byte {
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint16(b, ch)
	binary.BigEndian.PutUint16(b[2:], uint16(len(payload)))
	copy(b[4:], payload)
	return b
}

// FuzzTURNFastObserve: whatever a client sends or pion answers, learning
// never panics and keeps its bounds.
func FuzzTURNFastObserve(f *testing.F) {
	f.Add([]byte{0x00, 0x09, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte{0x01, 0x03, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
		0x00, 0x16, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0x5e, 0x12, 0xa4, 0x43})
	f.Add([]byte{0x00, 0x09, 0x00, 0x14, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
		0x00, 0x0c, 0x00, 0x04, 0x40, 0x00, 0x00, 0x00,
		0x00, 0x12, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0x5e, 0x12, 0xa4, 0x43})
	f.Fuzz(func(t *testing.T, p []byte) {
		tf := &turnFast{
			policy:  newPeerPolicy(&TURNOptions{RelayAddress: mustAddr("203.0.113.1")}, slog.New(slog.DiscardHandler)),
			pending: make(map[[12]byte]pendingReq),
			relays:  make(map[relayKey]*turnRelaySock),
			clients: make(map[clientID]*turnRelaySock),
		}
		tf.tab.Store(&turnTable{})
		c := netip.MustParseAddrPort("198.51.100.9:5000")
		tf.observeRequest(p, clientID{addr: c})
		tf.observeAnswer(p, clientID{addr: c})
		if len(p) >= stunwire.HeaderLen {
			q := bytes.Clone(p)
			q[0], q[1] = 0x01, 0x09 // its success answer
			tf.observeAnswer(q, clientID{addr: c})
		}
		if len(tf.pending) > turnMaxPending {
			t.Fatalf("%d pending", len(tf.pending))
		}
		for _, r := range tf.pending {
			if len(r.peers) == 0 || len(r.peers) > maxPeersPerPermission {
				t.Fatalf("pending %+v", r)
			}
		}
	})
}

// TestTURNFastForwardingAllocs: forwarding ChannelData on a bound channel
// allocates nothing (pion's own path: about 11 allocations per datagram,
// BenchmarkTURNForward/pion).
func TestTURNFastForwardingAllocs(t *testing.T) {
	if !batchIOSupported {
		t.Skip("batched UDP I/O is Linux-only")
	}
	ts, _, client, peer := startFastTURN(t, false)
	server := netip.MustParseAddrPort(strings.TrimPrefix(ts.urls[0], "stun:"))
	var ch uint16
	for k := range ts.fast.tab.Load().byClient {
		ch = k.ch
	}
	cc, err := newBatchConn(client)
	if err != nil {
		t.Fatal(err)
	}
	const batch = 64
	msgs := make([][]byte, batch)
	for i := range msgs {
		msgs[i] = channelData(ch, bytes.Repeat([]byte{byte(i)}, 1200))
	}
	tx := newTxBatch(batch)
	forwardAllocs(t, peer, batch, func() error { return cc.send(tx, msgs, server) })
}

// forwardAllocs checks that send, which has the client send batch
// datagrams to peer through the server, and their receipt allocate
// nothing.
func forwardAllocs(t *testing.T, peer *net.UDPConn, batch int, send func() error) {
	t.Helper()
	pc, err := newBatchConn(peer)
	if err != nil {
		t.Fatal(err)
	}
	pc.setBuffers(4 << 20)
	rx := newRxBatch(batch, 2048, 0)
	_ = peer.SetReadDeadline(time.Now().Add(30 * time.Second))
	allocs := testutil.MinAllocsPerRun(5, 20, func() {
		if err := send(); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < batch; {
			n, err := pc.read(rx)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Errorf("forwarding %d datagrams: %.1f allocations, want 0", batch, allocs)
	}
}
