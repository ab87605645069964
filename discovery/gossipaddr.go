package discovery

import (
	"errors"
	"net"
	"net/netip"
)

// errNoGossipAdvertise: gossip bound to "::" and no address to advertise.
var errNoGossipAdvertise = errors.New("discovery: gossip bound to [::] and no address to advertise: set coordinator.gossip_advertise")

// rfc1918 is what memberlist advertises for a gossip bind of 0.0.0.0.
var rfc1918 = privatePrefixes[:3]

// overlayLike are ranges a coordinator's own overlay (TUN) addresses come
// from; gossip never runs over the overlay it carries.
var overlayLike = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fc00::/7")}

// wildcardAdvertise picks the gossip address to advertise for a bind of
// "::", where memberlist would advertise "::" itself: as memberlist does
// for 0.0.0.0 a private (RFC 1918) IPv4 address first, then a global IPv4
// address, then a global IPv6 one (an IPv6-only host), never an overlay-like
// or link-local one. addrs are the host's interface addresses.
func wildcardAdvertise(addrs []net.Addr) (netip.Addr, error) {
	var v4, v6 netip.Addr
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if ip = ip.Unmap(); !ok || !ip.IsGlobalUnicast() || inPrefixes(ip, overlayLike) {
			continue
		}
		switch {
		case inPrefixes(ip, rfc1918):
			return ip, nil
		case ip.Is4() && !v4.IsValid():
			v4 = ip
		case ip.Is6() && !v6.IsValid():
			v6 = ip
		}
	}
	if v4.IsValid() {
		return v4, nil
	}
	if v6.IsValid() {
		return v6, nil
	}
	return netip.Addr{}, errNoGossipAdvertise
}
