package discovery

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"
)

// The embedded TURN server relays for mesh members only (credentials come
// over the session), but a member must not use it as a proxy into the
// coordinator's own networks: relayed peer addresses go through peerPolicy,
// once per permission (CreatePermission, ChannelBind, Connect: pion's
// PermissionHandler) and once per relayed datagram (the relay socket's
// WriteTo), where the port is known too.

// privatePrefixes are the ranges denied by default (RFC 1918, CGNAT
// RFC 6598, IPv6 ULA, which holds the mesh's own overlay /48, deprecated
// site-local, and the local-use NAT64 prefix of RFC 8215): a coordinator's
// internal networks.
var privatePrefixes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fec0::/10"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
}

// unroutablePrefixes are never a peer: "this network", reserved, the
// limited broadcast address, IPv4-compatible IPv6 (deprecated) and the IPv6
// discard prefix.
var unroutablePrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("240.0.0.0/4"), // includes 255.255.255.255
	netip.MustParsePrefix("::/96"),
	netip.MustParsePrefix("100::/64"),
}

// Translated IPv6 addresses carry an IPv4 address that a gateway on the
// path sends to: the NAT64 well-known prefix (RFC 6052, the IPv4 address in
// the last 32 bits) and 6to4 (RFC 3056, bits 16-47). IPv4-mapped addresses
// (::ffff:0:0/96) are unmapped before any check.
var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// embeddedIPv4 returns the IPv4 address a translated IPv6 address reaches.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	b := ip.As16()
	switch {
	case !ip.Is6():
		return netip.Addr{}, false
	case nat64Prefix.Contains(ip):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// ownAddrRefresh is how long the host's own address list is trusted before
// it is read again.
const ownAddrRefresh = 30 * time.Second

// peerDenial says why a peer address is refused; 0 = allowed.
type peerDenial uint8

const (
	peerAllowed    peerDenial = iota
	denyConfigured            // in denied_peer_ips
	denySpecial               // unspecified, loopback, link-local, multicast, broadcast, reserved
	denyPrivate               // private range and not allowed
	denyOwnService            // the host's own address, on a port that is not a relay port
	nDenials
)

func (d peerDenial) String() string {
	switch d {
	case peerAllowed:
		return "allowed"
	case denyConfigured:
		return "in coordinator.turn.denied_peer_ips"
	case denySpecial:
		return "loopback, link-local, multicast or unspecified address"
	case denyPrivate:
		return "private address"
	case denyOwnService:
		return "the coordinator's own address outside the relay ports"
	}
	return "unknown"
}

// peerPolicy decides which peer addresses the embedded TURN server relays
// to. Safe for concurrent use: pion calls it from its listener goroutines
// and every relay socket's writer.
type peerPolicy struct {
	// Immutable after newPeerPolicy.
	allowed, denied  []netip.Prefix
	allowPrivate     bool
	portMin, portMax uint16
	meshPorts        func() []uint16 // nil = none
	ifaceAddrs       func() ([]net.Addr, error)
	log              *slog.Logger

	own      atomic.Pointer[ownAddrs]
	refresh  sync.Mutex // serialises reading the interface list
	refused  atomic.Uint64
	reported [nDenials]atomic.Bool // each reason is logged once
}

type ownAddrs struct {
	at    time.Time
	addrs []netip.Addr
}

// newPeerPolicy builds the policy of o. Private ranges are denied unless
// listed in o.AllowedPeers, or a relay address is itself private: such a
// coordinator serves a private network (a home lab) and its peers live
// there too.
func newPeerPolicy(o *TURNOptions, log *slog.Logger) *peerPolicy {
	p := &peerPolicy{
		allowed:      slices.Clone(o.AllowedPeers),
		denied:       slices.Clone(o.DeniedPeers),
		allowPrivate: inPrefixes(o.RelayAddress.Unmap(), privatePrefixes) || inPrefixes(o.RelayAddress6, privatePrefixes),
		portMin:      o.RelayPortMin,
		portMax:      o.RelayPortMax,
		meshPorts:    o.MeshPorts,
		ifaceAddrs:   net.InterfaceAddrs,
		log:          log,
	}
	if o.interfaceAddrs != nil {
		p.ifaceAddrs = o.interfaceAddrs
	}
	return p
}

func inPrefixes(a netip.Addr, list []netip.Prefix) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// check classifies ip (ignoring ports): allowed_peer_ips first (it
// overrides everything but the own-service rule, as coturn's
// allowed-peer-ip overrides denied-peer-ip), then denied_peer_ips, the
// special addresses, and private ranges. A NAT64 or 6to4 address is
// classified as the IPv4 address it reaches, unless allowed_peer_ips lists
// the IPv6 address itself.
func (p *peerPolicy) check(ip netip.Addr) peerDenial {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return denySpecial
	case inPrefixes(ip, p.allowed):
		return peerAllowed
	case inPrefixes(ip, p.denied):
		return denyConfigured
	case ip.IsUnspecified(), ip.IsLoopback(), ip.IsLinkLocalUnicast(), ip.IsMulticast(),
		ip.IsInterfaceLocalMulticast(), inPrefixes(ip, unroutablePrefixes):
		return denySpecial
	case !p.allowPrivate && inPrefixes(ip, privatePrefixes) && !p.isOwn(ip):
		// The host's own private address stays allowed here: relay-to-relay
		// on a private relay address; checkSend keeps it to relay ports.
		return denyPrivate
	}
	if v4, ok := embeddedIPv4(ip); ok {
		return p.check(v4)
	}
	return peerAllowed
}

// checkSend classifies a relayed datagram's destination: check, and the
// host's own (non-loopback) addresses only on relay ports and the node's
// mesh ports, so two allocations on this server reach each other, a peer
// reaches this host's own mesh node, and nothing else listening on the host
// is reached.
func (p *peerPolicy) checkSend(ap netip.AddrPort) peerDenial {
	ip := ap.Addr().Unmap()
	if d := p.check(ip); d != peerAllowed {
		return d
	}
	if v4, ok := embeddedIPv4(ip); ok && p.ownService(v4, ap.Port()) {
		return denyOwnService // through a NAT64 or 6to4 gateway
	}
	if p.ownService(ip, ap.Port()) {
		return denyOwnService
	}
	return peerAllowed
}

// ownService reports whether ip:port is one of the host's own (non-loopback)
// addresses on a port that is neither a relay port nor a mesh port.
func (p *peerPolicy) ownService(ip netip.Addr, port uint16) bool {
	return !ip.IsLoopback() && (port < p.portMin || port > p.portMax) && p.isOwn(ip) &&
		(p.meshPorts == nil || !slices.Contains(p.meshPorts(), port))
}

// isOwn reports whether ip is one of the host's interface addresses.
func (p *peerPolicy) isOwn(ip netip.Addr) bool {
	o := p.own.Load()
	if o == nil || time.Since(o.at) > ownAddrRefresh {
		o = p.readOwn()
	}
	return slices.Contains(o.addrs, ip)
}

func (p *peerPolicy) readOwn() *ownAddrs {
	p.refresh.Lock()
	defer p.refresh.Unlock()
	if o := p.own.Load(); o != nil && time.Since(o.at) <= ownAddrRefresh {
		return o
	}
	o := &ownAddrs{at: time.Now()}
	if addrs, err := p.ifaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					o.addrs = append(o.addrs, ip.Unmap())
				}
			}
		}
	}
	p.own.Store(o)
	return o
}

// refuse counts a refusal and logs its reason the first time, with the key
// that changes the decision.
func (p *peerPolicy) refuse(d peerDenial, peer string) {
	p.refused.Add(1)
	if p.reported[d].Swap(true) {
		return
	}
	p.log.Warn("TURN refused to relay to a peer address; further refusals of this kind are only counted",
		"peer", peer, "reason", d.String(),
		"hint", "list the peer's prefix in coordinator.turn.allowed_peer_ips if this coordinator should relay there")
}

// permit is pion's PermissionHandler (CreatePermission, ChannelBind and
// TCP Connect requests).
func (p *peerPolicy) permit(_ net.Addr, peerIP net.IP) bool {
	ip, _ := netip.AddrFromSlice(peerIP)
	if d := p.check(ip); d != peerAllowed {
		p.refuse(d, ip.String())
		return false
	}
	return true
}

// permitAddr checks a relayed destination; addr is a *net.UDPAddr or
// *net.TCPAddr from pion.
func (p *peerPolicy) permitAddr(addr net.Addr) bool {
	var ap netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
	case *net.TCPAddr:
		ap = a.AddrPort()
	}
	if d := p.checkSend(ap); d != peerAllowed {
		p.refuse(d, ap.String())
		return false
	}
	return true
}

// errPeerRefused is returned for a TCP relay connection the policy
// refuses.
var errPeerRefused = errors.New("discovery: TURN peer address refused by policy")

// filteredRelay wraps a relay address generator so the relay sockets it
// makes send only where the policy allows.
type filteredRelay struct {
	turn.RelayAddressGenerator
	p    *peerPolicy
	fast *turnFast // nil: no fast path
}

func (g filteredRelay) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.RelayAddressGenerator.AllocatePacketConn(c)
	if err != nil {
		return nil, nil, err
	}
	if g.fast != nil {
		pc = g.fast.wrapRelay(pc)
	}
	return &filteredPacketConn{PacketConn: pc, p: g.p}, addr, nil
}

func (g filteredRelay) AllocateConn(c turn.AllocateConnConfig) (net.Conn, error) {
	if !g.p.permitAddr(c.RemoteAddr) {
		return nil, errPeerRefused
	}
	return g.RelayAddressGenerator.AllocateConn(c)
}

// filteredPacketConn drops (and counts) datagrams to refused destinations.
// A refused datagram reports success, as a lost datagram would: an error
// would only make pion log per packet.
type filteredPacketConn struct {
	net.PacketConn
	p *peerPolicy
}

func (c *filteredPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if !c.p.permitAddr(addr) {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

// TURNPeersRefused counts the relay permissions and relayed datagrams the
// embedded TURN server refused by its peer-address policy
// (coordinator.turn.allowed_peer_ips / denied_peer_ips) since Start.
func (c *Coordinator) TURNPeersRefused() uint64 {
	if c.turn != nil {
		return c.turn.peers.refused.Load()
	}
	return 0
}
