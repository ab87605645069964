package tunnel

import (
	"net"
	"net/netip"
	"time"
)

/* TURN over TCP and TLS: the stream pion's client sees
 *
 * A UDP-blocked node reaches its relay over TCP or TLS (RFC 6062 framing,
 * RFC 8656 §12.5: STUN messages and ChannelData, the latter padded to 4
 * bytes). turnDialer wraps every such stream in a turnStream, which pion
 * reads and writes through its STUNConn:
 *
 *   - Write (pion's frames, one per call): the idle gate and the
 *     permission back-off relay sockets have (relayperm.go): a permission
 *     request for a peer the server refused or errored on lately fails at
 *     once; the frame teaches the fast path (ChannelBind requests, a
 *     channel's first ChannelData) and goes out under the stream's write
 *     lock, which the fast path's batches take too.
 *   - Read: the stream is followed frame by frame (relaystream.go); data
 *     records of attached links are opened and delivered on the way, the
 *     rest goes to pion unchanged and in order, and the answers to
 *     permission requests are noted.
 */

// turnStream is a TURN-over-TCP/TLS stream with permission back-off and
// the fast data path (relaystream.go). The embedded Conn is the stream
// itself (plain TCP or TLS).
type turnStream struct {
	net.Conn
	gates  *idleGates  // nil: no idle gating
	relays *relayGuard // where find looks it up; nil: not registered
	perms  permissions

	fast streamFast
}

// newTurnStream wraps c and registers it with relays (nil: no registry).
func newTurnStream(c net.Conn, gates *idleGates, relays *relayGuard) *turnStream {
	s := &turnStream{Conn: c, gates: gates, relays: relays}
	if relays != nil {
		relays.mu.Lock()
		if relays.streams == nil {
			relays.streams = make(map[*turnStream]struct{})
		}
		relays.streams[s] = struct{}{}
		relays.mu.Unlock()
	}
	return s
}

// Write sends one frame: a withheld idle check is reported as sent, and a
// permission request the server refused lately fails at once.
func (c *turnStream) Write(p []byte) (int, error) {
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
	c.fast.observeWrite(p)
	c.fast.wmu.Lock()
	defer c.fast.wmu.Unlock()
	return c.Conn.Write(p)
}

// Close closes the stream and forgets it.
func (c *turnStream) Close() error {
	if c.relays != nil {
		c.relays.mu.Lock()
		delete(c.relays.streams, c)
		c.relays.mu.Unlock()
	}
	return c.Conn.Close()
}
