//go:build e2e

package lab

import (
	"fmt"
	"net/netip"
	"strings"
)

// NATKind is how a host sees the internet: no NAT, a stateful firewall, or
// one of the NAT recipes of LAB.md. The measured behaviour of each kind is
// asserted by the lab's own tests (TestNATTruthTable); Expect returns it.
type NATKind int

const (
	// NATNone is a public host: its own address on the backbone, no filter.
	// As a SiteOptions.Carrier it means "no carrier NAT".
	NATNone NATKind = iota
	// NATFirewall is a public host behind a stateful firewall in its own
	// namespace (ct established,related accept; drop the rest inbound).
	NATFirewall
	// NATFullCone is the nft static port map: EIM, EIF.
	NATFullCone
	// NATAddressRestricted is the static map plus a filter keyed on
	// (remote IP, local port): EIM, ADF.
	NATAddressRestricted
	// NATPortRestricted is the static map plus a filter keyed on (remote IP,
	// remote port, local port): EIM, APDF, deterministic.
	NATPortRestricted
	// NATPortRestrictedMasq is plain iptables MASQUERADE: EIM while the
	// source port is free on the router (Linux keeps it), APDF.
	NATPortRestrictedMasq
	// NATSymmetric is MASQUERADE --random-fully: endpoint-dependent mapping,
	// APDF.
	NATSymmetric
	// NATUDPBlocked drops all outbound UDP at the router; TCP is masqueraded.
	NATUDPBlocked
)

var natNames = map[NATKind]string{
	NATNone:               "none",
	NATFirewall:           "firewall",
	NATFullCone:           "full-cone",
	NATAddressRestricted:  "address-restricted",
	NATPortRestricted:     "port-restricted",
	NATPortRestrictedMasq: "port-restricted-masq",
	NATSymmetric:          "symmetric",
	NATUDPBlocked:         "udp-blocked",
}

// String returns the kind's name, e.g. "full-cone".
func (k NATKind) String() string {
	if s, ok := natNames[k]; ok {
		return s
	}
	return fmt.Sprintf("NATKind(%d)", int(k))
}

// IsNAT reports whether hosts of this kind sit behind a NAT router (a site)
// rather than on the backbone.
func (k NATKind) IsNAT() bool { return k >= NATFullCone && k <= NATUDPBlocked }

func (k NATKind) valid() bool { _, ok := natNames[k]; return ok }

// staticMap reports whether the kind uses the nft static port map.
func (k NATKind) staticMap() bool {
	return k == NATFullCone || k == NATAddressRestricted || k == NATPortRestricted
}

// Mapping is RFC 4787 mapping behaviour.
type Mapping int

const (
	// MappingUnknown means not measured or not applicable (UDP blocked).
	MappingUnknown Mapping = iota
	// MappingEndpointIndependent: one external address for all destinations.
	MappingEndpointIndependent
	// MappingEndpointDependent: the external address depends on the
	// destination (address- or address-and-port-dependent mapping).
	MappingEndpointDependent
)

// String returns "EIM", "EDM" or "unknown".
func (m Mapping) String() string {
	switch m {
	case MappingEndpointIndependent:
		return "EIM"
	case MappingEndpointDependent:
		return "EDM"
	default:
		return "unknown"
	}
}

// Filtering is RFC 4787 filtering behaviour.
type Filtering int

const (
	// FilteringUnknown means not measured or not applicable.
	FilteringUnknown Filtering = iota
	// FilteringEndpointIndependent: anyone may send to a mapping (EIF).
	FilteringEndpointIndependent
	// FilteringAddressDependent: only addresses the host contacted (ADF).
	FilteringAddressDependent
	// FilteringAddressPortDependent: only address:port pairs it contacted
	// (APDF).
	FilteringAddressPortDependent
)

// String returns "EIF", "ADF", "APDF" or "unknown".
func (f Filtering) String() string {
	switch f {
	case FilteringEndpointIndependent:
		return "EIF"
	case FilteringAddressDependent:
		return "ADF"
	case FilteringAddressPortDependent:
		return "APDF"
	default:
		return "unknown"
	}
}

// Expect returns the UDP behaviour the lab promises for a host of kind k;
// ok is false for NATUDPBlocked, which passes no UDP at all.
func (k NATKind) Expect() (m Mapping, f Filtering, ok bool) {
	switch k {
	case NATNone, NATFullCone:
		return MappingEndpointIndependent, FilteringEndpointIndependent, true
	case NATAddressRestricted:
		return MappingEndpointIndependent, FilteringAddressDependent, true
	case NATFirewall, NATPortRestricted, NATPortRestrictedMasq:
		return MappingEndpointIndependent, FilteringAddressPortDependent, true
	case NATSymmetric:
		return MappingEndpointDependent, FilteringAddressPortDependent, true
	default:
		return MappingUnknown, FilteringUnknown, false
	}
}

// expectChain composes the behaviour of NATs in series (home router behind a
// carrier): the mapping is endpoint-independent only if every stage is, and
// the filtering is the strictest stage's, because a packet must pass all of
// them. ok is false if any stage passes no UDP.
func expectChain(kinds ...NATKind) (Mapping, Filtering, bool) {
	m, f := MappingEndpointIndependent, FilteringEndpointIndependent
	for _, k := range kinds {
		km, kf, ok := k.Expect()
		if !ok {
			return MappingUnknown, FilteringUnknown, false
		}
		if km == MappingEndpointDependent {
			m = km
		}
		if kf > f {
			f = kf
		}
	}
	return m, f, true
}

// Names of the interfaces inside router namespaces; the recipes refer to them.
const (
	wanDev = "wan0"
	lanDev = "lan0"
)

// staticEntry is one inside address and the UDP port range the static map
// forwards to it unchanged.
type staticEntry struct {
	addr        netip.Addr
	first, last int
}

// renderRouterRules returns the nft script that makes a router of kind k with
// WAN address wan behave as promised. It replaces table ip natlab atomically
// (one nft transaction), so it is safe to apply again after any change. The
// iptables MASQUERADE rules of the masq kinds live outside this table and
// are installed once (masqArgs).
func renderRouterRules(k NATKind, wan netip.Addr, inside []staticEntry) string {
	var b strings.Builder
	// "table" before "delete table" makes the delete succeed on first use.
	b.WriteString("table ip natlab\ndelete table ip natlab\ntable ip natlab {\n")
	switch k {
	case NATAddressRestricted:
		b.WriteString("\tset contacted { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 120s; }\n")
	case NATPortRestricted:
		b.WriteString("\tset contacted { type ipv4_addr . inet_service . inet_service; flags dynamic,timeout; timeout 120s; }\n")
	}
	if k.staticMap() {
		b.WriteString("\tchain pre {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
		for _, e := range inside {
			fmt.Fprintf(&b, "\t\tiifname %q ip daddr %s udp dport %d-%d dnat to %s\n", wanDev, wan, e.first, e.last, e.addr)
		}
		b.WriteString("\t}\n")
	}
	if k.staticMap() || k == NATUDPBlocked {
		b.WriteString("\tchain post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
		if k.staticMap() {
			for _, e := range inside {
				fmt.Fprintf(&b, "\t\toifname %q ip saddr %s udp sport %d-%d snat to %s\n", wanDev, e.addr, e.first, e.last, wan)
			}
		}
		// Everything outside the static map (TCP, ICMP, other ports) is
		// masqueraded as a home router would.
		fmt.Fprintf(&b, "\t\toifname %q masquerade\n", wanDev)
		b.WriteString("\t}\n")
	}
	// The forward filter: the LAN may send anything out (except UDP on the
	// UDP-blocked kind); from the WAN only replies, plus what the kind's
	// static map and filter admit. Unsolicited WAN→LAN traffic is dropped for
	// every kind, also the MASQUERADE ones, so no host on the backbone can
	// route into a LAN around the NAT.
	b.WriteString("\tchain filt {\n\t\ttype filter hook forward priority filter; policy drop;\n")
	switch k {
	case NATUDPBlocked:
		fmt.Fprintf(&b, "\t\tiifname %q oifname %q meta l4proto udp drop\n", lanDev, wanDev)
	case NATAddressRestricted:
		fmt.Fprintf(&b, "\t\tiifname %q oifname %q update @contacted { ip daddr . udp sport } accept\n", lanDev, wanDev)
	case NATPortRestricted:
		fmt.Fprintf(&b, "\t\tiifname %q oifname %q update @contacted { ip daddr . udp dport . udp sport } accept\n", lanDev, wanDev)
	}
	fmt.Fprintf(&b, "\t\tiifname %q accept\n", lanDev)
	b.WriteString("\t\tct state established,related accept\n")
	switch k {
	case NATFullCone:
		fmt.Fprintf(&b, "\t\tiifname %q ct status dnat accept\n", wanDev)
	case NATAddressRestricted:
		fmt.Fprintf(&b, "\t\tiifname %q ct status dnat ip saddr . udp dport @contacted accept\n", wanDev)
	case NATPortRestricted:
		fmt.Fprintf(&b, "\t\tiifname %q ct status dnat ip saddr . udp sport . udp dport @contacted accept\n", wanDev)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// masqArgs returns the iptables arguments of the MASQUERADE kinds, or nil.
func masqArgs(k NATKind) []string {
	switch k {
	case NATPortRestrictedMasq:
		return []string{"iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wanDev, "-j", "MASQUERADE"}
	case NATSymmetric:
		return []string{"iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wanDev, "-j", "MASQUERADE", "--random-fully"}
	}
	return nil
}

// hostFirewallRules is the stateful firewall of NATFirewall public hosts,
// for both families (table inet). Neighbour discovery passes: without it an
// IPv6 host could not even be found on its link (ARP is not IP and passes
// anyway).
const hostFirewallRules = `table inet labfw
delete table inet labfw
table inet labfw {
	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
		iifname "eth0" drop
	}
}
`

// router6Rules is the IPv6 firewall of an IPv6 site's router (the typical
// home router): the LAN's global addresses are routed, not translated, and
// a stateful forward filter lets in only what answers or relates to traffic
// from the LAN (replies, ICMPv6 errors). Nothing unsolicited passes, so two
// such hosts reach each other only by sending at once, each opening its own
// firewall for the other (simultaneous open). The router's own input is
// not filtered (neighbour discovery on both sides).
var router6Rules = fmt.Sprintf(`table ip6 labfw6
delete table ip6 labfw6
table ip6 labfw6 {
	chain filt {
		type filter hook forward priority filter; policy drop;
		iifname %q accept
		ct state established,related accept
	}
}
`, lanDev)
