package tunnel

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5"
)

// maxRelayPeers bounds the destinations one relay socket remembers. A TURN
// client only ever writes to its server, so this is a safety cap, not a
// working limit.
const maxRelayPeers = 16

// relayNet is the transport.Net every ICE agent gets: the configured one
// (Options.Net) or the host's, with ListenPacket guarded.
//
// pion/ice opens one socket per UDP TURN server with Net.ListenPacket
// (gatherCandidatesRelay; host and server-reflexive candidates use the
// shared socket through the UDP mux, never this) and runs pion/turn's
// Client.Listen on it. That read loop ends on the first datagram it cannot
// handle (undecodable STUN, a STUN request, ChannelData on an unbound
// channel), which silently kills the relayed link until the next ICE
// attempt. The socket is bound to an ephemeral port that shows on the wire
// and in the relay candidate's related address, so anyone could send such a
// datagram. relayNet's sockets therefore deliver only datagrams from
// addresses they have sent to (the TURN server) and count the rest in
// Stats.DroppedRelayForeign. It also binds them to the shared socket's
// address when that is specific, rather than pion's 0.0.0.0 or [::].
type relayNet struct {
	transport.Net
	bind  netip.Addr // invalid: keep pion's address
	guard *relayGuard
}

// ListenPacket opens a filtered UDP socket; other networks pass through.
func (n *relayNet) ListenPacket(network, address string) (net.PacketConn, error) {
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return n.Net.ListenPacket(network, address)
	}
	pc, err := n.Net.ListenPacket(network, n.bindAddress(network, address))
	if err != nil {
		return nil, err
	}
	return n.guard.wrap(pc), nil
}

// bindAddress replaces an unspecified host in address by n.bind when the
// families agree.
func (n *relayNet) bindAddress(network, address string) string {
	if !n.bind.IsValid() {
		return address
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return address
	}
	if host != "" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsUnspecified() {
			return address
		}
	}
	switch {
	case network == "udp4" && !n.bind.Is4(), network == "udp6" && !n.bind.Is6():
		return address
	}
	return net.JoinHostPort(n.bind.String(), port)
}

// relayGuard is the Manager's side of the relay sockets: the drop counter
// and the sockets open now.
type relayGuard struct {
	foreign *atomic.Uint64
	gates   *idleGates // nil: no idle gating

	mu      sync.Mutex
	live    map[*relayConn]struct{}
	streams map[*turnStream]struct{} // TURN over TCP/TLS (relaystream.go)
}

func newRelayGuard(foreign *atomic.Uint64, gates *idleGates) *relayGuard {
	return &relayGuard{foreign: foreign, gates: gates, live: make(map[*relayConn]struct{})}
}

func (g *relayGuard) wrap(pc net.PacketConn) *relayConn {
	c := &relayConn{PacketConn: pc, g: g}
	g.mu.Lock()
	g.live[c] = struct{}{}
	g.mu.Unlock()
	return c
}

// addrs returns the local addresses of the open relay sockets.
func (g *relayGuard) addrs() []net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]net.Addr, 0, len(g.live))
	for c := range g.live {
		out = append(out, c.LocalAddr())
	}
	return out
}

// relayConn is a relay socket that delivers only datagrams from addresses it
// has sent to.
type relayConn struct {
	net.PacketConn
	g *relayGuard

	mu    sync.RWMutex
	peers []netip.AddrPort // destinations written to, at most maxRelayPeers

	perms permissions // TURN permissions this allocation asks for (relayperm.go)
}

// WriteTo remembers the destination before sending, so that the answer is
// never read before it is expected. A check an idle link withholds (a
// binding request inside the TURN framing, idle.go) is reported as sent; a
// permission request the server refused lately, or one an idle link does
// not need, fails at once (relayperm.go).
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if c.g.gates != nil {
		if g, ok := c.g.gates.gateOf(p); ok {
			c.perms.gate.Store(g)
		}
		if !c.g.gates.allow(p, netip.AddrPort{}, true) {
			return len(p), nil
		}
	}
	if err := c.perms.check(p, time.Now()); err != nil {
		return 0, err
	}
	if ap, ok := addrPortOf(addr); ok && !c.sentTo(ap) {
		c.mu.Lock()
		if len(c.peers) < maxRelayPeers && !c.sentToLocked(ap) {
			c.peers = append(c.peers, ap)
		}
		c.mu.Unlock()
	}
	return c.PacketConn.WriteTo(p, addr)
}

// LocalAddr is the socket's address, except that an unspecified IPv6
// one reads as ::ffff:0.0.0.0. pion's TURN client takes the family of the
// allocation from it (pion/ice asks for none while both families are
// gathered), so a socket on [::] would ask for an IPv6 relayed address;
// this way it asks for the RFC 6156 default, IPv4, over either transport.
// Every peer with IPv4 reaches an IPv4 relayed address, which is how an
// IPv6-only node meets an IPv4-only one; peers that both have IPv6 meet
// directly. (pion/ice shows the same address as the relay candidate's
// related address: 0.0.0.0 instead of ::, both meaning "any".)
func (c *relayConn) LocalAddr() net.Addr {
	a := c.PacketConn.LocalAddr()
	if ua, ok := a.(*net.UDPAddr); ok && ua.IP.To4() == nil && ua.IP.IsUnspecified() {
		return &net.UDPAddr{IP: net.IPv4zero.To16(), Port: ua.Port}
	}
	return a
}

// ReadFrom returns the next datagram from an address this socket sent to,
// dropping the others.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, from, err
		}
		if ap, ok := addrPortOf(from); ok && c.sentTo(ap) {
			c.perms.answer(p[:n], time.Now())
			return n, from, nil
		}
		c.g.foreign.Add(1)
	}
}

// Close closes the socket and forgets it.
func (c *relayConn) Close() error {
	c.g.mu.Lock()
	delete(c.g.live, c)
	c.g.mu.Unlock()
	return c.PacketConn.Close()
}

func (c *relayConn) sentTo(ap netip.AddrPort) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.sentToLocked(ap)
}

func (c *relayConn) sentToLocked(ap netip.AddrPort) bool {
	for _, p := range c.peers {
		if p == ap {
			return true
		}
	}
	return false
}

// addrPortOf converts a UDP address (the host's or vnet's) for comparison,
// IPv4-mapped addresses unmapped.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	var ap netip.AddrPort
	if ua, ok := a.(*net.UDPAddr); ok {
		ap = ua.AddrPort()
	} else if a != nil {
		var err error
		if ap, err = netip.ParseAddrPort(a.String()); err != nil {
			return netip.AddrPort{}, false
		}
	}
	if !ap.IsValid() {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
