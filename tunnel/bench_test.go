package tunnel

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// BenchmarkLink measures one link between two managers over loopback:
// 1400-byte packets in batches of 32 from alpha to bravo. It reports the
// throughput that arrived (Mbit/s, packets/s), the loss, and allocations
// per packet sent.
func BenchmarkLink(b *testing.B) {
	testutil.LeakCheck(b)
	ca := newTestCA(b, "mesh")
	a, c := ca.node(b, "alpha", 1, 0, nil), ca.node(b, "bravo", 2, 0, nil)
	sig := newMemSignals()
	quiet := func(o *Options) { o.Logger = nil }
	ma := startManager(b, sig, a, quiet)
	mb := startManager(b, sig, c, quiet)
	ab, ba := mustLink(b, ma, c.peer), mustLink(b, mb, a.peer)
	var got atomic.Uint64
	ba.SetReceiver(func(bufs [][]byte, _ int) { got.Add(uint64(len(bufs))) })
	testutil.WaitFor(b, 20*time.Second, "connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})

	const size, batch = 1400, 32
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, HeaderRoom+size)
	}
	b.ReportAllocs()
	b.SetBytes(size)
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for sent < b.N {
		n := min(batch, b.N-sent)
		if _, err := ab.WriteBatch(bufs[:n], HeaderRoom); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	// Let the receive side drain: wait until nothing more arrives.
	last, lastChange := got.Load(), time.Now()
	for got.Load() < uint64(sent) && time.Since(lastChange) < 200*time.Millisecond {
		time.Sleep(5 * time.Millisecond)
		if g := got.Load(); g != last {
			last, lastChange = g, time.Now()
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	recv := got.Load()
	secs := elapsed.Seconds()
	b.ReportMetric(float64(recv)*size*8/secs/1e6, "Mbit/s")
	b.ReportMetric(float64(recv)/secs, "packets/s")
	b.ReportMetric(100*(1-float64(recv)/float64(sent)), "loss%")
}
