package overlaytest

import (
	"os"
	"sync"
	"sync/atomic"

	"github.com/meshd/meshd/overlay"
	"golang.zx2c4.com/wireguard/tun"
)

// TUNOptions configure NewTUN.
type TUNOptions struct {
	// Name is what Name returns; empty means "tuntest".
	Name string
	// MTU is what MTU returns; zero means overlay.DefaultMTU.
	MTU int
	// BatchSize is what BatchSize returns; zero means 64.
	BatchSize int
	// OnWrite, if not nil, receives every Write's packets (bufs[i][offset:])
	// instead of Written. It runs in the writer's goroutine and borrows bufs
	// for the call only. Benchmarks count packets here without copying.
	OnWrite func(bufs [][]byte, offset int)
	// WriteQueue is Written's capacity; zero means 1024. When it is full,
	// written packets are dropped and counted (WriteDropped) rather than
	// blocking the overlay.
	WriteQueue int
}

// TUN is a channel-backed tun.Device with batches. Packets given to Inject
// come out of Read (what the host would send into the overlay); packets the
// overlay writes come out of Written (what the host would receive).
type TUN struct {
	opts TUNOptions

	injectMu sync.Mutex // one Inject at a time
	in       chan [][]byte
	ack      chan struct{}

	readMu  sync.Mutex // guards pending
	pending [][]byte

	out          chan []byte
	writeDropped atomic.Uint64
	written      atomic.Uint64

	events    chan tun.Event
	closed    chan struct{}
	closeOnce sync.Once
}

// NewTUN returns a TUN that reports EventUp.
func NewTUN(opts TUNOptions) *TUN {
	if opts.Name == "" {
		opts.Name = "tuntest"
	}
	if opts.MTU == 0 {
		opts.MTU = overlay.DefaultMTU
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = 64
	}
	if opts.WriteQueue == 0 {
		opts.WriteQueue = 1024
	}
	t := &TUN{
		opts:   opts,
		in:     make(chan [][]byte),
		ack:    make(chan struct{}),
		out:    make(chan []byte, opts.WriteQueue),
		events: make(chan tun.Event, 1),
		closed: make(chan struct{}),
	}
	t.events <- tun.EventUp
	return t
}

// Inject makes pkts readable and returns once Read has copied all of them
// (so pkts may be reused at once), or os.ErrClosed if the device closed
// first. Reads hand out at most the reader's batch size per call.
func (t *TUN) Inject(pkts ...[]byte) error {
	if len(pkts) == 0 {
		return nil
	}
	t.injectMu.Lock()
	defer t.injectMu.Unlock()
	select {
	case t.in <- pkts:
	case <-t.closed:
		return os.ErrClosed
	}
	select {
	case <-t.ack:
		return nil
	case <-t.closed:
		return os.ErrClosed
	}
}

// Written returns the channel of copies of the packets the overlay wrote
// (unless OnWrite is set).
func (t *TUN) Written() <-chan []byte { return t.out }

// WriteCount returns how many packets were written in all.
func (t *TUN) WriteCount() uint64 { return t.written.Load() }

// WriteDropped returns how many written packets were lost because Written
// was full.
func (t *TUN) WriteDropped() uint64 { return t.writeDropped.Load() }

// File implements tun.Device.
func (t *TUN) File() *os.File { return nil }

// Read implements tun.Device.
func (t *TUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	t.readMu.Lock()
	defer t.readMu.Unlock()
	if t.pending == nil {
		select {
		case <-t.closed:
			return 0, os.ErrClosed
		case p := <-t.in:
			t.pending = p
		}
	}
	n := 0
	for n < len(bufs) && len(t.pending) > 0 {
		sizes[n] = copy(bufs[n][offset:], t.pending[0])
		t.pending = t.pending[1:]
		n++
	}
	if len(t.pending) == 0 {
		t.pending = nil
		select {
		case t.ack <- struct{}{}:
		case <-t.closed:
		}
	}
	return n, nil
}

// Write implements tun.Device.
func (t *TUN) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-t.closed:
		return 0, os.ErrClosed
	default:
	}
	t.written.Add(uint64(len(bufs)))
	if t.opts.OnWrite != nil {
		t.opts.OnWrite(bufs, offset)
		return len(bufs), nil
	}
	for _, b := range bufs {
		c := append([]byte(nil), b[offset:]...)
		select {
		case t.out <- c:
		default:
			t.writeDropped.Add(1)
		}
	}
	return len(bufs), nil
}

// MTU implements tun.Device.
func (t *TUN) MTU() (int, error) { return t.opts.MTU, nil }

// Name implements tun.Device.
func (t *TUN) Name() (string, error) { return t.opts.Name, nil }

// Events implements tun.Device.
func (t *TUN) Events() <-chan tun.Event { return t.events }

// BatchSize implements tun.Device.
func (t *TUN) BatchSize() int { return t.opts.BatchSize }

// Close implements tun.Device. Idempotent.
func (t *TUN) Close() error {
	t.closeOnce.Do(func() {
		close(t.closed)
		close(t.events)
	})
	return nil
}

var _ tun.Device = (*TUN)(nil)
