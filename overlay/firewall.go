package overlay

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Proto selects the transport protocol a Rule matches. Values are IP protocol
// numbers; ProtoICMP matches ICMPv6 (58) as well as ICMPv4.
type Proto uint8

// Protocols with names. Any other IP protocol number may be used as a Proto.
const (
	ProtoAny  Proto = 0
	ProtoICMP Proto = 1
	ProtoTCP  Proto = 6
	ProtoUDP  Proto = 17
)

func (p Proto) String() string {
	switch p {
	case ProtoAny:
		return "any"
	case ProtoICMP:
		return "icmp"
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return strconv.Itoa(int(p))
}

// ParseProto parses "any", "icmp", "tcp", "udp" or an IP protocol number.
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "", "any":
		return ProtoAny, nil
	case "icmp", "icmpv6", "icmp6":
		return ProtoICMP, nil
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("overlay: protocol %q is not any, icmp, tcp, udp or a number 0-255", s)
	}
	return Proto(n), nil
}

// PortRange is an inclusive range of ports: {First: 443, Last: 443} is one
// port. First must not exceed Last.
type PortRange struct {
	First, Last uint16
}

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return strconv.Itoa(int(r.First)) + "-" + strconv.Itoa(int(r.Last))
}

// Rule allows the first packet of a flow. A rule matches when every condition
// it sets holds; an empty field sets no condition. Rules only allow: whatever
// no rule allows in a direction that has rules is dropped.
type Rule struct {
	// Peers matches when the remote peer's name is any of these.
	Peers []string
	// Groups matches when the remote peer has every one of these groups.
	Groups []string
	// CIDRs matches when the remote address is inside any of these: the source
	// of an inbound packet, the destination of an outbound one.
	CIDRs []netip.Prefix
	// LocalCIDRs matches when the local address is inside any of these: the
	// destination of an inbound packet (our address or a forwarded subnet),
	// the source of an outbound one.
	LocalCIDRs []netip.Prefix
	// Proto matches the transport protocol; ProtoAny matches all.
	Proto Proto
	// Ports matches when the destination port of the flow's first packet is in
	// any of these ranges. A rule with Ports matches only TCP and UDP; Proto
	// must then be ProtoAny, ProtoTCP or ProtoUDP.
	Ports []PortRange
}

// FirewallConfig is the rule set. Connection tracking makes it stateful: once
// a packet is allowed, the replies and the rest of its flow pass in both
// directions until the flow has been idle for its timeout.
type FirewallConfig struct {
	// Inbound lists what peers may start. None: every new inbound flow is
	// denied (default deny).
	Inbound []Rule
	// Outbound lists what this node may start towards peers. None: every
	// outbound flow is allowed (default allow).
	Outbound []Rule

	// TCPTimeout is how long an idle TCP flow is remembered; zero means
	// DefaultTCPTimeout. After a FIN or RST the flow lingers for at most
	// TCPClosingTimeout.
	TCPTimeout time.Duration
	// UDPTimeout is how long an idle UDP flow is remembered; zero means
	// DefaultUDPTimeout.
	UDPTimeout time.Duration
	// OtherTimeout is how long an idle ICMP echo or other-protocol flow is
	// remembered; zero means DefaultOtherTimeout.
	OtherTimeout time.Duration
}

// Default connection-tracking timeouts.
const (
	DefaultTCPTimeout   = 12 * time.Minute
	DefaultUDPTimeout   = 3 * time.Minute
	DefaultOtherTimeout = 2 * time.Minute
	// TCPClosingTimeout bounds how long a TCP flow that saw FIN or RST stays.
	TCPClosingTimeout = 30 * time.Second
)

func validateRules(field string, rules []Rule) error {
	for i, r := range rules {
		f := fmt.Sprintf("%s[%d]", field, i)
		for j, p := range r.Peers {
			if p == "" {
				return configErr(fmt.Sprintf("%s.Peers[%d]", f, j), "empty peer name")
			}
		}
		for j, g := range r.Groups {
			if g == "" {
				return configErr(fmt.Sprintf("%s.Groups[%d]", f, j), "empty group name")
			}
		}
		for j, c := range r.CIDRs {
			if !c.IsValid() {
				return configErr(fmt.Sprintf("%s.CIDRs[%d]", f, j), "invalid prefix")
			}
		}
		for j, c := range r.LocalCIDRs {
			if !c.IsValid() {
				return configErr(fmt.Sprintf("%s.LocalCIDRs[%d]", f, j), "invalid prefix")
			}
		}
		if len(r.Ports) > 0 && r.Proto != ProtoAny && r.Proto != ProtoTCP && r.Proto != ProtoUDP {
			return configErr(f+".Ports", "ports need protocol tcp, udp or any, not %s", r.Proto)
		}
		for j, pr := range r.Ports {
			if pr.First > pr.Last {
				return configErr(fmt.Sprintf("%s.Ports[%d]", f, j), "first port %d above last port %d", pr.First, pr.Last)
			}
		}
	}
	return nil
}

func (c FirewallConfig) validate() error {
	if c.TCPTimeout < 0 || c.UDPTimeout < 0 || c.OtherTimeout < 0 {
		return configErr("Firewall", "negative timeout")
	}
	if err := validateRules("Firewall.Inbound", c.Inbound); err != nil {
		return err
	}
	return validateRules("Firewall.Outbound", c.Outbound)
}

func (c FirewallConfig) clone() FirewallConfig {
	cl := func(rs []Rule) []Rule {
		if rs == nil {
			return nil
		}
		out := make([]Rule, len(rs))
		for i, r := range rs {
			out[i] = Rule{
				Peers:      slices.Clone(r.Peers),
				Groups:     slices.Clone(r.Groups),
				CIDRs:      slices.Clone(r.CIDRs),
				LocalCIDRs: slices.Clone(r.LocalCIDRs),
				Proto:      r.Proto,
				Ports:      slices.Clone(r.Ports),
			}
		}
		return out
	}
	c.Inbound = cl(c.Inbound)
	c.Outbound = cl(c.Outbound)
	return c
}

func (r *Rule) equal(o *Rule) bool {
	return slices.Equal(r.Peers, o.Peers) && slices.Equal(r.Groups, o.Groups) &&
		slices.Equal(r.CIDRs, o.CIDRs) && slices.Equal(r.LocalCIDRs, o.LocalCIDRs) &&
		r.Proto == o.Proto && slices.Equal(r.Ports, o.Ports)
}

func (c *FirewallConfig) equal(o *FirewallConfig) bool {
	eq := func(a, b []Rule) bool {
		return slices.EqualFunc(a, b, func(x, y Rule) bool { return x.equal(&y) })
	}
	return eq(c.Inbound, o.Inbound) && eq(c.Outbound, o.Outbound) &&
		c.TCPTimeout == o.TCPTimeout && c.UDPTimeout == o.UDPTimeout && c.OtherTimeout == o.OtherTimeout
}

// compiledFirewall is a FirewallConfig ready for the data path. It is built
// on every Reconfig and never changed afterwards. Which rules a peer's
// identity (name, groups) satisfies is worked out once per peer at build time
// (peerState.fwIn/fwOut bitsets), so the per-packet match compares numbers
// and prefixes only.
type compiledFirewall struct {
	// gen identifies this rule set. A tracked flow admitted under another
	// generation is checked against these rules again before it passes, so
	// narrowing the rules cuts existing flows.
	gen uint64

	in, out     []compiledRule
	outAllowAll bool

	tcp, tcpClosing, udp, other int64 // timeouts in nanoseconds
}

type compiledRule struct {
	remote, local []netip.Prefix
	proto         Proto
	ports         []PortRange
}

func compileFirewall(c FirewallConfig, gen uint64) *compiledFirewall {
	fw := &compiledFirewall{
		gen:         gen,
		outAllowAll: len(c.Outbound) == 0,
		tcp:         int64(orDefault(c.TCPTimeout, DefaultTCPTimeout)),
		udp:         int64(orDefault(c.UDPTimeout, DefaultUDPTimeout)),
		other:       int64(orDefault(c.OtherTimeout, DefaultOtherTimeout)),
	}
	fw.tcpClosing = min(fw.tcp, int64(TCPClosingTimeout))
	comp := func(rs []Rule) []compiledRule {
		out := make([]compiledRule, len(rs))
		for i, r := range rs {
			out[i] = compiledRule{remote: masked(r.CIDRs), local: masked(r.LocalCIDRs), proto: r.Proto, ports: slices.Clone(r.Ports)}
		}
		return out
	}
	fw.in = comp(c.Inbound)
	fw.out = comp(c.Outbound)
	return fw
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func masked(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = p.Masked()
	}
	return out
}

// identityBits returns the bitset of rules whose Peers and Groups conditions
// the peer (name, groups) satisfies.
func identityBits(rules []Rule, name string, groups []string) []uint64 {
	bits := make([]uint64, (len(rules)+63)/64)
	for i, r := range rules {
		if len(r.Peers) > 0 && !slices.Contains(r.Peers, name) {
			continue
		}
		ok := true
		for _, g := range r.Groups {
			if !slices.Contains(groups, g) {
				ok = false
				break
			}
		}
		if ok {
			bits[i/64] |= 1 << (i % 64)
		}
	}
	return bits
}

func hasBit(bits []uint64, i int) bool {
	return i/64 < len(bits) && bits[i/64]&(1<<(i%64)) != 0
}

// flowView is what rules match on: the first packet of a flow as seen from
// this node.
type flowView struct {
	proto    uint8
	remote   netip.Addr
	local    netip.Addr
	dport    uint16 // destination port of the flow's first packet
	hasPorts bool
}

func (r *compiledRule) match(f *flowView) bool {
	switch r.proto {
	case ProtoAny:
	case ProtoICMP:
		if f.proto != protoICMP && f.proto != protoICMPv6 {
			return false
		}
	default:
		if uint8(r.proto) != f.proto {
			return false
		}
	}
	if len(r.ports) > 0 {
		if !f.hasPorts {
			return false
		}
		in := false
		for _, pr := range r.ports {
			if f.dport >= pr.First && f.dport <= pr.Last {
				in = true
				break
			}
		}
		if !in {
			return false
		}
	}
	if len(r.remote) > 0 && !prefixesContain(r.remote, f.remote) {
		return false
	}
	if len(r.local) > 0 && !prefixesContain(r.local, f.local) {
		return false
	}
	return true
}

func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// allows reports whether a rule of the given direction admits flow f from or
// to peer.
func (fw *compiledFirewall) allows(inbound bool, f *flowView, peer *peerState) bool {
	rules, ident := fw.out, peer.fwOut
	if inbound {
		rules, ident = fw.in, peer.fwIn
	} else if fw.outAllowAll {
		return true
	}
	for i := range rules {
		if hasBit(ident, i) && rules[i].match(f) {
			return true
		}
	}
	return false
}

// timeout returns how long an idle flow of this kind is kept.
func (fw *compiledFirewall) timeout(proto uint8, closing bool) int64 {
	switch proto {
	case protoTCP:
		if closing {
			return fw.tcpClosing
		}
		return fw.tcp
	case protoUDP:
		return fw.udp
	}
	return fw.other
}

// flowCache remembers the last flow one batch let through, so that the
// following packets of the same flow in that batch (the common case for bulk
// transfers) skip the conntrack lookup: with the batch's single clock
// reading, refreshing the entry again would change nothing. The caller owns
// it and resets it at the start of every batch.
type flowCache struct {
	k    flowKey
	peer *peerState
	ok   bool
}

// filter decides whether packet p (bytes b) travelling in the given direction
// to or from peer passes. nil means pass; otherwise the drop reason
// (ErrNoMatchingRule). now is the data path's clock in nanoseconds, read once
// per batch; fc is the batch's flow cache (nil: none).
//
// Order: non-first fragments pass (see below); an ICMP error passes when the
// flow it reports on is tracked; a packet of a tracked flow passes and
// refreshes it; otherwise the rules of the packet's direction decide, and an
// allowed packet starts a tracked flow.
//
// Non-first fragments carry no ports, so no rule or flow can be checked. They
// pass: the first fragment, which was checked, is needed to reassemble them,
// so on their own they are useless to an attacker. (Tailscale's filter makes
// the same choice.)
func (fw *compiledFirewall) filter(ct *conntrack, p *packet, b []byte, peer *peerState, inbound bool, now int64, fc *flowCache) error {
	if p.frag {
		return nil
	}
	if p.isICMPError() {
		var inner packet
		if p.parseEmbedded(b, &inner) {
			// The embedded packet travelled the other way. Only the flow's
			// own peer may report on it: another peer's "port unreachable"
			// or "packet too big" about a flow with B is not B's word.
			if ct.has(flowKeyOf(&inner, !inbound), peer.id, now) {
				return nil
			}
		}
		// Not related to a tracked flow: only a rule can allow it, and it
		// starts no flow of its own.
		var f flowView
		viewOf(p, inbound, &f)
		if fw.allows(inbound, &f, peer) {
			return nil
		}
		return ErrNoMatchingRule
	}
	tracked := !p.isICMP() || p.isEcho()
	if tracked {
		k := flowKeyOf(p, inbound)
		closing := p.proto == protoTCP && p.tcpFlags&(tcpFIN|tcpRST) != 0
		if fc != nil && !closing && fc.ok && fc.peer == peer && fc.k == k {
			return nil
		}
		switch ct.refresh(fw, k, peer, closing, now) {
		case flowPass:
			fc.remember(k, peer)
			return nil
		case flowRecheck:
			// Tracked, but admitted under older rules that no longer allow
			// it; the current packet may still start a flow of its own.
		}
		var f flowView
		viewOf(p, inbound, &f)
		if !fw.allows(inbound, &f, peer) {
			return ErrNoMatchingRule
		}
		flags := uint8(0)
		if inbound {
			flags |= flowInbound
		}
		if closing {
			flags |= flowClosing
		}
		ct.insert(k, flowEntry{expire: now + fw.timeout(p.proto, closing), gen: fw.gen, peer: peer.id, flags: flags}, now)
		fc.remember(k, peer)
		return nil
	}
	var f flowView
	viewOf(p, inbound, &f)
	if fw.allows(inbound, &f, peer) {
		return nil
	}
	return ErrNoMatchingRule
}

func (fc *flowCache) remember(k flowKey, peer *peerState) {
	if fc != nil {
		fc.k, fc.peer, fc.ok = k, peer, true
	}
}

// reset forgets the cached flow; call it at the start of every batch.
func (fc *flowCache) reset() { *fc = flowCache{} }

// viewOf fills f with packet p as the first packet of a flow in the given
// direction.
func viewOf(p *packet, inbound bool, f *flowView) {
	f.proto = p.proto
	f.dport = p.dstPort
	f.hasPorts = p.hasPorts()
	if inbound {
		f.remote, f.local = p.src, p.dst
	} else {
		f.remote, f.local = p.dst, p.src
	}
}
