package latency

import (
	"testing"
	"time"
)

func TestBucketBounds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0},
		{time.Microsecond, 0},
		{time.Microsecond + 1, 1},
		{2 * time.Microsecond, 1},
		{3 * time.Microsecond, 2},
		{100 * time.Microsecond, 7}, // ≤ 128 µs
		{128 * time.Microsecond, 7},
		{129 * time.Microsecond, 8},
		{32768 * time.Microsecond, 15},
		{32769 * time.Microsecond, 16},
		{time.Hour, 16},
	} {
		if got := bucket(int64(tc.d)); got != tc.want {
			t.Errorf("bucket(%v) = %d, want %d", tc.d, got, tc.want)
		}
		if k := bucket(int64(tc.d)); k < Buckets-1 && tc.d > Bound(k) {
			t.Errorf("%v above its bucket's bound %v", tc.d, Bound(k))
		}
	}
}

func TestQuantiles(t *testing.T) {
	var h Histogram
	for i := 0; i < 98; i++ {
		h.Observe(int64(50 * time.Microsecond)) // ≤ 64 µs
	}
	h.Observe(int64(300 * time.Microsecond)) // ≤ 512 µs
	h.Observe(int64(time.Second))            // overflow
	h.Observe(-1)                            // ignored
	s := h.Snapshot()
	if s.Count() != 100 {
		t.Fatalf("count %d, want 100", s.Count())
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 64 * time.Microsecond}, {0.98, 64 * time.Microsecond}, {0.99, 512 * time.Microsecond}, {1, -1}} {
		if got := s.Quantile(tc.q); got != tc.want {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if want := 98*50*time.Microsecond + 300*time.Microsecond + time.Second; s.Sum != want {
		t.Errorf("sum %v, want %v", s.Sum, want)
	}
	h.Observe(int64(50 * time.Microsecond))
	if d := h.Snapshot().Sub(s); d.Count() != 1 || d.Counts[6] != 1 || d.Sum != 50*time.Microsecond {
		t.Errorf("Sub = %+v, want the one observation", d)
	}
	if (Snapshot{}).Quantile(0.5) != 0 {
		t.Error("empty snapshot: quantile not 0")
	}
}

func TestObserveAllocatesNothing(t *testing.T) {
	var h Histogram
	start := Now()
	if n := testing.AllocsPerRun(100, func() { h.Observe(Now() - start) }); n != 0 {
		t.Fatalf("%v allocations per Observe", n)
	}
}
