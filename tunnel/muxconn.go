package tunnel

/* Control traffic on the shared port
 *
 * The node's UDP sockets (socket.go) carry three kinds of datagram, told
 * apart by the receive demultiplexer (demux.go) with RFC 7983's first-byte
 * rule plus the record epoch:
 *
 *   first byte 0..3             STUN             → muxConn → pion UniversalUDPMux
 *   20..63, epoch 0x4000..7fff  meshd data record → decrypt stage (demux.go)
 *   20..63, other epochs        pion DTLS record  → muxConn → mux → ice.Conn
 *                                                  → the session's DTLS transport
 *   anything else               dropped (garbage)
 *
 * Before a control datagram reaches the mux it is screened (screen): STUN
 * and DTLS framing must hold (else malformed), and DTLS must come from an
 * address the node has sent to (else unknown source; the mux would drop it
 * too, counting it here makes it visible). STUN from new addresses passes:
 * that is how peer-reflexive candidates and restarted peers are found.
 *
 * muxConn is the net.PacketConn pion's mux reads and writes. Readers push a
 * copy of each control datagram into its bounded queue and never block (a
 * full queue drops the datagram, counted as DroppedControl); the mux's own
 * goroutine takes them out. Writes (ICE checks, DTLS handshake flights) go
 * straight to the socket of the destination's address family, and remember
 * the destination as a known source.
 *
 * Relayed paths use their own sockets towards the TURN servers (opened by
 * pion's gatherer), not these.
 */

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
)

// knownSourceTTL is how long an address the node sent control traffic to
// stays "known" without further sends. Links send keepalives every second
// or so, idle ones every Timers.IdleKeepalive (20 s).
const knownSourceTTL = 10 * time.Minute

// ctrlQueueLen bounds control datagrams queued for the mux (and for each
// DTLS transport).
const ctrlQueueLen = 512

// maxCtrlDatagram is the largest control datagram accepted: pion's own
// receive buffers are 8 KiB.
const maxCtrlDatagram = 8192

// ctrlPool holds control-datagram copies (*[]byte of maxCtrlDatagram).
var ctrlPool = sync.Pool{New: func() any {
	b := make([]byte, maxCtrlDatagram)
	return &b
}}

// knownSources remembers the addresses the node sent control traffic to.
type knownSources struct {
	// clock is a coarse time (unix seconds) advanced by the manager's
	// housekeeping, so that writes do not call time.Now.
	clock atomic.Int64
	// m maps netip.AddrPort -> *atomic.Int64 (clock of the last send).
	m sync.Map
}

func newKnownSources() *knownSources {
	k := &knownSources{}
	k.clock.Store(time.Now().Unix())
	return k
}

// tick advances the coarse clock and forgets addresses not sent to for
// knownSourceTTL.
func (k *knownSources) tick(now time.Time) {
	k.clock.Store(now.Unix())
	cutoff := now.Add(-knownSourceTTL).Unix()
	k.m.Range(func(key, v any) bool {
		if v.(*atomic.Int64).Load() < cutoff {
			k.m.Delete(key)
		}
		return true
	})
}

func (k *knownSources) remember(ap netip.AddrPort) {
	ap = unmapAddrPort(ap)
	now := k.clock.Load()
	if v, ok := k.m.Load(ap); ok {
		if t := v.(*atomic.Int64); t.Load() != now {
			t.Store(now)
		}
		return
	}
	t := new(atomic.Int64)
	t.Store(now)
	k.m.Store(ap, t)
}

func (k *knownSources) isKnown(ap netip.AddrPort) bool {
	_, ok := k.m.Load(unmapAddrPort(ap))
	return ok
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

type dropReason int

const (
	dropNone dropReason = iota
	dropGarbage
	dropMalformed
	dropUnknownSource
)

// DTLS record layer constants (RFC 6347 section 4.1).
const (
	dtlsRecordHeaderLen  = 13
	dtlsContentMin       = 20 // change_cipher_spec
	dtlsContentMax       = 23 // application_data; meshd uses no CID (25) or heartbeat (24) records
	dtlsContentHandshake = 22
	dtlsHandshakeHello   = 1 // client_hello
	dtlsVersionMajor     = 0xfe
	dtlsVersion12Minor   = 0xfd
	dtlsVersion10Minor   = 0xff // ClientHello records may carry DTLS 1.0
	stunHeaderLen        = 20
	rfc7983DTLSFirstByte = 20
	rfc7983DTLSLastByte  = 63
)

// screen decides whether a control datagram (not a data record) from src
// may go up to the mux.
func (k *knownSources) screen(b []byte, src netip.AddrPort) dropReason {
	if len(b) == 0 {
		return dropGarbage
	}
	switch c := b[0]; {
	case c <= 3:
		if !validSTUNFrame(b) {
			return dropMalformed
		}
		return dropNone
	case c >= rfc7983DTLSFirstByte && c <= rfc7983DTLSLastByte:
		if !validDTLSFrame(b) {
			return dropMalformed
		}
		if !k.isKnown(src) {
			return dropUnknownSource
		}
		return dropNone
	default:
		return dropGarbage
	}
}

// validSTUNFrame checks the STUN header: magic cookie, zero top bits, and a
// length field that matches the datagram (RFC 8489 section 5).
func validSTUNFrame(b []byte) bool {
	if !stun.IsMessage(b) || b[0]&0xc0 != 0 {
		return false
	}
	l := int(binary.BigEndian.Uint16(b[2:4]))
	return l%4 == 0 && stunHeaderLen+l == len(b)
}

// validDTLSFrame walks the records of a datagram: each needs a full header,
// a known content type and version, and a length inside the datagram.
func validDTLSFrame(b []byte) bool {
	for len(b) > 0 {
		if len(b) < dtlsRecordHeaderLen {
			return false
		}
		if b[0] < dtlsContentMin || b[0] > dtlsContentMax {
			return false
		}
		if b[1] != dtlsVersionMajor || (b[2] != dtlsVersion12Minor && b[2] != dtlsVersion10Minor) {
			return false
		}
		l := int(binary.BigEndian.Uint16(b[11:13]))
		if l == 0 || dtlsRecordHeaderLen+l > len(b) {
			return false
		}
		b = b[dtlsRecordHeaderLen+l:]
	}
	return true
}

// isClientHello reports whether a DTLS datagram starts with a plaintext
// ClientHello (epoch 0, handshake type client_hello): the first flight of a
// new handshake.
func isClientHello(b []byte) bool {
	return len(b) > dtlsRecordHeaderLen && b[0] == dtlsContentHandshake &&
		b[3] == 0 && b[4] == 0 && b[dtlsRecordHeaderLen] == dtlsHandshakeHello
}

// ctrlDatagram is a queued copy of a control datagram.
type ctrlDatagram struct {
	buf *[]byte // from ctrlPool
	n   int
	src netip.AddrPort
}

// muxConn is the net.PacketConn under pion's UniversalUDPMux (see the file
// comment). It implements ice.AddrPortReaderWriter so the mux stays
// allocation-free.
type muxConn struct {
	socks    *socketSet
	known    *knownSources
	counters *counters
	gates    *idleGates
	q        chan ctrlDatagram
	closed   chan struct{}
	once     sync.Once
}

var (
	_ ice.AddrPortReaderWriter = (*muxConn)(nil)
	_ net.PacketConn           = (*muxConn)(nil)
)

func newMuxConn(socks *socketSet, known *knownSources, c *counters, gates *idleGates) *muxConn {
	return &muxConn{socks: socks, known: known, counters: c, gates: gates, q: make(chan ctrlDatagram, ctrlQueueLen), closed: make(chan struct{})}
}

// push queues a copy of b from src for the mux. Called by socket readers;
// never blocks.
func (c *muxConn) push(b []byte, src netip.AddrPort) {
	if len(b) > maxCtrlDatagram {
		c.counters.malformed.Add(1)
		return
	}
	buf := ctrlPool.Get().(*[]byte)
	n := copy(*buf, b)
	select {
	case c.q <- ctrlDatagram{buf: buf, n: n, src: src}:
	default:
		ctrlPool.Put(buf)
		c.counters.ctrlDropped.Add(1)
	}
}

// ReadFromAddrPort returns the next queued control datagram.
func (c *muxConn) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	select {
	case d := <-c.q:
		n := copy(b, (*d.buf)[:d.n])
		ctrlPool.Put(d.buf)
		return n, d.src, nil
	case <-c.closed:
		return 0, netip.AddrPort{}, io.EOF
	}
}

// ReadFrom is ReadFromAddrPort for callers that want a net.Addr.
func (c *muxConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, ap, err := c.ReadFromAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(ap), nil
}

// WriteToAddrPort sends b to ap and remembers ap as a known source. A
// check an idle link withholds (idle.go) is reported as sent.
func (c *muxConn) WriteToAddrPort(b []byte, ap netip.AddrPort) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	ap = unmapAddrPort(ap)
	if c.gates != nil && !c.gates.allow(b, ap, false) {
		return len(b), nil
	}
	c.known.remember(ap)
	return c.socks.writeTo(b, ap)
}

// WriteTo is WriteToAddrPort for callers with a net.Addr.
func (c *muxConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, errors.New("tunnel: shared socket can only write to UDP addresses")
	}
	return c.WriteToAddrPort(b, ua.AddrPort())
}

// Close stops reads (the mux's reader returns); the sockets stay open
// until the manager closes them.
func (c *muxConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *muxConn) LocalAddr() net.Addr                { return c.socks.local }
func (c *muxConn) SetDeadline(time.Time) error        { return nil }
func (c *muxConn) SetReadDeadline(time.Time) error    { return nil }
func (c *muxConn) SetWriteDeadline(t time.Time) error { return nil }

// sharedMux is pion's universal mux with the host-candidate addresses
// filtered: when the socket listens on an unspecified address pion offers
// every interface address, including loopback, link-local, the overlay
// itself and other tunnels', none of which a peer on another host can (or
// should) use.
type sharedMux struct {
	*ice.UniversalUDPMuxDefault
	keep func(netip.Addr) bool
	// keepAll, or nil, returns the set of addresses of the interfaces that
	// may offer candidates (ifaceJudge), looked up once per listing.
	keepAll func() map[netip.Addr]bool
}

// GetListenAddresses returns the host-candidate addresses, filtered.
func (m *sharedMux) GetListenAddresses() []net.Addr {
	all := m.UniversalUDPMuxDefault.GetListenAddresses()
	var allowed map[netip.Addr]bool
	if m.keepAll != nil {
		allowed = m.keepAll()
	}
	out := make([]net.Addr, 0, len(all))
	for _, a := range all {
		ua, ok := a.(*net.UDPAddr)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ua.IP)
		if !ok || !m.keep(ip.Unmap()) || (allowed != nil && !allowed[ip.Unmap()]) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// addrFilter returns the rule for local and remote candidate addresses.
// When bound to a specific address that address is used as is (tests bind
// loopback); on an unspecified bind loopback and link-local addresses are
// skipped. Excluded prefixes (the overlay) are always skipped.
func addrFilter(bindUnspecified bool, exclude []netip.Prefix) func(netip.Addr) bool {
	return func(ip netip.Addr) bool {
		ip = ip.Unmap()
		if !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() {
			return false
		}
		if bindUnspecified && (ip.IsLoopback() || ip.IsLinkLocalUnicast()) {
			return false
		}
		for _, p := range exclude {
			if p.Contains(ip) {
				return false
			}
		}
		return true
	}
}

// errRedundantSrflx: the STUN server saw a host candidate's own address.
var errRedundantSrflx = errors.New("tunnel: server-reflexive address is a host-candidate address (no NAT)")

// GetXORMappedAddrContext is pion's srflx discovery, minus redundant
// results. On a host without NAT the mapped address is the host
// candidate's own address. pion would still add a srflx candidate for it,
// on its own muxed conn (keyed ufrag+URL) of the same socket; the mux
// routes a remote's datagrams to whichever of the two conns wrote to it
// last, and the peer's findRemoteCandidate picks whichever of the two
// remote candidates came first, so checks of the host pair are credited to
// srflx pairs and the host pair never succeeds (RFC 8445 5.1.3: drop the
// redundant candidate).
func (m *sharedMux) GetXORMappedAddrContext(ctx context.Context, server net.Addr, deadline time.Duration) (*stun.XORMappedAddress, error) {
	xor, err := m.UniversalUDPMuxDefault.GetXORMappedAddrContext(ctx, server, deadline)
	if err != nil {
		return nil, err
	}
	mapped, ok := netip.AddrFromSlice(xor.IP)
	if !ok {
		return xor, nil
	}
	for _, a := range m.GetListenAddresses() {
		if ua, ok := a.(*net.UDPAddr); ok && ua.Port == xor.Port {
			if ip, ok := netip.AddrFromSlice(ua.IP); ok && ip.Unmap() == mapped.Unmap() {
				return nil, errRedundantSrflx
			}
		}
	}
	return xor, nil
}

// errSrflxFamily: a server-reflexive conn on a base of the other family.
var errSrflxFamily = errors.New("tunnel: the STUN server and the listen address are of different families")

// GetConnForURL refuses a server-reflexive conn whose base address is of
// the other family than the STUN server's (an IP literal in url; a name is
// let through): pion asks for one per listen address of every family, so
// on a dual-stack socket an IPv4 mapping would also become a candidate on
// each IPv6 base (same mapped address, another base), which splits the
// mux's routing of that remote between the conns (see
// GetXORMappedAddrContext). pion logs the refusal and adds no candidate.
func (m *sharedMux) GetConnForURL(ufrag, url string, addr net.Addr) (net.PacketConn, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		if u, err := stun.ParseURI(url); err == nil {
			if ip, err := netip.ParseAddr(u.Host); err == nil && ip.Unmap().Is4() != (ua.IP.To4() != nil) {
				return nil, errSrflxFamily
			}
		}
	}
	return m.UniversalUDPMuxDefault.GetConnForURL(ufrag, url, addr)
}

// GetXORMappedAddr is GetXORMappedAddrContext without a context.
func (m *sharedMux) GetXORMappedAddr(server net.Addr, deadline time.Duration) (*stun.XORMappedAddress, error) {
	return m.GetXORMappedAddrContext(context.Background(), server, deadline)
}
