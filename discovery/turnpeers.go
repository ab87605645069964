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

	"github.com/meshd/meshd/internal/peerpolicy"
)

// The embedded TURN server relays for mesh members only (credentials come
// over the session), but a member must not use it as a proxy into the
// coordinator's own networks: relayed peer addresses go through peerPolicy,
// once per permission (CreatePermission, ChannelBind, Connect: pion's
// PermissionHandler) and once per relayed datagram (the relay socket's
// WriteTo), where the port is known too.

// privatePrefixes are the private ranges (peerpolicy.PrivatePrefixes; the
// first three are RFC 1918).
var privatePrefixes = peerpolicy.PrivatePrefixes()

func inPrefixes(a netip.Addr, list []netip.Prefix) bool { return peerpolicy.Contains(list, a) }

// ownAddrRefresh is how long the host's own address list is trusted before
// it is read again.
const ownAddrRefresh = 30 * time.Second

// peerDenial says why a peer address is refused; peerAllowed = not refused.
type peerDenial = peerpolicy.Reason

const (
	peerAllowed    = peerpolicy.Allowed
	denyConfigured = peerpolicy.Configured // in denied_peer_ips
	denySpecial    = peerpolicy.Special    // unspecified, loopback, link-local, multicast, broadcast, reserved
	denyPrivate    = peerpolicy.Private    // private range and not allowed
	denyOwnService = peerpolicy.OwnService // the host's own address, on a port that is not a relay port
)

// denialText is d as the coordinator's log says it, with its keys.
func denialText(d peerDenial) string {
	switch d {
	case denyConfigured:
		return "in coordinator.turn.denied_peer_ips"
	case denyOwnService:
		return "the coordinator's own address outside the relay ports"
	}
	return d.String()
}

// peerPolicy decides which peer addresses the embedded TURN server relays
// to: peerpolicy's default check with the coordinator's allowed/denied
// lists, relay ports and mesh ports. Safe for concurrent use: pion calls it
// from its listener goroutines and every relay socket's writer.
type peerPolicy struct {
	// Immutable after newPeerPolicy.
	def              peerpolicy.Policy
	allowPrivate     bool // def.AllowPrivate: a relay address is private
	portMin, portMax uint16
	meshPorts        func() []uint16 // nil = none
	ifaceAddrs       func() ([]net.Addr, error)
	log              *slog.Logger

	own     atomic.Pointer[ownAddrs]
	refresh sync.Mutex // serialises reading the interface list
	refused peerpolicy.Refusals
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
		portMin:    o.RelayPortMin,
		portMax:    o.RelayPortMax,
		meshPorts:  o.MeshPorts,
		ifaceAddrs: net.InterfaceAddrs,
		log:        log,
	}
	if o.interfaceAddrs != nil {
		p.ifaceAddrs = o.interfaceAddrs
	}
	p.allowPrivate = peerpolicy.AllowPrivateFor(o.RelayAddress, o.RelayAddress6)
	p.def = peerpolicy.Policy{
		Allowed:      slices.Clone(o.AllowedPeers),
		Denied:       slices.Clone(o.DeniedPeers),
		AllowPrivate: p.allowPrivate,
		IsOwn:        p.isOwn,
		OpenPort:     p.openPort,
	}
	return p
}

// check classifies ip (ignoring ports): allowed_peer_ips first (it
// overrides everything but the own-service rule, as coturn's
// allowed-peer-ip overrides denied-peer-ip), then denied_peer_ips, the
// special addresses, and private ranges (peerpolicy.Policy.Check).
func (p *peerPolicy) check(ip netip.Addr) peerDenial { return p.def.Check(ip) }

// checkSend classifies a relayed datagram's destination: check, and the
// host's own (non-loopback) addresses only on relay ports and the node's
// mesh ports, so two allocations on this server reach each other, a peer
// reaches this host's own mesh node, and nothing else listening on the host
// is reached.
func (p *peerPolicy) checkSend(ap netip.AddrPort) peerDenial { return p.def.CheckSend(ap) }

// openPort reports whether port is a relay port or a mesh port.
func (p *peerPolicy) openPort(port uint16) bool {
	return (port >= p.portMin && port <= p.portMax) || (p.meshPorts != nil && slices.Contains(p.meshPorts(), port))
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
	if !p.refused.Add(d) {
		return
	}
	p.log.Warn("TURN refused to relay to a peer address; further refusals of this kind are only counted",
		"peer", peer, "reason", denialText(d),
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
