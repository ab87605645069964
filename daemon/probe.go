package daemon

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/overlay"
)

/* Link probes: what `meshctl ping` sends.
 *
 * A probe is an ICMP echo request from this node's overlay IPv4 to the
 * peer's, written straight into the peer's link (not through the TUN, so no
 * kernel ICMP socket and no local firewall is involved), with a payload that
 * marks it as meshd's:
 *
 *   IPv4 header (20, no options) | ICMP echo (8: type, code, sum, id, seq) |
 *   "meshd-probe\x01" (12) | nonce (8)                        = 48 bytes
 *
 * On the peer, the daemon's receive hook (links.go) takes probes out of the
 * stream before its overlay sees them and a responder goroutine writes the
 * echo reply back into the same link; the reply comes back through our
 * hook, which completes the waiting ping. So a probe proves that both
 * daemons' links carry packets end to end over the current path, whatever
 * the firewalls allow, like `tailscale ping` over disco. Probes are accepted
 * only from the link's own peer address to ours; anything else is dropped.
 * A peer whose daemon does not answer probes still answers if its firewall
 * lets the echo through to its TCP/IP stack: the reply carries the payload
 * back unchanged and matches the same way.
 */

const (
	probeIPHeader = 20
	probeICMP     = 8
	probeLen      = probeIPHeader + probeICMP + len(probeMagic) + 8
	icmpEchoReply = 0
	icmpEchoReq   = 8
	// probeQueue bounds probes waiting for an answer; more are dropped.
	probeQueue = 64
)

const probeMagic = "meshd-probe\x01"

// isProbe reports whether p is a link probe (request or reply). It is on
// the receive path: the common case (not ICMP) costs two byte compares.
func isProbe(p []byte) bool {
	return len(p) == probeLen && p[0] == 0x45 && p[9] == 1 &&
		(p[20] == icmpEchoReq || p[20] == icmpEchoReply) && p[21] == 0 &&
		string(p[28:28+len(probeMagic)]) == probeMagic
}

// buildProbe writes a probe into b (which must hold probeLen bytes).
func buildProbe(b []byte, typ byte, src, dst netip.Addr, id, seq uint16, nonce uint64) {
	b = b[:probeLen]
	clear(b)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(probeLen))
	binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
	b[8] = 64
	b[9] = 1
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	binary.BigEndian.PutUint16(b[10:], inetChecksum(b[:probeIPHeader]))
	icmp := b[probeIPHeader:]
	icmp[0] = typ
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[probeICMP:], probeMagic)
	binary.BigEndian.PutUint64(icmp[probeICMP+len(probeMagic):], nonce)
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp))
}

// inetChecksum is the RFC 1071 checksum of b (with its checksum field zero).
func inetChecksum(b []byte) uint16 {
	var s uint32
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func probeAddrs(p []byte) (src, dst netip.Addr) {
	return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
}

// probeKey identifies one outstanding ping.
type probeKey struct {
	peer    string
	id, seq uint16
}

type probeWait struct {
	nonce uint64
	got   chan time.Time // buffered 1
}

type probeRequest struct {
	c   *linkConn
	pkt [probeLen]byte
}

// prober answers the peers' probes and matches the replies to ours.
type prober struct {
	self    netip.Addr // our overlay IPv4
	queue   chan probeRequest
	dropped atomic.Uint64 // probes refused (bad addresses, full queue, no waiter)

	mu      sync.Mutex // guards pending
	pending map[probeKey]probeWait
}

func newProber(self netip.Addr) *prober {
	return &prober{self: self, queue: make(chan probeRequest, probeQueue), pending: map[probeKey]probeWait{}}
}

// handle takes a probe the link c received. Called on c's deliverer
// goroutine: it never blocks. borrowed: p is copied if kept.
func (pr *prober) handle(c *linkConn, p []byte) {
	src, dst := probeAddrs(p)
	if dst != pr.self || src != *c.peerAddr.Load() {
		pr.dropped.Add(1)
		return
	}
	icmp := p[probeIPHeader:]
	if icmp[0] == icmpEchoReq {
		r := probeRequest{c: c}
		copy(r.pkt[:], p)
		select {
		case pr.queue <- r:
		default:
			pr.dropped.Add(1)
		}
		return
	}
	k := probeKey{peer: c.name, id: binary.BigEndian.Uint16(icmp[4:]), seq: binary.BigEndian.Uint16(icmp[6:])}
	nonce := binary.BigEndian.Uint64(icmp[probeICMP+len(probeMagic):])
	pr.mu.Lock()
	w, ok := pr.pending[k]
	if ok && w.nonce == nonce {
		delete(pr.pending, k)
	}
	pr.mu.Unlock()
	if !ok || w.nonce != nonce {
		pr.dropped.Add(1)
		return
	}
	select {
	case w.got <- time.Now():
	default:
	}
}

// respond answers queued probe requests until stop is closed.
func (pr *prober) respond(stop <-chan struct{}) {
	buf := make([]byte, overlay.HeaderRoom+probeLen+overlay.TailRoom)
	bufs := [][]byte{nil}
	for {
		select {
		case <-stop:
			return
		case r := <-pr.queue:
			p := r.pkt[:]
			src, dst := probeAddrs(p)
			icmp := p[probeIPHeader:]
			out := buf[overlay.HeaderRoom : overlay.HeaderRoom+probeLen]
			buildProbe(out, icmpEchoReply, dst, src,
				binary.BigEndian.Uint16(icmp[4:]), binary.BigEndian.Uint16(icmp[6:]),
				binary.BigEndian.Uint64(icmp[probeICMP+len(probeMagic):]))
			bufs[0] = buf[:overlay.HeaderRoom+probeLen]
			// A link that is down now drops the answer; the pinger times out.
			_, _ = r.c.link.WriteBatch(bufs, overlay.HeaderRoom)
		}
	}
}

// errProbeTimeout: no reply within the timeout.
var errProbeTimeout = errors.New("timeout")

// ping sends one probe to c's peer and waits for the reply. It returns the
// round-trip time, or the link's write error, errProbeTimeout or ctx's error.
func (pr *prober) ping(ctx context.Context, c *linkConn, id, seq uint16, nonce uint64, timeout time.Duration) (time.Duration, error) {
	k := probeKey{peer: c.name, id: id, seq: seq}
	w := probeWait{nonce: nonce, got: make(chan time.Time, 1)}
	pr.mu.Lock()
	pr.pending[k] = w
	pr.mu.Unlock()
	defer func() {
		pr.mu.Lock()
		if cur, ok := pr.pending[k]; ok && cur.nonce == nonce {
			delete(pr.pending, k)
		}
		pr.mu.Unlock()
	}()
	buf := make([]byte, overlay.HeaderRoom+probeLen+overlay.TailRoom)
	buildProbe(buf[overlay.HeaderRoom:], icmpEchoReq, pr.self, *c.peerAddr.Load(), id, seq, nonce)
	sent := time.Now()
	if _, err := c.link.WriteBatch([][]byte{buf[:overlay.HeaderRoom+probeLen]}, overlay.HeaderRoom); err != nil {
		return 0, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case at := <-w.got:
		return at.Sub(sent), nil
	case <-t.C:
		return 0, errProbeTimeout
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
