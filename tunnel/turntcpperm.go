package tunnel

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"
)

/* TURN permission back-off on TCP and TLS relays
 *
 * relayConn (relaynet.go) keeps the permission bookkeeping of relayperm.go
 * for TURN over UDP. A UDP-blocked node reaches its relay over TCP or TLS,
 * where pion's client writes one frame per Write and reads the stream in
 * chunks; permConn gives that stream the same bookkeeping: a permission
 * request for a peer the server refused or errored on lately fails at once
 * (Write), and the answers are found by following the stream's framing
 * (RFC 8656 §12.5: STUN messages and ChannelData, the latter padded to 4
 * bytes) in what Read returns. Only STUN messages up to maxScanFrame bytes
 * are looked at (answers to permission requests are a few dozen bytes);
 * the rest of the stream is skipped by its lengths, without copying.
 */

// maxScanFrame bounds the STUN messages permConn copies to read.
const maxScanFrame = 548

// permConn is a TURN-over-TCP/TLS stream with permission back-off.
type permConn struct {
	net.Conn
	gates *idleGates // nil: no idle gating
	perms permissions
	scan  frameScanner // Read's goroutine only (pion reads from one)
}

// Write sends one frame: a withheld idle check is reported as sent, and a
// permission request the server refused lately fails at once.
func (c *permConn) Write(p []byte) (int, error) {
	if c.gates != nil {
		if g, ok := c.gates.gateOf(p); ok {
			c.perms.gate.Store(g)
		}
		if !c.gates.allow(p, netip.AddrPort{}, true) {
			return len(p), nil
		}
	}
	if err := c.perms.check(p, time.Now()); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// Read passes the stream through, noting the answers to permission
// requests.
func (c *permConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.scan.feed(p[:n], func(frame []byte) { c.perms.answer(frame, time.Now()) })
	}
	return n, err
}

// frameScanner follows the framing of a TURN-over-TCP stream fed in
// arbitrary chunks and hands each complete STUN message of at most
// maxScanFrame bytes to a callback.
type frameScanner struct {
	hdr  [4]byte
	hdrN int    // bytes of hdr filled
	left int    // bytes of the current frame's body still to come
	msg  []byte // the current STUN message, when it is short enough to keep
	keep bool
}

func (s *frameScanner) feed(b []byte, fn func([]byte)) {
	for len(b) > 0 {
		if s.left == 0 {
			k := copy(s.hdr[s.hdrN:], b)
			s.hdrN += k
			b = b[k:]
			if s.hdrN < len(s.hdr) {
				return
			}
			s.hdrN = 0
			l := int(binary.BigEndian.Uint16(s.hdr[2:4]))
			if s.hdr[0]&0xC0 == 0 { // STUN: 20-byte header, then l bytes
				s.left = 16 + l
				s.keep = 20+l <= maxScanFrame
				if s.keep {
					s.msg = append(s.msg[:0], s.hdr[:]...)
				}
			} else { // ChannelData (or garbage): padded to 4 over TCP
				s.left = (l + 3) &^ 3
				s.keep = false
			}
			if s.left == 0 {
				continue
			}
		}
		k := min(s.left, len(b))
		if s.keep {
			s.msg = append(s.msg, b[:k]...)
		}
		s.left -= k
		b = b[k:]
		if s.left == 0 && s.keep {
			fn(s.msg)
		}
	}
}
