package discovery

import (
	"errors"
	"net"
	"net/netip"
	"strings"

	"github.com/pion/turn/v5"
)

// Address families of the embedded STUN/TURN server (RFC 6156, RFC 8656
// section 6.2). A listener serves the family of its address; "::" serves
// both (Go opens it dual-stack), "0.0.0.0" IPv4 only. An allocation relays
// over the family the client asks for in REQUESTED-ADDRESS-FAMILY (IPv4
// when absent: pion's StrictAddressFamily), whichever family carries the
// request, so an IPv6-only node can hold an IPv4 relayed address and meet
// an IPv4-only node there. Each family needs its own relay address
// (TURNOptions.RelayAddress, RelayAddress6); an allocation of a family
// without one is refused.

// errRelayFamilyUnavailable refuses an allocation of a family the server
// has no relay address for.
var errRelayFamilyUnavailable = errors.New("discovery: TURN: no relay address of the requested address family")

// listenNetwork returns the network to listen on for addr ("host:port"),
// proto "udp" or "tcp": proto+"4" for IPv4 addresses, including 0.0.0.0,
// which Go would otherwise open dual-stack; proto+"6" for a specific IPv6
// address; proto itself for "::", dual-stack.
func listenNetwork(proto, addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return proto
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return proto // a name: let the resolver decide
	case ip.Is4() || ip.Is4In6():
		return proto + "4"
	case ip.IsUnspecified():
		return proto
	}
	return proto + "6"
}

// relayAddr returns the relay address of one family, or the zero Addr.
func (o *TURNOptions) relayAddr(v6 bool) netip.Addr {
	if a := o.RelayAddress.Unmap(); a.IsValid() && a.Is6() == v6 {
		return a
	}
	if v6 {
		return o.RelayAddress6
	}
	return netip.Addr{}
}

// urlHosts returns the hosts written into the URLs of a listener bound to
// ln: PublicHost when set; otherwise, for each family the socket serves
// (IPv4 first), that family's relay address, or the listener's own address
// when it is specific. A family with neither is not announced.
func (o *TURNOptions) urlHosts(ln netip.Addr) []string {
	if o.PublicHost != "" {
		return []string{o.PublicHost}
	}
	ln = ln.Unmap()
	var out []string
	for _, v6 := range []bool{false, true} {
		if !servesFamily(ln, v6) {
			continue
		}
		a := o.relayAddr(v6)
		if !a.IsValid() && !ln.IsUnspecified() {
			a = ln
		}
		if a.IsValid() && !a.IsUnspecified() {
			out = append(out, a.String())
		}
	}
	return out
}

// servesFamily reports whether a socket bound to ln receives the family:
// "::" both (dual-stack), any other address its own.
func servesFamily(ln netip.Addr, v6 bool) bool {
	if ln.Is4() {
		return !v6
	}
	return v6 || ln.IsUnspecified()
}

// familyRelay allocates relay sockets of the family pion asks for: its
// Network is "udp4"/"tcp4" or "udp6"/"tcp6" by the allocation's family.
type familyRelay struct {
	v4, v6 turn.RelayAddressGenerator // nil: that family is not relayed
}

func (g familyRelay) pick(network string) (turn.RelayAddressGenerator, error) {
	r := g.v4
	if strings.HasSuffix(network, "6") {
		r = g.v6
	}
	if r == nil {
		return nil, errRelayFamilyUnavailable
	}
	return r, nil
}

func (g familyRelay) Validate() error {
	if g.v4 == nil && g.v6 == nil {
		return errRelayFamilyUnavailable
	}
	for _, r := range []turn.RelayAddressGenerator{g.v4, g.v6} {
		if r != nil {
			if err := r.Validate(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (g familyRelay) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	r, err := g.pick(c.Network)
	if err != nil {
		return nil, nil, err
	}
	return r.AllocatePacketConn(c)
}

func (g familyRelay) AllocateListener(c turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	r, err := g.pick(c.Network)
	if err != nil {
		return nil, nil, err
	}
	return r.AllocateListener(c)
}

func (g familyRelay) AllocateConn(c turn.AllocateConnConfig) (net.Conn, error) {
	r, err := g.pick(c.Network)
	if err != nil {
		return nil, err
	}
	return r.AllocateConn(c)
}
