package tunnel

/* Data path (this version: one DTLS application record per packet through
 * pion/dtls; a later version replaces the insides, not the interface)
 *
 * Outbound (WriteBatch, any goroutine, concurrently):
 *   1. load the connected session's DTLS conn (atomic pointer; nil = link down)
 *   2. for each packet, in order: dtls.Conn.Write(bufs[i][offset:])
 *      (pion seals the record and ice.Conn sends it on the selected pair)
 *   The caller keeps ownership of bufs; nothing is retained.
 *
 * Inbound (two goroutines per connected session):
 *   1. reader: dtls.Conn.Read into a pooled buffer at HeaderRoom, one record
 *      per read; pushes the buffer onto a bounded channel (order kept)
 *   2. deliverer: takes whatever is queued (up to maxRecvBatch), calls the
 *      receiver once with the batch, returns the buffers to the pool
 *   The receiver borrows the buffers for the duration of the call only.
 *
 * Below DTLS, recordConn adapts ice.Conn to the net.PacketConn pion/dtls
 * wants and counts replayed records as they arrive.
 */

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
)

// HeaderRoom is the space in front of every packet, in both directions. It
// equals overlay.HeaderRoom (a test checks), which this package does not
// import.
const HeaderRoom = 64

// MaxOverhead is the most bytes a link adds to a packet on the wire beyond
// the UDP/IP headers: the DTLS 1.2 record header (13), the AES-GCM explicit
// nonce (8) and tag (16), and a TURN ChannelData header (4) on relayed
// paths. The daemon sizes the TUN MTU with it.
const MaxOverhead = 13 + 8 + 16 + 4

// maxRecordPayload is the largest plaintext a DTLS record can carry; every
// receive buffer can take it, so no record is lost for lack of room.
const maxRecordPayload = 16384

// recvBufSize is the size of pooled receive buffers.
const recvBufSize = HeaderRoom + maxRecordPayload

// maxRecvBatch bounds the batch handed to the receiver in one call.
const maxRecvBatch = 64

// recvQueueLen bounds records read but not yet delivered, per link.
const recvQueueLen = 256

// ReplayWindow is the DTLS anti-replay window, in records.
const ReplayWindow = 2048

// recvBuf is a pooled receive buffer: b[HeaderRoom:HeaderRoom+n] is the packet.
type recvBuf struct {
	b []byte
	n int
}

var recvPool = sync.Pool{New: func() any { return &recvBuf{b: make([]byte, recvBufSize)} }}

// dataConn is what the data path sees of a connected session.
type dataConn struct {
	dtls *dtls.Conn
}

// WriteBatch sends packets bufs[i][offset:] to the peer, in order, one DTLS
// record each. It returns how many were handed to the network and, if not
// all, an error matching ErrLinkDown (and Options.LinkDownError). offset must
// be at least HeaderRoom. Safe for concurrent use.
//
// borrowed: bufs belong to the caller and are not retained.
func (l *Link) WriteBatch(bufs [][]byte, offset int) (int, error) {
	if offset < HeaderRoom {
		return 0, ErrBadOffset
	}
	c := l.conn.Load()
	if c == nil {
		l.sendErrors.Add(uint64(len(bufs)))
		return 0, l.m.errLinkDown
	}
	var bytes uint64
	for i, b := range bufs {
		if offset > len(b) {
			l.packetsSent.Add(uint64(i))
			l.bytesSent.Add(bytes)
			return i, ErrBadOffset
		}
		if _, err := c.dtls.Write(b[offset:]); err != nil {
			l.packetsSent.Add(uint64(i))
			l.bytesSent.Add(bytes)
			l.sendErrors.Add(uint64(len(bufs) - i))
			return i, &linkDownError{alias: l.m.opts.LinkDownError, cause: err}
		}
		bytes += uint64(len(b) - offset)
	}
	l.packetsSent.Add(uint64(len(bufs)))
	l.bytesSent.Add(bytes)
	return len(bufs), nil
}

// receiver is the installed ReceiveFunc (boxed for atomic.Pointer).
type receiver struct {
	fn func(bufs [][]byte, offset int)
}

// SetReceiver installs where the link delivers what it receives: packet i
// is bufs[i][offset:] with offset == HeaderRoom. nil discards. Safe for
// concurrent use; the function is called from the link's deliverer
// goroutine, one batch at a time.
func (l *Link) SetReceiver(fn func(bufs [][]byte, offset int)) {
	if fn == nil {
		l.recv.Store(nil)
		return
	}
	l.recv.Store(&receiver{fn: fn})
}

// readLoop reads records from the session's DTLS conn until it closes and
// queues them for deliverLoop. It closes q when done and reports why to the
// owner.
func (l *Link) readLoop(s *session, c *dtls.Conn, q chan<- *recvBuf) {
	defer close(q)
	for {
		rb := recvPool.Get().(*recvBuf)
		n, err := c.Read(rb.b[HeaderRoom:])
		if err != nil {
			recvPool.Put(rb)
			if isConnClosed(err) {
				l.post(s, evReaderDone{gen: s.gen, err: err})
				return
			}
			// Non-fatal: a warning alert, a record too large for the
			// buffer, an undecodable datagram after the handshake.
			l.receiveErrors.Add(1)
			continue
		}
		rb.n = n
		select {
		case q <- rb:
		case <-s.ctx.Done():
			recvPool.Put(rb)
			return
		}
	}
}

// deliverLoop hands queued records to the receiver in batches.
func (l *Link) deliverLoop(q <-chan *recvBuf) {
	var (
		held [maxRecvBatch]*recvBuf
		bufs = make([][]byte, 0, maxRecvBatch)
	)
	for rb := range q {
		held[0] = rb
		k := 1
	drain:
		for k < maxRecvBatch {
			select {
			case more, ok := <-q:
				if !ok {
					break drain
				}
				held[k] = more
				k++
			default:
				break drain
			}
		}
		bufs = bufs[:0]
		var bytes uint64
		for i := 0; i < k; i++ {
			bufs = append(bufs, held[i].b[:HeaderRoom+held[i].n])
			bytes += uint64(held[i].n)
		}
		l.packetsReceived.Add(uint64(k))
		l.bytesReceived.Add(bytes)
		if r := l.recv.Load(); r != nil {
			r.fn(bufs, HeaderRoom)
		}
		for i := 0; i < k; i++ {
			held[i].n = 0
			recvPool.Put(held[i])
			held[i] = nil
			bufs[i] = nil
		}
	}
}

// isConnClosed reports whether a dtls.Conn.Read error means the session is
// over (closed locally, close_notify or a fatal alert from the peer, or the
// ICE transport gone) rather than one bad record.
func isConnClosed(err error) bool {
	var fe *dtls.FatalError
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, dtls.ErrConnClosed) || errors.As(err, &fe)
}

// recordConn adapts the session's ice.Conn to the net.PacketConn pion/dtls
// reads and writes, and counts replayed records on the way in. Close is a
// no-op: the session closes the ICE agent itself, after DTLS has sent its
// close_notify.
type recordConn struct {
	ice    *ice.Conn
	replay replayWindow // owned by the single DTLS read goroutine
	onDup  func()
}

func (c *recordConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := c.ice.Read(b)
	if err != nil {
		return n, nil, err
	}
	if dups := c.replay.observe(b[:n]); dups > 0 {
		for i := 0; i < dups; i++ {
			c.onDup()
		}
	}
	return n, c.remoteAddr(), nil
}

func (c *recordConn) WriteTo(b []byte, _ net.Addr) (int, error) { return c.ice.Write(b) }
func (c *recordConn) Close() error                              { return nil }
func (c *recordConn) LocalAddr() net.Addr {
	if a := c.ice.LocalAddr(); a != nil {
		return a
	}
	return &net.UDPAddr{}
}
func (c *recordConn) remoteAddr() net.Addr {
	if a := c.ice.RemoteAddr(); a != nil {
		return a
	}
	return &net.UDPAddr{}
}
func (c *recordConn) SetDeadline(t time.Time) error      { return c.ice.SetDeadline(t) }
func (c *recordConn) SetReadDeadline(t time.Time) error  { return c.ice.SetReadDeadline(t) }
func (c *recordConn) SetWriteDeadline(t time.Time) error { return c.ice.SetWriteDeadline(t) }

// replayWindow tracks the (epoch, sequence) of encrypted DTLS records seen
// on one session, with the same window as DTLS's own replay protection, so
// that what it counts as replayed is what DTLS discards.
type replayWindow struct {
	epoch uint16
	top   uint64 // highest sequence number seen in epoch
	seen  [ReplayWindow / 64]uint64
	any   bool
}

// observe walks the records of a datagram and returns how many are
// duplicates or older than the window. Plaintext (epoch 0) records are
// handshake retransmissions and are not counted.
func (w *replayWindow) observe(b []byte) int {
	dups := 0
	for len(b) >= dtlsRecordHeaderLen {
		epoch := binary.BigEndian.Uint16(b[3:5])
		seq := uint64(b[5])<<40 | uint64(b[6])<<32 | uint64(binary.BigEndian.Uint32(b[7:11]))
		l := int(binary.BigEndian.Uint16(b[11:13]))
		if dtlsRecordHeaderLen+l > len(b) {
			break
		}
		b = b[dtlsRecordHeaderLen+l:]
		if epoch == 0 {
			continue
		}
		if !w.check(epoch, seq) {
			dups++
		}
	}
	return dups
}

// check marks (epoch, seq) seen and reports whether it was new.
func (w *replayWindow) check(epoch uint16, seq uint64) bool {
	if !w.any || epoch > w.epoch {
		w.any, w.epoch, w.top = true, epoch, seq
		w.seen = [ReplayWindow / 64]uint64{}
		w.set(seq)
		return true
	}
	if epoch < w.epoch {
		return false
	}
	switch {
	case seq > w.top:
		if seq-w.top >= ReplayWindow {
			w.seen = [ReplayWindow / 64]uint64{}
		} else {
			for s := w.top + 1; s <= seq; s++ {
				w.clear(s)
			}
		}
		w.top = seq
		w.set(seq)
		return true
	case w.top-seq >= ReplayWindow:
		return false
	case w.isSet(seq):
		return false
	default:
		w.set(seq)
		return true
	}
}

func (w *replayWindow) set(seq uint64)   { w.seen[(seq/64)%(ReplayWindow/64)] |= 1 << (seq % 64) }
func (w *replayWindow) clear(seq uint64) { w.seen[(seq/64)%(ReplayWindow/64)] &^= 1 << (seq % 64) }
func (w *replayWindow) isSet(seq uint64) bool {
	return w.seen[(seq/64)%(ReplayWindow/64)]&(1<<(seq%64)) != 0
}
