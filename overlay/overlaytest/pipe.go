package overlaytest

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/meshd/meshd/overlay"
)

// PipeOptions configure Pipe.
type PipeOptions struct {
	// Async delivers through a bounded queue and one goroutine per
	// direction, as a network would: WriteBatch returns once the packets are
	// queued and a full queue drops them (counted). Use it when both ends may
	// answer inline (a netstack TUN replies from inside Write), which with
	// direct calls could make each side wait for the other. False: WriteBatch
	// calls the other side's receiver itself, synchronously (no goroutines;
	// what benchmarks want).
	Async bool
	// QueueLen is the number of batches an Async direction holds; zero means
	// 32.
	QueueLen int
	// MaxBatch is the most packets delivered in one receiver call; longer
	// writes are split. Zero means 64.
	MaxBatch int
	// BufSize is the size of each receive buffer, header room included;
	// zero means 4096. Larger packets are dropped (counted).
	BufSize int
}

// Conn is one end of a Pipe. It satisfies overlay.PeerConn. What one end
// writes is copied into the other end's receive buffers (as a real link
// decrypts into its own) and handed to the other end's receiver at offset
// overlay.HeaderRoom.
type Conn struct {
	peer *Conn
	opts PipeOptions
	down atomic.Bool

	rxMu sync.RWMutex // guards rx
	rx   overlay.ReceiveFunc

	// Direct mode: the buffers this end receives into, under recvMu
	// (receivers get one batch at a time).
	recvMu   sync.Mutex
	recvBufs [][]byte
	recvPkts [][]byte

	// Async mode: batches travelling towards this end.
	queue chan *batch
	free  chan *batch

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup

	sent, delivered, dropped, oversize atomic.Uint64
}

type batch struct {
	bufs [][]byte
	pkts [][]byte
}

// Pipe returns two connected Conns. Close both when done (Async mode runs a
// goroutine per end).
func Pipe(opts PipeOptions) (*Conn, *Conn) {
	if opts.QueueLen == 0 {
		opts.QueueLen = 32
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 64
	}
	if opts.BufSize == 0 {
		opts.BufSize = 4096
	}
	a, b := newConn(opts), newConn(opts)
	a.peer, b.peer = b, a
	return a, b
}

func newConn(opts PipeOptions) *Conn {
	c := &Conn{opts: opts, closed: make(chan struct{})}
	newBatch := func() *batch {
		bt := &batch{bufs: make([][]byte, opts.MaxBatch), pkts: make([][]byte, 0, opts.MaxBatch)}
		for i := range bt.bufs {
			bt.bufs[i] = make([]byte, opts.BufSize)
		}
		return bt
	}
	if !opts.Async {
		bt := newBatch()
		c.recvBufs, c.recvPkts = bt.bufs, bt.pkts
		return c
	}
	c.queue = make(chan *batch, opts.QueueLen)
	c.free = make(chan *batch, opts.QueueLen)
	for range opts.QueueLen {
		c.free <- newBatch()
	}
	c.wg.Add(1)
	go c.deliverLoop()
	return c
}

// SetReceiver implements overlay.PeerConn.
func (c *Conn) SetReceiver(fn overlay.ReceiveFunc) {
	c.rxMu.Lock()
	c.rx = fn
	c.rxMu.Unlock()
}

// Receiver returns the installed receiver (nil if none). Tests use it to
// act as a link that still calls a receiver after the overlay let it go.
func (c *Conn) Receiver() overlay.ReceiveFunc {
	c.rxMu.RLock()
	defer c.rxMu.RUnlock()
	return c.rx
}

// HasReceiver reports whether a receiver is installed.
func (c *Conn) HasReceiver() bool {
	c.rxMu.RLock()
	defer c.rxMu.RUnlock()
	return c.rx != nil
}

// SetDown makes WriteBatch fail with overlay.ErrLinkDown (true) or work
// again (false).
func (c *Conn) SetDown(down bool) { c.down.Store(down) }

// WriteBatch implements overlay.PeerConn.
func (c *Conn) WriteBatch(bufs [][]byte, offset int) (int, error) {
	select {
	case <-c.closed:
		return 0, fmt.Errorf("overlaytest: pipe closed: %w", overlay.ErrLinkDown)
	default:
	}
	if c.down.Load() {
		return 0, fmt.Errorf("overlaytest: link set down: %w", overlay.ErrLinkDown)
	}
	total := len(bufs)
	for len(bufs) > 0 {
		n := min(len(bufs), c.opts.MaxBatch)
		c.peer.receiveCopy(bufs[:n], offset)
		bufs = bufs[n:]
	}
	return total, nil
}

// receiveCopy copies packets bufs[i][offset:] into this end's buffers and
// delivers them (directly, or through the queue).
func (c *Conn) receiveCopy(bufs [][]byte, offset int) {
	if c.opts.Async {
		var bt *batch
		select {
		case bt = <-c.free:
		default:
			c.dropped.Add(uint64(len(bufs)))
			return
		}
		bt.pkts = c.fill(bt.bufs, bt.pkts[:0], bufs, offset)
		c.peer.sent.Add(uint64(len(bt.pkts)))
		c.queue <- bt // never blocks: there are as many batches as slots
		return
	}
	c.recvMu.Lock()
	pkts := c.fill(c.recvBufs, c.recvPkts[:0], bufs, offset)
	c.peer.sent.Add(uint64(len(pkts)))
	c.deliver(pkts)
	clear(pkts)
	c.recvMu.Unlock()
}

func (c *Conn) fill(dst [][]byte, pkts [][]byte, src [][]byte, offset int) [][]byte {
	for i, s := range src {
		p := s[offset:]
		if overlay.HeaderRoom+len(p) > len(dst[i]) {
			c.oversize.Add(1)
			continue
		}
		copy(dst[i][overlay.HeaderRoom:], p)
		pkts = append(pkts, dst[i][:overlay.HeaderRoom+len(p)])
	}
	return pkts
}

func (c *Conn) deliver(pkts [][]byte) {
	if len(pkts) == 0 {
		return
	}
	c.rxMu.RLock()
	rx := c.rx
	c.rxMu.RUnlock()
	if rx == nil {
		c.dropped.Add(uint64(len(pkts)))
		return
	}
	rx(pkts, overlay.HeaderRoom)
	c.delivered.Add(uint64(len(pkts)))
}

func (c *Conn) deliverLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.closed:
			return
		case bt := <-c.queue:
			c.deliver(bt.pkts)
			clear(bt.pkts)
			bt.pkts = bt.pkts[:0]
			c.free <- bt
		}
	}
}

// Deliver hands pkts to this end's receiver as if the other end had sent
// them (for injecting crafted packets). It copies them first.
func (c *Conn) Deliver(pkts ...[]byte) {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = make([]byte, overlay.HeaderRoom+len(p))
		copy(bufs[i][overlay.HeaderRoom:], p)
	}
	c.deliver(bufs)
}

// PipeStats are one end's counters.
type PipeStats struct {
	Sent      uint64 // packets this end wrote that reached the other end's buffers
	Delivered uint64 // packets handed to this end's receiver
	Dropped   uint64 // packets towards this end lost: full queue or no receiver
	Oversize  uint64 // packets towards this end larger than BufSize
}

// Stats returns this end's counters.
func (c *Conn) Stats() PipeStats {
	return PipeStats{Sent: c.sent.Load(), Delivered: c.delivered.Load(), Dropped: c.dropped.Load(), Oversize: c.oversize.Load()}
}

// Close stops this end: writes fail with ErrLinkDown and its delivery
// goroutine (Async) exits. Idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	c.wg.Wait()
	return nil
}

var _ overlay.PeerConn = (*Conn)(nil)
