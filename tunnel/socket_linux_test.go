//go:build linux

package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/meshd/meshd/internal/testutil"
)

func listenFast(t *testing.T, network, addr string) *fastConn {
	t.Helper()
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := net.ListenUDP(network, ua)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	f, err := newFastConn(uc, 1<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = uc.Close() })
	return f
}

// TestFastSocketBatches: records of mixed sizes sent in one call come out
// as the same datagrams, in order, whether the receiver coalesces (UDP_GRO)
// or not, and whether the sender segments (UDP_SEGMENT) or not.
func TestFastSocketBatches(t *testing.T) {
	sizes := []int{1400, 1400, 1400, 700, 1400, 1400, 90, 90, 90, 90, 1, 1600, 1600}
	for i := 0; i < 150; i++ { // more than a GSO message and a receive batch hold
		sizes = append(sizes, 1200)
	}
	for _, tc := range []struct {
		name         string
		network, lo  string
		gso, gro     bool
		receiveBatch int
	}{
		{"v4 gso+gro", "udp4", "127.0.0.1:0", true, true, rxBatchSize},
		{"v4 gso, no gro", "udp4", "127.0.0.1:0", true, false, rxBatchSize},
		{"v4 plain", "udp4", "127.0.0.1:0", false, false, 7},
		{"v4 gro, small batches", "udp4", "127.0.0.1:0", true, true, 5},
		{"v6 gso+gro", "udp6", "[::1]:0", true, true, rxBatchSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, rx := listenFast(t, tc.network, tc.lo), listenFast(t, tc.network, tc.lo)
			if !tx.gso.Load() || !rx.gro {
				t.Skip("this kernel lacks UDP_SEGMENT or UDP_GRO")
			}
			tx.gso.Store(tc.gso)
			if !tc.gro {
				_ = rx.rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0) })
				rx.gro = false
			}
			dst := rx.conn.LocalAddr().(*net.UDPAddr).AddrPort()
			src := tx.conn.LocalAddr().(*net.UDPAddr).AddrPort()
			recs := make([][]byte, len(sizes))
			for i, n := range sizes {
				recs[i] = bytes.Repeat([]byte{byte(i)}, n)
				copy(recs[i], fmt.Sprintf("%03d", i))
			}
			var scratch fastTx
			if err := tx.send(&scratch, recs, dst); err != nil {
				t.Fatal(err)
			}
			batch := newRxBatch(tc.receiveBatch)
			frx := rx.newRx(len(batch.bufs))
			got := 0
			for got < len(recs) {
				n, err := rx.readBatch(frx, batch)
				if err != nil {
					t.Fatal(err)
				}
				for i := 0; i < n; i++ {
					if batch.srcs[i] != src {
						t.Fatalf("datagram %d from %v, want %v", got, batch.srcs[i], src)
					}
					d := batch.recvViews[i][:batch.sizes[i]]
					if !bytes.Equal(d, recs[got]) {
						t.Fatalf("datagram %d: %d bytes starting %q, want %d bytes starting %q",
							got, len(d), d[:min(3, len(d))], len(recs[got]), recs[got][:min(3, len(recs[got]))])
					}
					got++
				}
			}
			if o := rx.overflows(); o != 0 {
				t.Errorf("socket overflows = %d", o)
			}
		})
	}
}

// TestFastSocketFamilies: an IPv4 socket refuses IPv6 destinations; an
// IPv6 socket reaches IPv4 ones v4-mapped only when dual-stack.
func TestFastSocketFamilies(t *testing.T) {
	v4 := listenFast(t, "udp4", "127.0.0.1:0")
	var scratch fastTx
	err := v4.send(&scratch, [][]byte{{1}}, netip.MustParseAddrPort("[::1]:9"))
	if err != errWrongFamily {
		t.Fatalf("v4 socket sending to ::1: %v, want errWrongFamily", err)
	}
}

func TestOpenSocketsDualStack(t *testing.T) {
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		t.Skipf("no IPv6 here: %v", err)
	} else {
		_ = c.Close()
	}
	ss, err := openSockets(&Options{ListenAddr: netip.IPv6Unspecified()})
	if err != nil {
		t.Fatal(err)
	}
	defer ss.close()
	if len(ss.socks) != 2 || ss.v4 == ss.v6 || ss.v4 == nil || ss.v6 == nil {
		t.Fatalf("want one socket per family, got %d", len(ss.socks))
	}
	p4 := ss.v4.fast.conn.LocalAddr().(*net.UDPAddr)
	p6 := ss.v6.fast.conn.LocalAddr().(*net.UDPAddr)
	if p4.Port != p6.Port || ss.local.Port != p4.Port || !ss.local.IP.IsUnspecified() {
		t.Fatalf("ports differ: v4 %v v6 %v reported %v", p4, p6, ss.local)
	}
	if ss.v4.fast.v6 || !ss.v6.fast.v6 || ss.v4.slot == ss.v6.slot {
		t.Fatalf("families or slots wrong: v4 is v6=%v slot %d, v6 is v6=%v slot %d", ss.v4.fast.v6, ss.v4.slot, ss.v6.fast.v6, ss.v6.slot)
	}
	// Each family is served by its own socket.
	for _, tc := range []struct {
		s  *sock
		to string
	}{{ss.v4, "127.0.0.1"}, {ss.v6, "::1"}} {
		peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(tc.to)})
		if err != nil {
			t.Fatal(err)
		}
		if got := ss.forDst(peer.LocalAddr().(*net.UDPAddr).AddrPort()); got != tc.s {
			t.Errorf("forDst(%s) picked the wrong socket", tc.to)
		}
		if _, err := ss.writeTo([]byte("hi"), peer.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
			t.Errorf("write to %s: %v", tc.to, err)
		}
		buf := make([]byte, 16)
		n, from, err := peer.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "hi" || int(from.Port()) != p4.Port {
			t.Errorf("peer on %s read %q from %v: %v", tc.to, buf[:n], from, err)
		}
		_ = peer.Close()
	}
}

// TestDualStackWithoutIPv6: on a host whose kernel has no IPv6 sockets
// (ipv6.disable=1), a dual-stack bind starts on IPv4 alone, says so once at
// info level, and offers IPv4 candidates only.
func TestDualStackWithoutIPv6(t *testing.T) {
	noV6 := func(network string, laddr *net.UDPAddr) (*net.UDPConn, error) {
		if network == "udp6" {
			return nil, &net.OpError{Op: "listen", Net: network, Addr: laddr, Err: os.NewSyscallError("socket", syscall.EAFNOSUPPORT)}
		}
		return net.ListenUDP(network, laddr)
	}
	ss, err := openSockets(&Options{ListenAddr: netip.IPv6Unspecified(), listenUDP: noV6})
	if err != nil {
		t.Fatalf("dual-stack bind without IPv6: %v", err)
	}
	if len(ss.socks) != 1 || ss.v4 == nil || ss.v6 != nil || ss.noV6 == nil || !ss.local.IP.Equal(net.IPv4zero) {
		t.Fatalf("want the IPv4 socket alone (and why): %d sockets, v6 %v, local %v, noV6 %v", len(ss.socks), ss.v6 != nil, ss.local, ss.noV6)
	}
	if _, err := ss.writeTo([]byte("x"), netip.MustParseAddrPort("[::1]:9")); !errors.Is(err, errWrongFamily) {
		t.Errorf("sending to ::1 without an IPv6 socket: %v, want errWrongFamily", err)
	}
	ss.close()

	testutil.LeakCheck(t)
	ca := newTestCA(t, "mesh")
	a := ca.node(t, "alpha", 1, 0, nil)
	sink := &logSink{}
	m := startManager(t, newMemSignals(), a, func(o *Options) {
		o.ListenAddr, o.listenUDP, o.Logger = netip.IPv6Unspecified(), noV6, slog.New(sink)
	})
	v4, v6, why := m.Families()
	if !v4 || v6 || why == nil {
		t.Errorf("Families() = %v, %v, %v; want IPv4 only, with the reason", v4, v6, why)
	}
	if n := sink.count(slog.LevelInfo, "this host has no IPv6; links use IPv4 only", "", ""); n != 1 {
		t.Errorf("logged the fallback %d times, want once", n)
	}
}

// TestIPv6SocketPrefersStableSource: the IPv6 socket asks the kernel for
// stable (public) source addresses, so checks leave from the address
// offered as the host candidate rather than a temporary one.
func TestIPv6SocketPrefersStableSource(t *testing.T) {
	f := listenFast(t, "udp6", "[::]:0")
	var v int
	var err error
	_ = f.rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_ADDR_PREFERENCES) })
	if err != nil || v&ipv6PreferSrcPublic == 0 {
		t.Fatalf("IPV6_ADDR_PREFERENCES = %#x (%v), want IPV6_PREFER_SRC_PUBLIC", v, err)
	}
}
