package tunnel

/* Relayed records on a TURN stream (TURN over TCP and TLS)
 *
 * pion's TURN client owns the allocation and writes and reads the stream
 * through its STUNConn, which sits on a turnStream (turntcpperm.go). This
 * file takes the data records of a link whose selected pair starts at that
 * allocation off pion's one-frame-per-call path, once pion has bound a
 * channel to the peer. It learns as the UDP fast path does (relayfast.go,
 * relayLearn): the relayed address from the Allocate success response
 * read on the stream (everything on the stream comes from the server), a
 * channel's peer from the ChannelBind request pion writes, and that the
 * channel is ready from the first ChannelData pion writes on it.
 *
 * Send (WriteBatch, the caller's goroutine, under the link's txMu):
 *   records are sealed with chanHdrLen bytes of header room in front; on a
 *   ready channel the ChannelData header is written there in place and
 *   the batch goes out in ONE write, each frame padded to 4 bytes
 *   (RFC 8656 §12.5), under the stream's write lock wmu, which pion's own
 *   frames take too, so frames never interleave:
 *     - plain TCP: one writev of the records and their padding, zero
 *       copies;
 *     - TLS: the frames copied into one buffer and one tls.Conn.Write, so
 *       crypto/tls seals them in as few records as the sizes allow.
 *   Before the channel is ready, records go through ice.Conn as before.
 *
 * Receive (pion's TURN read loop calls STUNConn.ReadFrom, which calls
 *   turnStream.Read; the only reader of the stream):
 *   1. read a chunk of the stream into the reader's buffer (streamBufSize,
 *      which holds the largest frame cut, so a frame split across reads
 *      waits there for its rest);
 *   2. follow the framing (streamFrame, stunwire.StreamFrame: the cut the
 *      embedded server's connections make too): each frame's length is read from
 *      its header and checked against what is buffered before anything is
 *      done with it; STUN answers are noted (permissions, the relayed
 *      address);
 *   3. ChannelData on a channel whose peer a link is attached for,
 *      carrying a data record: copied into a slot (record at recOff) and
 *      opened there with this reader's Opener for the link's key state;
 *      each link's packets are delivered as one batch (Link.deliver) per
 *      chunk read, and before any frame goes to pion;
 *   4. every other frame (STUN, unknown channels, ICE checks and DTLS
 *      records inside ChannelData, a record of an epoch not installed yet)
 *      is handed to pion unchanged and in stream order, as Read's result;
 *      bytes that follow no framing (neither STUN nor ChannelData, or a
 *      frame pion might cut otherwise) and all that comes after them go to
 *      pion as read.
 *
 * Buffers: the stream buffer and the slots belong to the reader and are
 * reused; a ReceiveFunc borrows a slot for its call only. Send buffers are
 * the caller's (borrowed, as in datapath.go); the TLS batch buffer and the
 * writev list belong to the stream (under wmu).
 *
 * Order: a link's records leave in batch order; frames on the stream keep
 * their order. Received records are delivered in stream order; the ones
 * that go the slow way (through pion and the ICE reader) may overtake or
 * trail them by a batch.
 */

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/meshd/meshd/internal/stunwire"
)

const (
	// streamBufSize is a TURN stream reader's buffer. It holds the
	// largest frame (maxStreamFrame) whatever precedes it.
	streamBufSize = 1 << 17
	// maxStreamFrame is the largest frame cut: pion's 16-bit arithmetic
	// wraps beyond (stunwire.StreamFrame).
	maxStreamFrame = 0xffff
)

// The reader's buffer holds any frame once the bytes before it are gone.
const _ = uint(streamBufSize - maxStreamFrame)

// streamPadding pads ChannelData on a stream. Never written.
var streamPadding [3]byte

// streamPad is the padding after a ChannelData frame of n bytes.
func streamPad(n int) int { return -n & 3 }

// streamFrame returns the complete frame at the front of b and its kind,
// cut as stunwire.StreamFrame cuts it (RFC 8656 §12.5 framing, where pion's
// STUNConn above cuts the same): a frame not all in b yet is
// stunwire.FrameIncomplete. A frame is at most maxStreamFrame bytes.
//
// borrowed: the frame is a slice of b.
func streamFrame(b []byte) ([]byte, stunwire.FrameKind) {
	n, kind := stunwire.StreamFrame(b)
	switch {
	case kind != stunwire.FrameSTUN && kind != stunwire.FrameChannelData:
		return nil, kind
	case n > len(b):
		return nil, stunwire.FrameIncomplete
	}
	return b[:n], kind
}

// streamFast is a TURN stream's fast data path (see the file comment).
type streamFast struct {
	relayLearn

	// wmu serializes writes on the stream: pion's frames and batches.
	wmu  sync.Mutex
	wbuf []byte      // a TLS batch, framed
	iov  [][]byte    // a TCP batch: frames and their padding
	nb   net.Buffers // iov as writev consumes it (a field: no allocation)

	in streamIn // owned by the reader
}

// streamIn is the reader's state (pion's TURN read loop).
type streamIn struct {
	buf    []byte // streamBufSize, made at the first Read
	r, w   int    // buf[r:w] is read and not consumed yet
	pass   []byte // frames for pion not handed over yet (a slice of buf)
	raw    bool   // the framing is lost: the rest goes to pion as read
	err    error  // the stream's read error, returned once nothing is left
	server netip.AddrPort

	rx   *rxBatch // slots for opened records, made at the first one
	k    int      // slots of rx used in this batch
	cnt  rxCounts
	cm   *counters // where cnt goes
	opns relayOpeners
}

// sendRecords sends records to peer as ChannelData in one write on the
// stream and reports whether it did (false: no ready channel; the caller
// sends the slow way). Each recs[i] starts with chanHdrLen bytes of room
// for the header.
//
// borrowed: recs are not retained.
func (c *turnStream) sendRecords(_ *fastTx, recs [][]byte, peer netip.AddrPort) (bool, error) {
	ch := c.fast.table().peer(peer)
	if ch == nil || !ch.ready {
		return false, nil
	}
	f := &c.fast
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		iov := f.iov[:0]
		for _, r := range recs {
			putChannelHeader(r, ch.num)
			iov = append(iov, r)
			if pad := streamPad(len(r)); pad > 0 {
				iov = append(iov, streamPadding[:pad])
			}
		}
		f.iov, f.nb = iov, iov
		_, err := f.nb.WriteTo(tc)
		clear(iov) // borrowed: keep nothing of the caller's buffers
		return true, err
	}
	size := 0
	for _, r := range recs {
		size += len(r) + streamPad(len(r))
	}
	if cap(f.wbuf) < size {
		f.wbuf = make([]byte, 0, size)
	}
	b := f.wbuf[:0]
	for _, r := range recs {
		putChannelHeader(r, ch.num)
		b = append(b, r...)
		b = append(b, streamPadding[:streamPad(len(r))]...)
	}
	_, err := c.Conn.Write(b)
	return true, err
}

// attach makes l the receiver of records from peer on this stream.
// Control path (setRoute).
func (c *turnStream) attach(l *Link, peer netip.AddrPort) { c.fast.setLink(l, peer) }

// detach stops delivering records from peer to l (invalid peer: from any
// peer). Control path.
func (c *turnStream) detach(l *Link, peer netip.AddrPort) { c.fast.detach(l, peer) }

// Read returns the next frames for pion, delivering the data records of
// attached links on the way (see the file comment). pion's TURN read loop
// is the only caller.
func (c *turnStream) Read(p []byte) (int, error) {
	in := &c.fast.in
	if in.buf == nil {
		in.buf = make([]byte, streamBufSize)
		in.server, _ = addrPortOf(c.RemoteAddr())
	}
	for {
		if len(in.pass) > 0 {
			n := copy(p, in.pass)
			in.pass = in.pass[n:]
			return n, nil
		}
		if c.parse(in) {
			in.flush() // the packets before pion's frames
			continue
		}
		if in.err != nil {
			in.flush()
			return 0, in.err
		}
		if in.r > 0 {
			in.w = copy(in.buf, in.buf[in.r:in.w])
			in.r = 0
		}
		if in.k > 0 && c.readBuffered(in) {
			continue // more of this batch
		}
		in.flush() // never hold packets across a blocking read
		n, err := c.Conn.Read(in.buf[in.w:])
		in.w += n
		in.err = err
	}
}

// readBuffered reads what a TLS stream has buffered already, without
// waiting, and reports whether it read anything. crypto/tls returns one
// TLS record per Read, and pion's server (like most) writes one frame per
// record, so without this every frame would be a batch of its own. A read
// whose deadline has passed takes records from the TLS buffer and fails at
// once, and not for good, when it would have to wait for the socket.
func (c *turnStream) readBuffered(in *streamIn) bool {
	if _, ok := c.Conn.(*tls.Conn); !ok {
		return false // a TCP read takes all the socket has
	}
	if c.Conn.SetReadDeadline(time.Unix(1, 0)) != nil {
		return false
	}
	n, err := c.Conn.Read(in.buf[in.w:])
	_ = c.Conn.SetReadDeadline(time.Time{})
	in.w += n
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		in.err = err
	}
	return n > 0 || in.err != nil
}

// parse consumes the complete frames at the front of the reader's buffer:
// data records of attached links are opened into the batch; a run of
// frames for pion becomes in.pass, and parse returns true there, before
// the frame after the run. false: no complete frame is left.
func (c *turnStream) parse(in *streamIn) bool {
	if in.raw {
		in.pass, in.r = in.buf[in.r:in.w], in.w
		return len(in.pass) > 0
	}
	t := c.fast.table()
	start := in.r // the run of frames for pion starts here
	for {
		f, kind := streamFrame(in.buf[in.r:in.w])
		switch kind {
		case stunwire.FrameIncomplete:
			in.pass = in.buf[start:in.r]
			return len(in.pass) > 0
		case stunwire.FrameUnframed:
			in.raw = true
			in.pass, in.r = in.buf[start:in.w], in.w
			return true
		case stunwire.FrameSTUN:
			c.perms.answer(f, time.Now())
			c.fast.learnAllocation(f, in.server)
		case stunwire.FrameChannelData:
			if l, rec := t.channelRecord(f); l != nil {
				if in.r > start {
					in.pass = in.buf[start:in.r] // pion's frames first
					return true
				}
				if in.open(l, rec) {
					in.r += len(f)
					start = in.r
					continue
				}
			}
		}
		in.r += len(f)
	}
}

// open copies rec into a slot, at recOff, and opens it there for l. It
// returns false for a record to hand to pion (see relayOpeners.open).
func (in *streamIn) open(l *Link, rec []byte) bool {
	if in.rx == nil {
		in.rx = newRxBatch(relayRxBatch)
	}
	if in.k == len(in.rx.bufs) || (in.cm != nil && in.cm != &l.m.counters) {
		in.flush()
	}
	in.cm = &l.m.counters
	dst := in.rx.bufs[in.k][recOff : recOff+len(rec)]
	copy(dst, rec)
	if !in.opns.open(in.rx, l, in.k, dst, &in.cnt) {
		return false
	}
	in.k++
	return true
}

// flush delivers the batch's packets and adds its drop counts.
func (in *streamIn) flush() {
	if in.rx != nil {
		in.rx.deliver()
	}
	in.k = 0
	if in.cm != nil {
		in.cnt.flush(in.cm)
	}
}
