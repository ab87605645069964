// Package latency holds the data path's stage histograms: fixed
// power-of-two buckets updated with atomic adds, one observation per batch,
// nothing allocated.
package latency

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Buckets is the number of buckets: bucket k (k < Buckets-1) counts
// durations up to 2^k µs (1 µs … 32.768 ms), the last one everything
// longer.
const Buckets = 17

// Histogram counts durations by bucket. The zero value is ready; safe for
// concurrent use.
type Histogram struct {
	counts [Buckets]atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
}

// bucket returns the bucket of d nanoseconds (d ≥ 0).
func bucket(d int64) int {
	if d <= 1000 {
		return 0
	}
	return min(bits.Len64(uint64(d-1)/1000), Buckets-1)
}

// Observe counts one duration of d nanoseconds. A negative d (a clock
// stepped backwards between the two readings) is ignored.
func (h *Histogram) Observe(d int64) {
	if d < 0 {
		return
	}
	h.counts[bucket(d)].Add(1)
	h.sum.Add(uint64(d))
}

// Snapshot returns the counts so far. Buckets are read one by one, so a
// snapshot taken while observations arrive may be off by those.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for k := range h.counts {
		s.Counts[k] = h.counts[k].Load()
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}

// Snapshot is a histogram's counts at one moment.
type Snapshot struct {
	Counts [Buckets]uint64 // per bucket, not cumulative
	Sum    time.Duration   // of every observation
}

// Bound returns bucket k's upper bound; the last bucket's is 0 (none).
func Bound(k int) time.Duration {
	if k >= Buckets-1 {
		return 0
	}
	return time.Microsecond << k
}

// Count returns the number of observations.
func (s Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Quantile returns the upper bound of the bucket that holds quantile q
// (0 < q ≤ 1) of the observations: the true value is at most that and more
// than half of it. It returns 0 without observations and -1 when the
// quantile lies in the overflow bucket.
func (s Snapshot) Quantile(q float64) time.Duration {
	n := s.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for k, c := range s.Counts {
		seen += c
		if seen >= rank {
			if k == Buckets-1 {
				return -1
			}
			return Bound(k)
		}
	}
	return -1
}

// Sub returns the observations made between snapshot o and s.
func (s Snapshot) Sub(o Snapshot) Snapshot {
	for k := range s.Counts {
		s.Counts[k] -= o.Counts[k]
	}
	s.Sum -= o.Sum
	return s
}

// start is the process's reference for Now (monotonic).
var start = time.Now()

// Now returns a monotonic clock reading in nanoseconds, for stage
// durations: one clock read, no allocation.
func Now() int64 { return int64(time.Since(start)) }
