package record

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Limits of one key. Defaults follow the AEAD usage limits of RFC 8446
// section 5.5 and RFC 9147 section 4.5.3 for MTU-sized records.
const (
	// RecordLimit is the most records one send key seals; SealInPlace
	// refuses the next with ErrRecordLimit. Openers refuse sequence numbers
	// at or beyond it. 2^32 records of 1.4 KB keep AES-GCM's
	// distinguishing advantage near 2^-49.
	RecordLimit = 1 << 32
	// AuthFailureLimit is the number of records failing authentication under
	// one receive key after which NeedsRekey reports true (RFC 9147's
	// integrity limit for AES-GCM and ChaCha20-Poly1305 is 2^36).
	AuthFailureLimit = 1 << 36

	// DefaultRekeyAfterRecords is the default Options.RekeyAfterRecords:
	// 2^28 records of 1.4 KB is what RFC 9147's AES-GCM confidentiality
	// limit (2^24.5 full-size records) allows, about 4.5 minutes at 1 M
	// packets/s; RecordLimit leaves 15 times that for the handshake.
	DefaultRekeyAfterRecords = 1 << 28
	// DefaultRekeyAfterTime is the default Options.RekeyAfterTime; it bounds
	// how much traffic one compromised key exposes.
	DefaultRekeyAfterTime = 10 * time.Minute
	// DefaultOverlap is the default Options.Overlap: long enough for the
	// peer's side of the handshake to finish through DTLS retransmissions
	// (1+2+4+8 s) and for stragglers to drain.
	DefaultOverlap = 30 * time.Second
)

// Options tune a Session. The zero value means all defaults.
type Options struct {
	// Overlap is how long after Rekey the receive side still accepts
	// records of the previous epoch; after it they get ErrOldEpoch. Zero
	// means DefaultOverlap.
	Overlap time.Duration
	// RekeyAfterRecords is the number of records sealed under one send key
	// after which NeedsRekey reports true. Zero means
	// DefaultRekeyAfterRecords; at most RecordLimit.
	RekeyAfterRecords uint64
	// RekeyAfterTime is the age of the keys after which NeedsRekey reports
	// true. Zero means DefaultRekeyAfterTime.
	RekeyAfterTime time.Duration
	// Now returns the current time, or nil for time.Now. Tests inject a
	// clock; it is called on Rekey, NeedsRekey and Info, and when opening
	// a record of the previous epoch, never for current-epoch records.
	Now func() time.Time
}

// withDefaults validates o and fills in defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Overlap < 0 || o.RekeyAfterTime < 0 {
		return o, fmt.Errorf("record: negative duration in Options (overlap %v, rekey after %v)", o.Overlap, o.RekeyAfterTime)
	}
	if o.RekeyAfterRecords > RecordLimit {
		return o, fmt.Errorf("record: RekeyAfterRecords %d exceeds RecordLimit %d", o.RekeyAfterRecords, uint64(RecordLimit))
	}
	if o.Overlap == 0 {
		o.Overlap = DefaultOverlap
	}
	if o.RekeyAfterRecords == 0 {
		o.RekeyAfterRecords = DefaultRekeyAfterRecords
	}
	if o.RekeyAfterTime == 0 {
		o.RekeyAfterTime = DefaultRekeyAfterTime
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// Session is the record state of one peer link: the send key of the
// current epoch, and the receive keys of the current and (for Overlap after
// a rekey) the previous epoch. Sealers and Openers read it through atomic
// pointers and never lock; Rekey and Close swap whole states in. Safe for
// concurrent use.
type Session struct {
	// Immutable after NewSession.
	opts Options

	// Read by the hot paths with atomic loads; stored only under mu. nil
	// after Close. The states they point to are immutable except for
	// their atomic counters and replay windows.
	send atomic.Pointer[sendState]
	recv atomic.Pointer[recvKeys]

	// mu serializes Rekey and Close (the control plane); the hot paths
	// never take it.
	mu sync.Mutex
}

// sendState is the send key of one epoch.
type sendState struct {
	direction
	cipher    Cipher
	epoch     uint16
	installed time.Time
	next      atomic.Uint64 // next sequence number to hand out
}

// recvState is the receive key of one epoch.
type recvState struct {
	direction
	epoch        uint16
	window       replayWindow
	authFailures atomic.Uint64
}

// recvKeys is the set of receive keys an Opener consults. Immutable once
// published; Rekey publishes a new one.
type recvKeys struct {
	cur       *recvState
	prev      *recvState // nil: none
	prevUntil time.Time  // prev is refused after this instant
}

// NewSession returns a Session holding k (from Derive) for its first epoch.
// k must not have been given to another Session (ErrKeysUsed).
func NewSession(k *Keys, opts Options) (*Session, error) {
	if k == nil {
		return nil, fmt.Errorf("%w: nil keys", ErrCipher)
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if !k.used.CompareAndSwap(false, true) {
		return nil, ErrKeysUsed
	}
	s := &Session{opts: o}
	s.send.Store(newSendState(k, o.Now()))
	s.recv.Store(&recvKeys{cur: &recvState{direction: k.recv, epoch: k.epoch}})
	return s, nil
}

func newSendState(k *Keys, now time.Time) *sendState {
	return &sendState{direction: k.send, cipher: k.cipher, epoch: k.epoch, installed: now}
}

// Epoch returns the current epoch (0 after Close).
func (s *Session) Epoch() uint16 {
	if st := s.send.Load(); st != nil {
		return st.epoch
	}
	return 0
}

// NextEpoch returns the epoch the next Rekey's keys should be derived for
// (0 after Close). Both peers compute it from the same current epoch.
func (s *Session) NextEpoch() uint16 {
	if st := s.send.Load(); st != nil {
		return NextEpoch(st.epoch)
	}
	return 0
}

// Rekey installs the keys of a new handshake. k's epoch must be ahead of
// the current one (normally NextEpoch). Sealing switches to k at once;
// opening accepts k's epoch at once and the old current epoch until
// Options.Overlap from now; an epoch older than that is dropped now.
func (s *Session) Rekey(k *Keys) error {
	if k == nil {
		return fmt.Errorf("%w: nil keys", ErrCipher)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.recv.Load()
	if keys == nil {
		return ErrClosed
	}
	if d := epochDistance(keys.cur.epoch, k.epoch); d == 0 || d >= epochHalf {
		return fmt.Errorf("%w: rekey to epoch %#04x from %#04x does not move forward", ErrEpoch, k.epoch, keys.cur.epoch)
	}
	if !k.used.CompareAndSwap(false, true) {
		return ErrKeysUsed
	}
	now := s.opts.Now()
	// Receive first: once records go out under the new epoch, its receive
	// key is already there for the peer's answers.
	s.recv.Store(&recvKeys{
		cur:       &recvState{direction: k.recv, epoch: k.epoch},
		prev:      keys.cur,
		prevUntil: now.Add(s.opts.Overlap),
	})
	s.send.Store(newSendState(k, now))
	return nil
}

// NeedsRekey reports whether the link should run a new handshake: the send
// key has sealed Options.RekeyAfterRecords records, or the keys are
// Options.RekeyAfterTime old, or AuthFailureLimit records failed
// authentication under the current receive key. False after Close.
func (s *Session) NeedsRekey() bool {
	st := s.send.Load()
	keys := s.recv.Load()
	if st == nil || keys == nil {
		return false
	}
	return st.next.Load() >= s.opts.RekeyAfterRecords ||
		s.opts.Now().Sub(st.installed) >= s.opts.RekeyAfterTime ||
		keys.cur.authFailures.Load() >= AuthFailureLimit
}

// Info is a snapshot of a Session for status output.
type Info struct {
	Cipher        Cipher        // cipher of the current keys
	Epoch         uint16        // current epoch (send and receive)
	Sealed        uint64        // records sealed under the current send key (at most RecordLimit)
	Age           time.Duration // since the current keys were installed
	PreviousEpoch uint16        // previous epoch still known to the receive side; 0: none
	PreviousUntil time.Time     // when PreviousEpoch stops being accepted
	AuthFailures  uint64        // records that failed authentication under the current receive key
}

// Info returns a snapshot of the session, or ErrClosed.
func (s *Session) Info() (Info, error) {
	st := s.send.Load()
	keys := s.recv.Load()
	if st == nil || keys == nil {
		return Info{}, ErrClosed
	}
	in := Info{
		Cipher:       st.cipher,
		Epoch:        st.epoch,
		Sealed:       min(st.next.Load(), RecordLimit),
		Age:          s.opts.Now().Sub(st.installed),
		AuthFailures: keys.cur.authFailures.Load(),
	}
	if keys.prev != nil {
		in.PreviousEpoch, in.PreviousUntil = keys.prev.epoch, keys.prevUntil
	}
	return in, nil
}

// Close drops the keys: later seals and opens fail with ErrClosed. Records
// being sealed or opened concurrently finish with the keys they loaded.
// Idempotent.
func (s *Session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.send.Store(nil)
	s.recv.Store(nil)
}
