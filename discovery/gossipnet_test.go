package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshd/meshd/internal/testutil"
)

func listenGossipT(t testing.TB, host string) *gossipNet {
	t.Helper()
	g, err := listenGossip(host, 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

// netTransportT is memberlist's own transport, the one gossipNet replaces:
// the control the tests compare against.
func netTransportT(t testing.TB, host string) *memberlist.NetTransport {
	t.Helper()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{host}, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Its loops block handing over what nobody took: drain meanwhile.
		done := make(chan struct{})
		go func() {
			for {
				select {
				case <-nt.PacketCh():
				case c := <-nt.StreamCh():
					_ = c.Close()
				case <-done:
					return
				}
			}
		}()
		_ = nt.Shutdown()
		close(done)
	})
	return nt
}

func needIPv6(t testing.TB) {
	t.Helper()
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	_ = c.Close()
}

// gossipTarget is where tr receives: its advertised address on a loopback bind.
func gossipTarget(t testing.TB, tr memberlist.Transport) string {
	t.Helper()
	ip, port, err := tr.FinalAdvertiseAddr("", 0)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

// bytesPerDatagram sends n datagrams of size bytes to `to` one at a time,
// each drained from tr's PacketCh before the next is sent (so none is lost),
// and returns the heap bytes allocated per datagram meanwhile (every
// goroutine's: the transport's read loop is the one that matters).
func bytesPerDatagram(t testing.TB, tr memberlist.Transport, to string, size, n int) float64 {
	t.Helper()
	c, err := net.Dial("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := bytes.Repeat([]byte{0xa5}, size)
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	roundTrip := func() {
		if _, err := c.Write(payload); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-tr.PacketCh():
			if len(p.Buf) != size {
				t.Fatalf("got a %d-byte packet, sent %d", len(p.Buf), size)
			}
		case <-timeout.C:
			t.Fatal("datagram not delivered")
		}
	}
	for range 20 { // warm up: the poller, the goroutines' stacks
		roundTrip()
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		roundTrip()
	}
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
}

// TestGossipTransportAllocs: a datagram of garbage at the public gossip port
// costs the coordinator about its own size, not the 64 KiB read buffer
// memberlist's NetTransport allocates for every datagram (measured here as
// the control, so the measurement is known to see that cost).
func TestGossipTransportAllocs(t *testing.T) {
	transports := []struct {
		name  string
		open  func(t *testing.T) memberlist.Transport
		check func(perDatagram float64, size int) bool
		want  string
	}{
		{"gossipNet", func(t *testing.T) memberlist.Transport { return listenGossipT(t, "127.0.0.1") },
			func(b float64, size int) bool { return b < float64(size)+2048 }, "< size + 2 KiB"},
		{"memberlist.NetTransport", func(t *testing.T) memberlist.Transport { return netTransportT(t, "127.0.0.1") },
			func(b float64, _ int) bool { return b > 32<<10 }, "> 32 KiB (the control)"},
	}
	for _, tr := range transports {
		for _, size := range []int{1, 1400} {
			t.Run(fmt.Sprintf("%s/%dB", tr.name, size), func(t *testing.T) {
				x := tr.open(t)
				b := bytesPerDatagram(t, x, gossipTarget(t, x), size, 500)
				t.Logf("%s: %.0f bytes allocated per %d-byte datagram", tr.name, b, size)
				if !tr.check(b, size) {
					t.Fatalf("%.0f bytes allocated per %d-byte datagram, want %s", b, size, tr.want)
				}
			})
		}
	}
}

// TestGossipTransportPackets: datagrams arrive in order with their content
// and source, each in a slice of its own (reading the next never changes
// one already handed out); empty datagrams are dropped.
func TestGossipTransportPackets(t *testing.T) {
	testutil.LeakCheck(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			if host == "::1" {
				needIPv6(t)
			}
			g := listenGossipT(t, host)
			c, err := net.Dial("udp", gossipTarget(t, g))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var want [][]byte
			for i, size := range []int{1400, 1, 0, 9000, 3, 0, 2} {
				p := bytes.Repeat([]byte{byte(i + 1)}, size)
				if _, err := c.Write(p); err != nil {
					t.Fatal(err)
				}
				if size > 0 {
					want = append(want, p)
				}
			}
			var got []*memberlist.Packet
			for range want {
				select {
				case p := <-g.PacketCh():
					got = append(got, p)
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of %d datagrams delivered", len(got), len(want))
				}
			}
			from := c.LocalAddr().(*net.UDPAddr).AddrPort()
			for i, p := range got {
				if !bytes.Equal(p.Buf, want[i]) {
					t.Errorf("packet %d: %d bytes starting %x, want %d bytes of %x", i, len(p.Buf), p.Buf[:min(len(p.Buf), 4)], len(want[i]), want[i][0])
				}
				if cap(p.Buf) != len(p.Buf) {
					t.Errorf("packet %d: cap %d, len %d: not an exact-size copy", i, cap(p.Buf), len(p.Buf))
				}
				ap := p.From.(*net.UDPAddr).AddrPort()
				if netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) != from {
					t.Errorf("packet %d from %v, want %v", i, p.From, from)
				}
				if p.Timestamp.IsZero() {
					t.Errorf("packet %d: no timestamp", i)
				}
			}
		})
	}
}

// TestGossipTransportPeers: two transports reach each other as memberlist
// uses them: WriteTo/WriteToAddress leave from the gossip port, and
// DialTimeout/DialAddressTimeout (and any TCP client) arrive on StreamCh.
func TestGossipTransportPeers(t *testing.T) {
	testutil.LeakCheck(t)
	a, b := listenGossipT(t, "127.0.0.1"), listenGossipT(t, "127.0.0.1")
	toB := gossipTarget(t, b)

	if _, err := a.WriteTo([]byte("ping"), toB); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteToAddress([]byte("ping2"), memberlist.Address{Addr: toB, Name: "b"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ping", "ping2"} {
		select {
		case p := <-b.PacketCh():
			if string(p.Buf) != want || p.From.(*net.UDPAddr).Port != a.port() {
				t.Fatalf("got %q from %v, want %q from port %d", p.Buf, p.From, want, a.port())
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q not delivered", want)
		}
	}

	dials := []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"DialTimeout", func() (net.Conn, error) { return a.DialTimeout(toB, 5*time.Second) }},
		{"DialAddressTimeout", func() (net.Conn, error) {
			return a.DialAddressTimeout(memberlist.Address{Addr: toB, Name: "b"}, 5*time.Second)
		}},
		{"net.Dial", func() (net.Conn, error) { return net.Dial("tcp", toB) }},
	}
	for _, d := range dials {
		out, err := d.dial()
		if err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
		var in net.Conn
		select {
		case in = <-b.StreamCh():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: stream not delivered", d.name)
		}
		if _, err := out.Write([]byte(d.name)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(d.name))
		if _, err := io.ReadFull(in, got); err != nil || string(got) != d.name {
			t.Fatalf("%s: read %q, %v", d.name, got, err)
		}
		_ = out.Close()
		_ = in.Close()
	}
}

// TestGossipTransportShutdown: Shutdown returns even with a packet and a
// stream that nobody took, ends both loops (the leak check), frees the port
// for TCP and UDP, and may be called again.
func TestGossipTransportShutdown(t *testing.T) {
	testutil.LeakCheck(t)
	g, err := listenGossip("127.0.0.1", 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	to := gossipTarget(t, g)
	u, err := net.Dial("udp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	tc, err := net.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	for range 3 {
		if _, err := u.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1) // buffered: the goroutine never blocks on it
	go func() { done <- g.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if err := g.Shutdown(); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	ul, err := net.ListenPacket("udp", to)
	if err != nil {
		t.Fatalf("UDP port not freed: %v", err)
	}
	_ = ul.Close()
	tl, err := net.Listen("tcp", to)
	if err != nil {
		t.Fatalf("TCP port not freed: %v", err)
	}
	_ = tl.Close()
}

// TestGossipTransportBind: port 0 picks one port for TCP and UDP, and every
// bind (IPv4, IPv6, both wildcards) advertises what memberlist's
// NetTransport advertises for it, configured addresses included.
func TestGossipTransportBind(t *testing.T) {
	testutil.LeakCheck(t)
	for _, host := range []string{"127.0.0.1", "::1", "0.0.0.0", "::"} {
		t.Run(host, func(t *testing.T) {
			if host == "::1" || host == "::" {
				needIPv6(t)
			}
			g, nt := listenGossipT(t, host), netTransportT(t, host)
			if up := g.udp.LocalAddr().(*net.UDPAddr).Port; up != g.port() || up == 0 {
				t.Fatalf("UDP port %d, TCP port %d", up, g.port())
			}
			for _, adv := range []struct {
				ip   string
				port int
			}{{"", 0}, {"198.51.100.7", 7946}, {"::ffff:198.51.100.7", 7000}, {"2001:db8::7", 7946}, {"not-an-ip", 7946}} {
				gip, gport, gerr := g.FinalAdvertiseAddr(adv.ip, adv.port)
				nip, nport, nerr := nt.FinalAdvertiseAddr(adv.ip, adv.port)
				if (gerr != nil) != (nerr != nil) {
					t.Fatalf("advertise %q: error %v, NetTransport's %v", adv.ip, gerr, nerr)
				}
				if gerr != nil {
					continue
				}
				if adv.ip == "" { // each advertises its own bound port
					gport, nport = gport-g.port(), nport-nt.GetAutoBindPort()
				}
				if !bytes.Equal(gip, nip) || gport != nport {
					t.Fatalf("advertise %q: %v port %+d, NetTransport %v port %+d", adv.ip, gip, gport, nip, nport)
				}
			}
		})
	}
}

// TestGossipTransportBadBind: a bind address that is not an IP, or a port
// another socket holds, fails without leaving a socket or a goroutine.
func TestGossipTransportBadBind(t *testing.T) {
	testutil.LeakCheck(t)
	if _, err := listenGossip("localhost", 0, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("bind to a name: no error")
	}
	held, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.LocalAddr().(*net.UDPAddr).Port
	if _, err := listenGossip("127.0.0.1", port, slog.New(slog.DiscardHandler)); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind to a held UDP port: %v, want EADDRINUSE", err)
	}
	tl, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("TCP listener of the failed bind left open: %v", err)
	}
	_ = tl.Close()
}

// freeGossipPort is a port free for TCP and UDP on 127.0.0.1 a moment ago.
func freeGossipPort(t testing.TB) int {
	t.Helper()
	g, err := listenGossip("127.0.0.1", 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	port := g.port()
	_ = g.Shutdown()
	return port
}

// TestClusterOnOwnGossipTransport: coordinators on the production gossip
// path (no injected transport) form a cluster and report the address they
// advertise, for a bind of port 0 and of a wildcard with a configured
// advertise address.
func TestClusterOnOwnGossipTransport(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	var want []string // the coordinators start one after another
	coords := startCluster(t, m, 2, func(o *CoordinatorOptions) {
		_ = o.GossipTransport.Shutdown() // the fault transport is not used
		o.GossipTransport = nil
		o.GossipAddr = "127.0.0.1:0"
		if len(want) == 0 {
			p := strconv.Itoa(freeGossipPort(t))
			o.GossipAddr, o.GossipAdvertise = "0.0.0.0:"+p, "127.0.0.1:"+p
		}
		want = append(want, o.GossipAdvertise)
	})
	for i, c := range coords {
		ap, err := netip.ParseAddrPort(c.GossipAddr())
		if err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") || ap.Port() == 0 || (want[i] != "" && ap.String() != want[i]) {
			t.Fatalf("%s: gossip address %q (advertise option %q)", c.Name(), c.GossipAddr(), want[i])
		}
	}
}

// BenchmarkGossipTransportRead: datagrams/s and bytes/op a transport
// delivers while a sender floods its port (the sender shares the CPU).
func BenchmarkGossipTransportRead(b *testing.B) {
	transports := []struct {
		name string
		open func(b *testing.B) memberlist.Transport
	}{
		{"gossipNet", func(b *testing.B) memberlist.Transport { return listenGossipT(b, "127.0.0.1") }},
		{"NetTransport", func(b *testing.B) memberlist.Transport { return netTransportT(b, "127.0.0.1") }},
	}
	for _, tr := range transports {
		for _, size := range []int{1, 1400} {
			b.Run(fmt.Sprintf("%s/%dB", tr.name, size), func(b *testing.B) {
				x := tr.open(b)
				c, err := net.Dial("udp", gossipTarget(b, x))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				var stop atomic.Bool
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					p := make([]byte, size)
					for !stop.Load() {
						_, _ = c.Write(p)
					}
				}()
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for range b.N {
					<-x.PacketCh()
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "datagrams/s")
				b.StopTimer()
				stop.Store(true)
				wg.Wait()
			})
		}
	}
}
