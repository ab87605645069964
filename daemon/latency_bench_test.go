package daemon

import (
	"slices"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/latency"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay/overlaytest"
)

// onePacketSize is the IP packet size of BenchmarkOnePacket: a small
// datagram, as a call's audio frame or a game update is.
const onePacketSize = 128

// onePacketLost is how long a round trip may take before it counts as lost.
const onePacketLost = time.Second

// BenchmarkOnePacket measures one-packet latency through the whole path, one
// packet in flight (ping-pong): a UDP packet injected into alpha's TUN
// double goes through overlay alpha, a real link over 127.0.0.1 and overlay
// bravo into bravo's TUN double, whose write answers at once (in the
// writer's goroutine, as the kernel answers a ping inside the TUN write) with
// a packet back the same way; the op ends when alpha's TUN double gets it.
// Both nodes share the process and its 2 cores, so each hop's wake-up is a
// goroutine's, not a process's.
//
// It reports the round trip's p50 and p99 (µs, exact: sorted samples) and,
// per direction, the mean of each stage the data path measures itself
// (tunnel.Latency, overlay.Latency; both nodes added): rx-wake (kernel
// receive → reader running), rx-open, rx-deliver, tx-seal, tx-send,
// out-route, tun-write.
//
//	go test -run '^$' -bench BenchmarkOnePacket -benchtime 20000x ./daemon/
func BenchmarkOnePacket(b *testing.B) {
	testutil.LeakCheck(b)
	back := make(chan struct{}, 1)
	var tb *overlaytest.TUN
	var reply []byte
	ta := overlaytest.NewTUN(overlaytest.TUNOptions{Name: "alpha0", OnWrite: func([][]byte, int) {
		select {
		case back <- struct{}{}:
		default:
		}
	}})
	tb = overlaytest.NewTUN(overlaytest.TUNOptions{Name: "bravo0", OnWrite: func([][]byte, int) {
		_ = tb.Inject(reply) // os.ErrClosed at the end only
	}})
	pp := startPathPair(b, ta, tb)
	ping := pp.packet(false, onePacketSize)
	reply = pp.packet(true, onePacketSize)
	timer := time.NewTimer(onePacketLost)
	defer timer.Stop()
	// round sends one ping and waits for its reply; false if it was lost.
	round := func(wait time.Duration) bool {
		if err := ta.Inject(ping); err != nil {
			b.Fatal(err)
		}
		timer.Reset(wait)
		select {
		case <-back:
			return true
		case <-timer.C:
			return false
		}
	}
	// Bravo may get its data keys a moment after alpha: ping until a reply
	// comes back, then warm up (conntrack, pools).
	testutil.WaitFor(b, 10*time.Second, "first reply", func() bool { return round(50 * time.Millisecond) })
	for range 200 {
		round(onePacketLost)
	}
	rtts := make([]time.Duration, 0, b.N)
	lost := 0
	beforeA, beforeB := pp.ma.Latency(), pp.mb.Latency()
	oBeforeA, oBeforeB := pp.oa.Latency(), pp.ob.Latency()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if !round(onePacketLost) {
			lost++
			continue
		}
		rtts = append(rtts, time.Since(start))
	}
	b.StopTimer()
	if len(rtts) == 0 {
		b.Fatal("every round trip was lost")
	}
	slices.Sort(rtts)
	q := func(p float64) float64 { return float64(rtts[int(p*float64(len(rtts)-1))]) / 1e3 }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(100*float64(lost)/float64(b.N), "loss%")
	afterA, afterB := pp.ma.Latency(), pp.mb.Latency()
	oAfterA, oAfterB := pp.oa.Latency(), pp.ob.Latency()
	mean := func(name string, s ...latency.Snapshot) {
		var sum time.Duration
		var n uint64
		for _, x := range s {
			sum += x.Sum
			n += x.Count()
		}
		if n > 0 {
			b.ReportMetric(float64(sum)/float64(n)/1e3, name+"-µs")
		}
	}
	mean("rx-wake", afterA.RxWake.Sub(beforeA.RxWake), afterB.RxWake.Sub(beforeB.RxWake))
	mean("rx-open", afterA.RxOpen.Sub(beforeA.RxOpen), afterB.RxOpen.Sub(beforeB.RxOpen))
	mean("rx-deliver", afterA.RxDeliver.Sub(beforeA.RxDeliver), afterB.RxDeliver.Sub(beforeB.RxDeliver))
	mean("tx-seal", afterA.TxSeal.Sub(beforeA.TxSeal), afterB.TxSeal.Sub(beforeB.TxSeal))
	mean("tx-send", afterA.TxSend.Sub(beforeA.TxSend), afterB.TxSend.Sub(beforeB.TxSend))
	mean("out-route", oAfterA.OutRoute.Sub(oBeforeA.OutRoute), oAfterB.OutRoute.Sub(oBeforeB.OutRoute))
	mean("tun-write", oAfterA.InWrite.Sub(oBeforeA.InWrite), oAfterB.InWrite.Sub(oBeforeB.InWrite))
}
