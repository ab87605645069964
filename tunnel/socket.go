package tunnel

/* The shared UDP socket
 *
 * One socket per node serves every link (so a firewall needs one hole):
 *
 *   kernel socket ── sharedSocket (screens each datagram, counts drops)
 *                 ── pion UniversalUDPMux (STUN by ufrag, everything else by source address)
 *                 ── one ice.Agent per link ── DTLS
 *
 * sharedSocket drops, before the mux sees them, datagrams that no link
 * could use (RFC 7983 demultiplexing by first byte):
 *   - garbage: the first byte is neither STUN (0..3) nor DTLS (20..63);
 *   - malformed: STUN or DTLS framing that does not hold (truncated
 *     records, a length that overruns the datagram, unknown record version);
 *   - unknown source: DTLS from an address no link has sent anything to
 *     (the mux would drop it too; counting it here makes it visible).
 * STUN from new addresses passes: that is how peer-reflexive candidates and
 * restarted peers are found.
 *
 * Relayed paths use their own sockets towards the TURN servers (opened by
 * pion's gatherer), not this one.
 */

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
)

// Stats are counters of a Manager.
type Stats struct {
	// DroppedGarbage counts datagrams on the shared port whose first byte is
	// neither STUN nor DTLS.
	DroppedGarbage uint64
	// DroppedMalformed counts STUN or DTLS datagrams with broken framing
	// (truncated, bad length or version).
	DroppedMalformed uint64
	// DroppedUnknownSource counts DTLS datagrams from addresses no link has
	// sent to.
	DroppedUnknownSource uint64
	// ReplayedRecords counts DTLS records that arrived on a link with an
	// epoch and sequence number already seen (or older than the replay
	// window); DTLS discards them. Counted before authentication, so forged
	// duplicates count too.
	ReplayedRecords uint64
	// SignalsInvalid counts received signals that did not decode.
	SignalsInvalid uint64
	// SignalsUnknownPeer counts signals from peers without a link.
	SignalsUnknownPeer uint64
	// SignalsDropped counts signals dropped because a link's inbox was full.
	SignalsDropped uint64
	// EventsDropped counts events dropped because subscribers were too slow.
	EventsDropped uint64
}

// counters are the Manager's Stats, updated atomically from any goroutine.
type counters struct {
	garbage, malformed, unknownSource, replayed    atomic.Uint64
	signalsInvalid, signalsUnknown, signalsDropped atomic.Uint64
}

// knownSourceTTL is how long an address the socket sent to stays "known"
// without further sends. Links send keepalives every second or so.
const knownSourceTTL = 10 * time.Minute

// sharedSocket wraps the node's UDP socket under pion's mux (see the file
// comment). It implements ice.AddrPortReaderWriter so the mux stays
// allocation-free on *net.UDPConn.
type sharedSocket struct {
	net.PacketConn              // LocalAddr, Close, deadlines pass through
	udp            *net.UDPConn // the same socket when it is a *net.UDPConn, else nil
	counters       *counters

	// clock is a coarse time (unix seconds) updated by the manager's
	// housekeeping, so that writes do not call time.Now per packet.
	clock atomic.Int64
	// known maps netip.AddrPort -> *atomic.Int64 (clock of the last send).
	known sync.Map
}

var _ ice.AddrPortReaderWriter = (*sharedSocket)(nil)

func newSharedSocket(conn net.PacketConn, c *counters) *sharedSocket {
	s := &sharedSocket{PacketConn: conn, counters: c}
	s.udp, _ = conn.(*net.UDPConn)
	s.clock.Store(time.Now().Unix())
	return s
}

// tick advances the coarse clock and forgets addresses not sent to for
// knownSourceTTL. Called by the manager's housekeeping goroutine.
func (s *sharedSocket) tick(now time.Time) {
	s.clock.Store(now.Unix())
	cutoff := now.Add(-knownSourceTTL).Unix()
	s.known.Range(func(k, v any) bool {
		if v.(*atomic.Int64).Load() < cutoff {
			s.known.Delete(k)
		}
		return true
	})
}

func (s *sharedSocket) remember(ap netip.AddrPort) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	now := s.clock.Load()
	if v, ok := s.known.Load(ap); ok {
		if t := v.(*atomic.Int64); t.Load() != now {
			t.Store(now)
		}
		return
	}
	t := new(atomic.Int64)
	t.Store(now)
	s.known.Store(ap, t)
}

func (s *sharedSocket) isKnown(ap netip.AddrPort) bool {
	_, ok := s.known.Load(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	return ok
}

func (s *sharedSocket) readRaw(b []byte) (int, netip.AddrPort, error) {
	if s.udp != nil {
		return s.udp.ReadFromUDPAddrPort(b)
	}
	n, addr, err := s.PacketConn.ReadFrom(b)
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, netip.AddrPort{}, errors.New("tunnel: shared socket returned a non-UDP address")
	}
	return n, ua.AddrPort(), nil
}

// ReadFromAddrPort returns the next datagram that passes the screen.
func (s *sharedSocket) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		n, ap, err := s.readRaw(b)
		if err != nil {
			return n, ap, err
		}
		switch s.screen(b[:n], ap) {
		case dropNone:
			return n, ap, nil
		case dropGarbage:
			s.counters.garbage.Add(1)
		case dropMalformed:
			s.counters.malformed.Add(1)
		case dropUnknownSource:
			s.counters.unknownSource.Add(1)
		}
	}
}

// ReadFrom is ReadFromAddrPort for callers that want a net.Addr.
func (s *sharedSocket) ReadFrom(b []byte) (int, net.Addr, error) {
	n, ap, err := s.ReadFromAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	return n, net.UDPAddrFromAddrPort(ap), nil
}

// WriteToAddrPort sends b to ap and remembers ap as a known source.
func (s *sharedSocket) WriteToAddrPort(b []byte, ap netip.AddrPort) (int, error) {
	s.remember(ap)
	if s.udp != nil {
		return s.udp.WriteToUDPAddrPort(b, ap)
	}
	return s.PacketConn.WriteTo(b, net.UDPAddrFromAddrPort(ap))
}

// WriteTo is WriteToAddrPort for callers with a net.Addr.
func (s *sharedSocket) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		s.remember(ua.AddrPort())
	}
	return s.PacketConn.WriteTo(b, addr)
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
	dtlsVersionMajor     = 0xfe
	dtlsVersion12Minor   = 0xfd
	dtlsVersion10Minor   = 0xff // ClientHello records may carry DTLS 1.0
	stunHeaderLen        = 20
	rfc7983DTLSFirstByte = 20
	rfc7983DTLSLastByte  = 63
)

// screen decides whether a datagram from src may go up to the mux.
func (s *sharedSocket) screen(b []byte, src netip.AddrPort) dropReason {
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
		if !s.isKnown(src) {
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

// sharedMux is pion's universal mux with the host-candidate addresses
// filtered: when the socket listens on an unspecified address pion offers
// every interface address, including loopback, link-local and the overlay
// itself, none of which a peer on another host can (or should) use.
type sharedMux struct {
	*ice.UniversalUDPMuxDefault
	keep func(netip.Addr) bool
}

// GetListenAddresses returns the host-candidate addresses, filtered.
func (m *sharedMux) GetListenAddresses() []net.Addr {
	all := m.UniversalUDPMuxDefault.GetListenAddresses()
	out := make([]net.Addr, 0, len(all))
	for _, a := range all {
		ua, ok := a.(*net.UDPAddr)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ua.IP)
		if !ok || !m.keep(ip.Unmap()) {
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
