package record

import "sync/atomic"

// The replay window is a ring of slots, each a 32-bit bitmap of one block
// of 32 consecutive sequence numbers plus the block's generation (which lap
// of the ring it belongs to) in the upper 32 bits, so a slot's bitmap and
// owner change together in one atomic word. Openers on several goroutines
// check and mark sequence numbers with loads and CAS, never a lock.
//
// Invariants that make it replay-safe whatever the interleaving:
//   - a slot's generation only grows (a CAS installs a larger one or sets a
//     bit under the same one);
//   - a bit is set only by the CAS that accepts its sequence number, and is
//     cleared only by moving the slot to a larger generation, after which
//     every sequence number of the older generations is refused.
//
// So each sequence number is accepted at most once. The window (how far
// behind the highest accepted number a record may be) is ReplayWindow:
// one slot short of the ring, so the slot of the oldest block in the window
// is never claimed by the newest (RFC 6479's layout, as in wireguard-go's
// replay.Filter, which is single-goroutine).
const (
	replaySlotBits = 32
	replaySlots    = 128 // power of two
	replayBlock    = replaySlotBits * replaySlots

	// ReplayWindow is how many sequence numbers behind the highest accepted
	// one a record may arrive and still be accepted (once).
	ReplayWindow = (replaySlots - 1) * replaySlotBits
)

// Generations must fit the upper half of a slot for every sequence number
// an opener lets through (seq < RecordLimit).
const _ = uint32((RecordLimit - 1) / replayBlock)

// replayWindow is the anti-replay state of one receive key. The zero value
// is empty and ready. Safe for concurrent use.
type replayWindow struct {
	top   atomic.Uint64 // highest accepted sequence number + 1; 0: none yet
	slots [replaySlots]atomic.Uint64
}

func replaySlot(seq uint64) (idx int, gen, bit uint64) {
	block := seq / replaySlotBits
	return int(block % replaySlots), block / replaySlots, 1 << (seq % replaySlotBits)
}

// tooOld reports whether seq lies behind the window.
func (w *replayWindow) tooOld(seq uint64) bool {
	top := w.top.Load()
	return top > seq && top-1-seq >= ReplayWindow
}

// fresh reports, without changing anything, whether seq could be accepted:
// inside the window and not seen. Openers call it before spending an AEAD
// operation; accept has the final word.
func (w *replayWindow) fresh(seq uint64) bool {
	if w.tooOld(seq) {
		return false
	}
	idx, gen, bit := replaySlot(seq)
	v := w.slots[idx].Load()
	g := v >> 32
	return g < gen || (g == gen && v&bit == 0)
}

// accept marks seq as seen and reports whether it was not seen before and
// is still inside the window. Call it only for authenticated records, so
// forgeries cannot move the window.
func (w *replayWindow) accept(seq uint64) bool {
	if w.tooOld(seq) {
		return false
	}
	idx, gen, bit := replaySlot(seq)
	s := &w.slots[idx]
	for {
		v := s.Load()
		var nv uint64
		switch g := v >> 32; {
		case g > gen: // a newer lap owns the slot: seq fell out of the window
			return false
		case g == gen:
			if v&bit != 0 {
				return false
			}
			nv = v | bit
		default: // first record of this block in this lap: the old bits are stale
			nv = gen<<32 | bit
		}
		if s.CompareAndSwap(v, nv) {
			break
		}
	}
	for {
		top := w.top.Load()
		if seq < top || w.top.CompareAndSwap(top, seq+1) {
			return true
		}
	}
}
