package discovery

/* The embedded TURN server's forwarding fast path for stream clients
 * (TURN over TCP and TLS)
 *
 * pion reads a TCP or TLS client through its STUNConn, which cuts the
 * stream into STUN messages and ChannelData frames (padded to a multiple
 * of 4 over streams, RFC 8656 section 12.5) and handles one per call; it
 * writes one whole frame per Write. turnStreamConn sits beneath STUNConn,
 * around each connection the TCP and TLS listeners accept, and uses the
 * bindings and relay sockets of turnfast.go (a stream client is a
 * clientID by its connection):
 *
 * Client → peer (pion's read loop for the connection, the only reader):
 * the stream is read into the connection's buffer, as much as is there;
 * frames are cut at its start exactly where pion would cut them
 * (stunwire.StreamFrame). Each ChannelData frame of a channel bound on this
 * connection (pion answered the ChannelBind; the peer policy allowed the
 * peer) is sent on; runs to one peer leave with one sendmmsg (GSO) from
 * the allocation's relay socket. Every other frame is handed to pion
 * whole and in order through Read, STUN requests observed on the way
 * (ChannelBind, CreatePermission); a request whose credential does not
 * verify is answered 401 here and never reaches pion (internal/turnauth,
 * as on the UDP listener; pion would answer 400). From the first frame
 * that cannot be cut as pion would (no STUN or ChannelData header, a
 * length pion's arithmetic wraps, a ChannelData frame that also looks
 * like STUN to pion) the rest of the stream goes to pion unparsed, and
 * pion answers what follows itself; so does all of a connection pion
 * made an RFC 6062 data connection (ConnectionBind).
 *
 * Peer → client (the relay socket's reader, pion's allocation read loop,
 * turnfast.go): datagrams from a bound peer get their ChannelData header
 * in place and are copied, padded, into one buffer written with one Write
 * per batch. wmu serializes it with pion's own Writes (answers, Data
 * indications, its ChannelData), so frames never interleave.
 *
 * Buffers: the connection's read buffer is owned by pion's read loop for
 * it; frames sent on are borrowed from it until their run is flushed,
 * always before the next read. A connection reads into a small buffer
 * until it forwards its first frame (only then, authenticated and bound,
 * is it given a large one). Nothing is allocated per frame.
 */

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/stunwire"
	"github.com/meshd/meshd/internal/turnauth"
)

const (
	// turnStreamBuf is the read buffer of a connection that forwards:
	// up to this much of the stream is read and cut at once.
	turnStreamBuf = 64 << 10
	// turnStreamSmallBuf is the read buffer before that: it holds the
	// longest frame waited for whole (turnStreamMaxWait) twice over.
	turnStreamSmallBuf = 4 << 10
	// turnStreamMaxWait is the longest frame waited for whole: a
	// forwarded ChannelData frame (turnSlotSize). STUN messages are
	// waited for below turnStreamMTU.
	turnStreamMaxWait = turnSlotSize
	// turnStreamMTU is pion's inbound MTU: pion drops frames this long
	// or longer, so only shorter STUN messages are observed.
	turnStreamMTU = 1600
	// turnTLSHandshakeTimeout bounds the TLS handshake, as pion bounds it
	// for the *tls.Conn it no longer sees beneath the wrapper.
	turnTLSHandshakeTimeout = 10 * time.Second
	// typeConnectionBindSuccess answers an RFC 6062 ConnectionBind: the
	// connection it is written on carries a TCP peer's bytes from then on,
	// unframed.
	typeConnectionBindSuccess = 0x010b
)

// wrapStreams wraps a TCP or TLS listener so its connections carry the
// fast path and auth's check (nil: none); with f nil, ln is returned as it
// is and pion answers bad credentials on streams itself (400): the fast
// path is off only where batched I/O is missing, and in benchmarks.
func (f *turnFast) wrapStreams(ln net.Listener, auth *turnauth.Checker) net.Listener {
	if f == nil {
		return ln
	}
	return &turnStreamListener{Listener: ln, f: f, auth: auth}
}

// turnStreamListener is a TCP or TLS listener as pion sees it.
type turnStreamListener struct {
	net.Listener
	f    *turnFast
	auth *turnauth.Checker // or nil
}

// Accept wraps the next connection.
func (l *turnStreamListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &turnStreamConn{Conn: c, f: l.f, auth: l.auth}
	sc.tls, _ = c.(*tls.Conn)
	return sc, nil
}

// turnStreamConn is a stream client's connection as pion sees it.
type turnStreamConn struct {
	net.Conn
	f    *turnFast
	tls  *tls.Conn         // the same connection when it is TLS, or nil
	auth *turnauth.Checker // answers bad credentials 401, or nil

	// wmu serializes writes to the stream, each one or more whole
	// frames: pion's (Write) and the fast path's (writeFrames).
	wmu    sync.Mutex
	closed sync.Once
	// data is set once pion answered a ConnectionBind on this connection
	// (RFC 6062): from then on its bytes are a TCP peer's, not frames.
	data atomic.Bool

	rd streamReader // owned by pion's read loop for the connection
}

// streamReader is a connection's read state.
type streamReader struct {
	buf  []byte // buf[r:w] is read and not yet handed on
	r, w int
	pass int  // bytes of the frame at r still owed to pion
	raw  bool // unframed: everything from r on is pion's
	big  bool // the connection forwards: buf is (or grows to) turnStreamBuf

	turnReader // its run, runTo and tx: frames on their way to a peer
}

// id is the connection's name in the fast path's bindings.
func (c *turnStreamConn) id() clientID { return clientID{stream: c} }

// Read returns the next bytes of the stream for pion: whole frames, in
// order, without the ChannelData frames forwarded on the way (see the file
// comment).
func (c *turnStreamConn) Read(p []byte) (int, error) {
	rd := &c.rd
	if rd.buf == nil {
		if c.tls != nil {
			ctx, cancel := context.WithTimeout(context.Background(), turnTLSHandshakeTimeout)
			err := c.tls.HandshakeContext(ctx)
			cancel()
			if err != nil {
				return 0, err
			}
		}
		rd.buf = make([]byte, turnStreamSmallBuf)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !rd.raw && c.data.Load() {
		rd.flush(c.f)
		rd.raw = true
	}
	for {
		if avail := rd.w - rd.r; avail > 0 && (rd.raw || rd.pass > 0) {
			if !rd.raw {
				avail = min(avail, rd.pass)
			}
			n := copy(p, rd.buf[rd.r:rd.r+avail])
			rd.r += n
			if !rd.raw {
				rd.pass -= n
			}
			return n, nil
		}
		switch {
		case rd.raw:
			return c.Conn.Read(p)
		case rd.pass > 0:
			n, err := c.Conn.Read(p[:min(len(p), rd.pass)])
			rd.pass -= n
			return n, err
		}
		if c.scan() {
			continue
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
}

// scan forwards the ChannelData frames of bound channels at the start of
// the buffer. It stops at the first frame for pion, setting pass (or raw),
// and returns true, or at an incomplete frame, returning false.
func (c *turnStreamConn) scan() bool {
	rd := &c.rd
	tab := c.f.tab.Load()
	var now time.Time
	for {
		b := rd.buf[rd.r:rd.w]
		n, kind := stunwire.StreamFrame(b)
		switch kind {
		case stunwire.FrameIncomplete:
			return false
		case stunwire.FrameUnframed:
			rd.flush(c.f)
			rd.raw = true
			return true
		case stunwire.FrameSTUN:
			if n < turnStreamMTU {
				if len(b) < n {
					return false
				}
				if c.refuse(b[:n]) {
					rd.r += n
					continue
				}
				c.f.observeRequest(b[:n], c.id())
			}
			rd.flush(c.f)
			rd.pass = n
			return true
		}
		length := int(binary.BigEndian.Uint16(b[2:4]))
		bd := tab.byClient[clientKey{c.id(), binary.BigEndian.Uint16(b[0:2])}]
		if bd != nil && now.IsZero() {
			now = time.Now()
		}
		if bd == nil || n > turnStreamMaxWait || !now.Before(bd.until) {
			rd.flush(c.f)
			rd.pass = n
			return true
		}
		if len(b) < n {
			return false
		}
		if rd.tx == nil {
			// The first frame forwarded: only now, with a binding pion
			// made, is the connection given the means to forward.
			rd.tx = newTxBatch(turnFastBatch)
			rd.run = make([][]byte, 0, turnFastBatch)
			rd.big = true // the buffer grows at the next fill
		}
		rd.push(c.f, bd, b[4:4+length])
		rd.r += n
	}
}

// refuse answers m, a whole STUN message from the client, with 401 when
// it is a request whose credential does not verify (internal/turnauth),
// and reports whether it did: pion never sees m then. A request pion
// would drop (turnStreamMTU or longer) is left to pion.
func (c *turnStreamConn) refuse(m []byte) bool {
	if c.auth == nil {
		return false
	}
	resp := c.auth.Check(m)
	if resp == nil {
		return false
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _ = c.Conn.Write(resp) // a broken stream fails pion's next read
	return true
}

// fill reads more of the stream into the buffer, after sending the run
// that borrows it.
func (c *turnStreamConn) fill() error {
	rd := &c.rd
	rd.flush(c.f)
	if rd.big && len(rd.buf) < turnStreamBuf {
		nb := make([]byte, turnStreamBuf)
		rd.w = copy(nb, rd.buf[rd.r:rd.w])
		rd.buf, rd.r = nb, 0
	}
	if rd.r == rd.w {
		rd.r, rd.w = 0, 0
	} else if len(rd.buf)-rd.w < turnStreamMaxWait {
		// What is left is shorter than turnStreamMaxWait: moved to the
		// front, it leaves room for the rest.
		rd.w = copy(rd.buf, rd.buf[rd.r:rd.w])
		rd.r = 0
	}
	for {
		n, err := c.Conn.Read(rd.buf[rd.w:])
		rd.w += n
		if n > 0 {
			return nil // an error comes again with the next read
		}
		if err != nil {
			return err
		}
	}
}

// Write writes one frame of pion's, learning from its answers (or, on a
// data connection, bytes from its TCP peer).
func (c *turnStreamConn) Write(p []byte) (int, error) {
	if len(p) >= stunwire.HeaderLen && p[0] < 2 && !c.data.Load() {
		if typ, _ := stunwire.Type(p); typ == typeConnectionBindSuccess {
			c.data.Store(true)
		}
		c.f.observeAnswer(p, c.id())
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.Write(p)
}

// zeroPad is ChannelData padding.
var zeroPad [3]byte

// writeFrames writes run, ChannelData frames with their headers in place,
// each padded to a multiple of 4 bytes, with one Write; sw is the
// caller's scratch, grown to the largest batch. borrowed: run is not
// retained.
func (c *turnStreamConn) writeFrames(sw *[]byte, run [][]byte) error {
	b := (*sw)[:0]
	for _, fr := range run {
		b = append(b, fr...)
		b = append(b, zeroPad[:-len(fr)&3]...)
	}
	*sw = b
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.Conn.Write(b)
	return err
}

// Close forgets the connection's allocation and bindings and closes it.
func (c *turnStreamConn) Close() error {
	c.closed.Do(func() { c.f.streamClosed(c) })
	return c.Conn.Close()
}

// streamClosed forgets what the fast path holds for stream c.
func (f *turnFast) streamClosed(c *turnStreamConn) {
	id := c.id()
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.clients, id)
	for k, r := range f.pending {
		if r.client == id {
			delete(f.pending, k)
		}
	}
	f.updateLocked(func(b *turnBinding) bool { return b.client != id }, nil)
}
