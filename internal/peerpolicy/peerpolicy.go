// Package peerpolicy is the default peer-address policy of meshd's relays:
// which addresses a TURN server run by meshd (a coordinator's embedded
// TURN, a member relay) may send relayed datagrams to, so that a mesh
// member cannot use it as a proxy into the relay host's own networks.
//
// A Policy classifies an address (Check: for a permission, where only the
// IP is known) or a destination (CheckSend: for each relayed datagram, port
// included). By default it refuses loopback, link-local, multicast,
// unspecified and reserved addresses; private ranges unless the relay's own
// address is private (AllowPrivateFor: a relay on a home LAN or site VPN
// serves that network); the host's own addresses except on the ports the
// Policy leaves open (relay and mesh ports); and NAT64 / 6to4 addresses as
// the IPv4 address they reach. The documentation and benchmarking ranges
// (192.0.2.0/24, 198.18.0.0/15, 198.51.100.0/24, 203.0.113.0/24,
// 2001:db8::/32) are allowed: they are nobody's internal network, and the
// test lab's internet is built from them.
package peerpolicy

import (
	"net/netip"
	"sync/atomic"
)

// privatePrefixes are the ranges denied unless the relay's own address is
// private (RFC 1918, CGNAT RFC 6598, IPv6 ULA, which holds the mesh's own
// overlay /48, deprecated site-local, and the local-use NAT64 prefix of
// RFC 8215): a relay host's internal networks. The first three are
// RFC 1918, in that order (PrivatePrefixes documents it).
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

// PrivatePrefixes returns a copy of the private ranges: 10.0.0.0/8,
// 172.16.0.0/12 and 192.168.0.0/16 (RFC 1918, the first three, in this
// order), 100.64.0.0/10, fc00::/7, fec0::/10 and 64:ff9b:1::/48.
func PrivatePrefixes() []netip.Prefix {
	return append([]netip.Prefix(nil), privatePrefixes...)
}

// Contains reports whether a prefix of list contains a.
func Contains(list []netip.Prefix, a netip.Addr) bool {
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// IsPrivate reports whether a (unmapped) is in a private range.
func IsPrivate(a netip.Addr) bool { return Contains(privatePrefixes, a.Unmap()) }

// AllowPrivateFor reports whether a relay announcing addrs serves a
// private network: one of them is in a private range. Invalid addresses
// are ignored.
func AllowPrivateFor(addrs ...netip.Addr) bool {
	for _, a := range addrs {
		if a.IsValid() && IsPrivate(a) {
			return true
		}
	}
	return false
}

// EmbeddedIPv4 returns the IPv4 address a translated IPv6 address (NAT64
// well-known prefix or 6to4) reaches.
func EmbeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
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

// Reason says why a peer address is refused; Allowed (zero) = not refused.
type Reason uint8

const (
	Allowed    Reason = iota
	Configured        // in the relay's configured deny list
	Special           // unspecified, loopback, link-local, multicast, broadcast, reserved
	Private           // private range, and the relay's own address is not private
	OwnService        // the host's own address, on a port that is not a relay or mesh port
	NotVouched        // member relays: an address the mesh does not vouch for
	numReasons
)

// String is the reason as logs say it.
func (r Reason) String() string {
	switch r {
	case Allowed:
		return "allowed"
	case Configured:
		return "in the denied list"
	case Special:
		return "loopback, link-local, multicast or unspecified address"
	case Private:
		return "private address"
	case OwnService:
		return "the relay host's own address outside the relay and mesh ports"
	case NotVouched:
		return "an address no mesh member vouches for"
	}
	return "unknown"
}

// Policy is the default peer-address check with the relay's own settings.
// A Policy is not modified after first use; its methods are safe for
// concurrent use as long as IsOwn and OpenPort are.
type Policy struct {
	// Allowed are prefixes relayed to whatever the defaults say, except
	// the own-service rule (as coturn's allowed-peer-ip); nil = none. A
	// NAT64 or 6to4 address listed itself is allowed as listed.
	Allowed []netip.Prefix
	// Denied are prefixes refused on top of the defaults (as coturn's
	// denied-peer-ip); Allowed wins where both match. nil = none.
	Denied []netip.Prefix
	// AllowPrivate allows the private ranges: the relay's own address is
	// private (AllowPrivateFor).
	AllowPrivate bool
	// IsOwn reports whether an (unmapped) address is one of the relay
	// host's own. nil = none. Called concurrently, on every datagram: must
	// be cheap.
	IsOwn func(netip.Addr) bool
	// OpenPort reports whether a port of the host's own addresses may be
	// relayed to (a relay port: two allocations reach each other; the
	// mesh port: a peer reaches the host's own mesh node). nil = none.
	// Called concurrently.
	OpenPort func(uint16) bool
}

// Check classifies ip (ignoring ports): Allowed first (it overrides
// everything but the own-service rule, which Check does not see), then
// Denied, the special and unroutable addresses, and private ranges (the
// host's own private addresses pass here: CheckSend keeps them to open
// ports). A NAT64 or 6to4 address is classified as the IPv4 address it
// reaches, unless Allowed lists the IPv6 address itself.
func (p *Policy) Check(ip netip.Addr) Reason {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return Special
	case Contains(p.Allowed, ip):
		return Allowed
	case Contains(p.Denied, ip):
		return Configured
	case ip.IsUnspecified(), ip.IsLoopback(), ip.IsLinkLocalUnicast(), ip.IsMulticast(),
		ip.IsInterfaceLocalMulticast(), Contains(unroutablePrefixes, ip):
		return Special
	case !p.AllowPrivate && Contains(privatePrefixes, ip) && !p.own(ip):
		return Private
	}
	if v4, ok := EmbeddedIPv4(ip); ok {
		return p.Check(v4)
	}
	return Allowed
}

// CheckSend classifies a relayed datagram's destination: Check, and the
// host's own (non-loopback) addresses, directly or through a NAT64 or 6to4
// gateway, only on open ports, so nothing else listening on the host is
// reached.
func (p *Policy) CheckSend(ap netip.AddrPort) Reason {
	ip := ap.Addr().Unmap()
	if r := p.Check(ip); r != Allowed {
		return r
	}
	if v4, ok := EmbeddedIPv4(ip); ok && p.ownService(v4, ap.Port()) {
		return OwnService
	}
	if p.ownService(ip, ap.Port()) {
		return OwnService
	}
	return Allowed
}

// ownService reports whether ip:port is one of the host's own
// (non-loopback) addresses on a port that is not open.
func (p *Policy) ownService(ip netip.Addr, port uint16) bool {
	return !ip.IsLoopback() && p.own(ip) && (p.OpenPort == nil || !p.OpenPort(port))
}

func (p *Policy) own(ip netip.Addr) bool { return p.IsOwn != nil && p.IsOwn(ip) }

// Refusals counts refusals and says which is the first of its reason (to
// be logged once). The zero value is ready; safe for concurrent use.
type Refusals struct {
	n        atomic.Uint64
	reported [numReasons]atomic.Bool
}

// Add counts a refusal for r and reports whether it is the first for r.
func (c *Refusals) Add(r Reason) (first bool) {
	c.n.Add(1)
	return r < numReasons && !c.reported[r].Swap(true)
}

// Load returns the refusals counted.
func (c *Refusals) Load() uint64 { return c.n.Load() }
