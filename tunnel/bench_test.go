package tunnel

import (
	"bufio"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// BenchmarkLink measures one link between two managers over loopback:
// 1400-byte packets in batches of 32 from alpha to bravo, each buffer with
// the overlay's header room and tail room, so records are sealed in place.
// One op is one packet. It reports the throughput that arrived (Mbit/s,
// packets/s), the loss, the receive-buffer overflows of bravo's socket
// (SO_RXQ_OVFL) and of the whole host (/proc/net/snmp RcvbufErrors, which
// other processes add to), and allocations per packet (both ends run in
// this process, so receive-side allocations count too).
func BenchmarkLink(b *testing.B) { benchLink(b, 0, v4Loopback) }

// BenchmarkLinkWindowed is BenchmarkLink with at most 4096 packets in
// flight (sent but not yet delivered), as a congestion-controlled flow
// would keep: the sustainable rate without receive-buffer overflows.
func BenchmarkLinkWindowed(b *testing.B) { benchLink(b, 4096, v4Loopback) }

// BenchmarkLinkIPv6 is BenchmarkLink over ::1: the IPv6 socket's batched
// path (sendmmsg with UDP_SEGMENT, recvmmsg with UDP_GRO on AF_INET6).
func BenchmarkLinkIPv6(b *testing.B) { benchLink(b, 0, netip.IPv6Loopback()) }

// BenchmarkLinkWindowedIPv6 is BenchmarkLinkWindowed over ::1.
func BenchmarkLinkWindowedIPv6(b *testing.B) { benchLink(b, 4096, netip.IPv6Loopback()) }

var v4Loopback = netip.MustParseAddr("127.0.0.1")

func benchLink(b *testing.B, window int, lo netip.Addr) {
	testutil.LeakCheck(b)
	ca := newTestCA(b, "mesh")
	a, c := ca.node(b, "alpha", 1, 0, nil), ca.node(b, "bravo", 2, 0, nil)
	sig := newMemSignals()
	quiet := func(o *Options) { o.Logger, o.ListenAddr = nil, lo }
	ma := startManager(b, sig, a, quiet)
	mb := startManager(b, sig, c, quiet)
	ab, ba := mustLink(b, ma, c.peer), mustLink(b, mb, a.peer)
	if lo.Is6() {
		if st := ab.Status(); st.Remote.Addr.IsValid() && !st.Remote.Addr.Addr().Is6() {
			b.Fatalf("link not over IPv6: %v", st.Remote)
		}
	}
	var got atomic.Uint64
	ba.SetReceiver(func(bufs [][]byte, _ int) { got.Add(uint64(len(bufs))) })
	testutil.WaitFor(b, 20*time.Second, "connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	warm := 0
	testutil.WaitFor(b, 5*time.Second, "first packet delivered", func() bool {
		if got.Load() > 0 {
			return true
		}
		_, _ = ab.WriteBatch([][]byte{make([]byte, HeaderRoom+100, HeaderRoom+100+64)}, HeaderRoom)
		warm++
		return false
	})
	// Warm-up packets still in flight must not count as measured ones (the
	// first few may have been dropped before bravo had keys).
	testutil.Eventually(200*time.Millisecond, func() bool { return got.Load() >= uint64(warm) })

	ovflBefore := mb.Stats().SocketOverflows
	snmpBefore, snmpOK := udpRcvbufErrors()
	measureLink(b, ab, &got, window)
	b.ReportMetric(float64(mb.Stats().SocketOverflows-ovflBefore), "sock_ovfl")
	if snmpAfter, ok := udpRcvbufErrors(); ok && snmpOK {
		b.ReportMetric(float64(snmpAfter-snmpBefore), "host_RcvbufErrors")
	}
}

// udpRcvbufErrors reads the host's (network namespace's) UDP RcvbufErrors
// counters, IPv4 (/proc/net/snmp) plus IPv6 (/proc/net/snmp6).
func udpRcvbufErrors() (uint64, bool) {
	v4, ok := udp4RcvbufErrors()
	if !ok {
		return 0, false
	}
	return v4 + udp6RcvbufErrors(), true
}

// udp6RcvbufErrors reads Udp6RcvbufErrors from /proc/net/snmp6; 0 if the
// host has no IPv6.
func udp6RcvbufErrors() uint64 {
	b, err := os.ReadFile("/proc/net/snmp6")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Udp6RcvbufErrors" {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func udp4RcvbufErrors() (uint64, bool) {
	f, err := os.Open("/proc/net/snmp")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(fields) {
				v, err := strconv.ParseUint(fields[i], 10, 64)
				return v, err == nil
			}
		}
	}
	return 0, false
}

// measureLink sends b.N 1400-byte packets through ab in batches of 32,
// each buffer with header and tail room, at most window (0: any number)
// in flight by got, the count of packets delivered at the other end; it
// waits until nothing more arrives and reports Mbit/s, packets/s and
// loss%.
func measureLink(b *testing.B, ab *Link, got *atomic.Uint64, window int) {
	const size, batch, tailRoom = 1400, 32, 64
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, HeaderRoom+size, HeaderRoom+size+tailRoom)
	}
	base := got.Load()
	b.ReportAllocs()
	b.SetBytes(size)
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for sent < b.N {
		for window > 0 && sent-int(got.Load()-base) > window {
			runtime.Gosched()
		}
		n := min(batch, b.N-sent)
		if _, err := ab.WriteBatch(bufs[:n], HeaderRoom); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	// Let the receive side drain: wait until nothing more arrives.
	last, lastChange := got.Load(), time.Now()
	for got.Load()-base < uint64(sent) && time.Since(lastChange) < 200*time.Millisecond {
		time.Sleep(5 * time.Millisecond)
		if g := got.Load(); g != last {
			last, lastChange = g, time.Now()
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	recv := got.Load() - base
	secs := elapsed.Seconds()
	b.ReportMetric(float64(recv)*size*8/secs/1e6, "Mbit/s")
	b.ReportMetric(float64(recv)/secs, "packets/s")
	b.ReportMetric(100*(1-float64(recv)/float64(sent)), "loss%")
}
