package record

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// refWindow is the obvious replay window: a set of everything accepted and
// the highest number, for comparison with the ring.
type refWindow struct {
	seen map[uint64]bool
	top  uint64 // highest accepted + 1
}

func (w *refWindow) accept(seq uint64) bool {
	if w.top > seq && w.top-1-seq >= ReplayWindow {
		return false
	}
	if w.seen[seq] {
		return false
	}
	w.seen[seq] = true
	w.top = max(w.top, seq+1)
	return true
}

// TestReplayWindowMatchesModel feeds random walks (mostly forward, with
// reordering, duplicates, big jumps and stale numbers) to the ring and to
// the model and expects identical answers.
func TestReplayWindowMatchesModel(t *testing.T) {
	for seed := uint64(0); seed < 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		var w replayWindow
		ref := refWindow{seen: map[uint64]bool{}}
		var cur uint64
		for i := 0; i < 20000; i++ {
			var seq uint64
			switch r := rng.IntN(100); {
			case r < 60: // in order
				cur++
				seq = cur
			case r < 80: // reordered inside the window
				seq = cur - min(cur, uint64(rng.IntN(ReplayWindow)))
			case r < 90: // near the window's edge
				seq = cur - min(cur, uint64(ReplayWindow-3+rng.IntN(6)))
			case r < 95: // stale
				seq = cur - min(cur, uint64(rng.IntN(4*ReplayWindow)))
			case r < 99: // jump ahead
				cur += uint64(rng.IntN(3 * ReplayWindow))
				seq = cur
			default: // far jump, across many laps of the ring
				cur += uint64(rng.IntN(1 << 24))
				seq = cur
			}
			if seq >= RecordLimit {
				break
			}
			want := ref.accept(seq)
			if fresh := w.fresh(seq); fresh != want {
				t.Fatalf("seed %d step %d: fresh(%d) = %v, model says %v (top %d)", seed, i, seq, fresh, want, ref.top)
			}
			if got := w.accept(seq); got != want {
				t.Fatalf("seed %d step %d: accept(%d) = %v, model says %v (top %d)", seed, i, seq, got, want, ref.top)
			}
		}
	}
}

// TestReplayWindowConcurrent: many goroutines offer the same numbers (each
// number several times, in different orders); each is accepted once.
func TestReplayWindowConcurrent(t *testing.T) {
	var w replayWindow
	const n, goroutines = 3000, 4 // n < ReplayWindow: nothing may fall out
	var accepted [n]atomic.Int32
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for _, i := range rng.Perm(n) {
				if w.accept(uint64(i)) {
					accepted[i].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for i := range accepted {
		if c := accepted[i].Load(); c != 1 {
			t.Fatalf("sequence %d accepted %d times", i, c)
		}
	}
}

// TestReplayWindowConcurrentSliding: concurrent openers on a sliding
// window; whatever falls out, nothing is ever accepted twice.
func TestReplayWindowConcurrentSliding(t *testing.T) {
	var w replayWindow
	const n, goroutines = 40000, 4
	var accepted [n]atomic.Int32
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 2))
			for i := 0; i < n; i++ {
				// Mostly increasing, jittered by up to 2 windows.
				s := max(0, i-rng.IntN(2*ReplayWindow))
				if w.accept(uint64(s)) {
					accepted[s].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for i := range accepted {
		if c := accepted[i].Load(); c > 1 {
			t.Fatalf("sequence %d accepted %d times", i, c)
		}
	}
}
