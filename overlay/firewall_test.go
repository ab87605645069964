package overlay

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/overlay/internal/testpkt"
)

var (
	local4  = netip.MustParseAddr("100.64.0.1")
	peerB4  = netip.MustParseAddr("100.64.0.2")
	peerC4  = netip.MustParseAddr("100.64.0.3")
	far4    = netip.MustParseAddr("100.64.1.2")
	subnet4 = netip.MustParseAddr("10.9.0.5")
	local6  = netip.MustParseAddr("fd7a::1")
	peerB6  = netip.MustParseAddr("fd7a::2")
)

// fwHarness runs compiledFirewall.filter directly with a hand-driven clock.
type fwHarness struct {
	t     *testing.T
	fw    *compiledFirewall
	ct    *conntrack
	peers map[string]*peerState
	gen   uint64
	now   int64
}

type fwPeer struct {
	name   string
	groups []string
}

var defaultPeers = []fwPeer{{"b", []string{"ops", "admin", "x"}}, {"c", []string{"ops"}}}

func newHarness(t *testing.T, cfg FirewallConfig, maxFlows int, peers ...fwPeer) *fwHarness {
	if len(peers) == 0 {
		peers = defaultPeers
	}
	h := &fwHarness{t: t, ct: newConntrack(maxFlows), now: int64(time.Hour)}
	h.set(cfg, peers...)
	return h
}

// set swaps in a new rule set, as Reconfig does.
func (h *fwHarness) set(cfg FirewallConfig, peers ...fwPeer) {
	if len(peers) == 0 {
		peers = defaultPeers
	}
	if err := cfg.validate(); err != nil {
		h.t.Fatalf("rules: %v", err)
	}
	h.gen++
	h.fw = compileFirewall(cfg, h.gen)
	h.peers = map[string]*peerState{}
	for _, p := range peers {
		h.peers[p.name] = &peerState{name: p.name, id: peerID(p.name), fwIn: identityBits(cfg.Inbound, p.name, p.groups), fwOut: identityBits(cfg.Outbound, p.name, p.groups)}
	}
}

func (h *fwHarness) check(peer string, inbound bool, pkt testpkt.Packet) error {
	h.t.Helper()
	b := pkt.Marshal()
	var p packet
	if err := p.parse(b); err != nil {
		h.t.Fatalf("test packet does not parse: %v", err)
	}
	return h.fw.filter(h.ct, &p, b, h.peers[peer], inbound, h.now, nil)
}

func (h *fwHarness) expect(peer string, inbound bool, pkt testpkt.Packet, pass bool) {
	h.t.Helper()
	err := h.check(peer, inbound, pkt)
	if pass && err != nil {
		h.t.Fatalf("%s %+v: dropped (%v), want pass", dirName(inbound), pkt, err)
	}
	if !pass && err != ErrNoMatchingRule {
		h.t.Fatalf("%s %+v: %v, want ErrNoMatchingRule", dirName(inbound), pkt, err)
	}
}

func dirName(inbound bool) string {
	if inbound {
		return "inbound"
	}
	return "outbound"
}

func tcpIn(src, dst netip.Addr, sport, dport uint16) testpkt.Packet {
	return testpkt.Packet{Src: src, Dst: dst, Proto: testpkt.ProtoTCP, SrcPort: sport, DstPort: dport, TCPFlags: testpkt.SYN}
}

func udpPkt(src, dst netip.Addr, sport, dport uint16) testpkt.Packet {
	return testpkt.Packet{Src: src, Dst: dst, Proto: testpkt.ProtoUDP, SrcPort: sport, DstPort: dport}
}

func echoReq(src, dst netip.Addr, id uint16) testpkt.Packet {
	if src.Is4() {
		return testpkt.Packet{Src: src, Dst: dst, Proto: testpkt.ProtoICMP, ICMPType: 8, ICMPID: id}
	}
	return testpkt.Packet{Src: src, Dst: dst, Proto: testpkt.ProtoICMPv6, ICMPType: 128, ICMPID: id}
}

func echoReply(src, dst netip.Addr, id uint16) testpkt.Packet {
	p := echoReq(src, dst, id)
	if src.Is4() {
		p.ICMPType = 0
	} else {
		p.ICMPType = 129
	}
	return p
}

func pr(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestFirewallRules checks each rule condition: for every packet a rule
// allows there is one it denies.
func TestFirewallRules(t *testing.T) {
	type probe struct {
		peer    string
		inbound bool
		pkt     testpkt.Packet
		pass    bool
	}
	tests := []struct {
		name   string
		cfg    FirewallConfig
		probes []probe
	}{
		{"no rules: inbound denied, outbound allowed", FirewallConfig{}, []probe{
			{"b", true, tcpIn(peerB4, local4, 40000, 22), false},
			{"b", true, udpPkt(peerB4, local4, 40000, 53), false},
			{"b", true, echoReq(peerB4, local4, 1), false},
			{"b", false, tcpIn(local4, peerB4, 40000, 22), true},
			{"c", false, udpPkt(local4, peerC4, 40000, 53), true},
		}},
		{"allow any inbound", FirewallConfig{Inbound: []Rule{{}}}, []probe{
			{"b", true, tcpIn(peerB4, local4, 40000, 22), true},
			{"c", true, echoReq(peerC4, local4, 1), true},
			{"b", true, testpkt.Packet{Src: peerB4, Dst: local4, Proto: 47}, true},
		}},
		{"peer name", FirewallConfig{Inbound: []Rule{{Peers: []string{"b"}}}}, []probe{
			{"b", true, tcpIn(peerB4, local4, 40000, 22), true},
			{"c", true, tcpIn(peerC4, local4, 40000, 22), false},
		}},
		{"groups: all listed required", FirewallConfig{Inbound: []Rule{{Groups: []string{"ops", "admin"}}}}, []probe{
			{"b", true, tcpIn(peerB4, local4, 40000, 22), true},  // ops, admin, x
			{"c", true, tcpIn(peerC4, local4, 40000, 22), false}, // ops only
		}},
		{"peer and group both required", FirewallConfig{Inbound: []Rule{{Peers: []string{"c"}, Groups: []string{"admin"}}}}, []probe{
			{"c", true, tcpIn(peerC4, local4, 40000, 22), false},
			{"b", true, tcpIn(peerB4, local4, 40000, 22), false},
		}},
		{"remote CIDR", FirewallConfig{Inbound: []Rule{{CIDRs: []netip.Prefix{pr("100.64.0.0/24")}}}}, []probe{
			{"b", true, tcpIn(peerB4, local4, 40000, 22), true},
			{"b", true, tcpIn(far4, local4, 40000, 22), false},
			{"b", true, tcpIn(peerB6, local6, 40000, 22), false},
		}},
		{"local CIDR", FirewallConfig{Inbound: []Rule{{LocalCIDRs: []netip.Prefix{pr("10.9.0.0/24")}}}}, []probe{
			{"b", true, tcpIn(peerB4, subnet4, 40000, 22), true},
			{"b", true, tcpIn(peerB4, local4, 40000, 22), false},
		}},
		{"protocol tcp", FirewallConfig{Inbound: []Rule{{Proto: ProtoTCP}}}, []probe{
			{"b", true, tcpIn(peerB4, local4, 40000, 22), true},
			{"b", true, udpPkt(peerB4, local4, 40000, 22), false},
		}},
		{"protocol icmp covers v4 and v6", FirewallConfig{Inbound: []Rule{{Proto: ProtoICMP}}}, []probe{
			{"b", true, echoReq(peerB4, local4, 9), true},
			{"b", true, echoReq(peerB6, local6, 9), true},
			{"b", true, tcpIn(peerB4, local4, 40000, 22), false},
		}},
		{"ports: single and range, any protocol with ports", FirewallConfig{Inbound: []Rule{{Ports: []PortRange{{22, 22}, {8000, 8080}}}}}, []probe{
			{"b", true, tcpIn(peerB4, local4, 40000, 22), true},
			{"b", true, tcpIn(peerB4, local4, 40000, 8000), true},
			{"b", true, tcpIn(peerB4, local4, 40000, 8080), true},
			{"b", true, udpPkt(peerB4, local4, 40000, 22), true},
			{"b", true, tcpIn(peerB4, local4, 40000, 23), false},
			{"b", true, tcpIn(peerB4, local4, 40000, 8081), false},
			{"b", true, tcpIn(peerB4, local4, 22, 7999), false}, // source port does not count
			{"b", true, echoReq(peerB4, local4, 22), false},     // no ports, no match
		}},
		{"udp port", FirewallConfig{Inbound: []Rule{{Proto: ProtoUDP, Ports: []PortRange{{53, 53}}}}}, []probe{
			{"b", true, udpPkt(peerB4, local4, 40000, 53), true},
			{"b", true, tcpIn(peerB4, local4, 40000, 53), false},
		}},
		{"outbound rules make outbound default deny", FirewallConfig{Outbound: []Rule{{Peers: []string{"b"}, Proto: ProtoTCP, Ports: []PortRange{{443, 443}}}}}, []probe{
			{"b", false, tcpIn(local4, peerB4, 40000, 443), true},
			{"b", false, tcpIn(local4, peerB4, 40000, 80), false},
			{"c", false, tcpIn(local4, peerC4, 40000, 443), false},
			{"b", true, tcpIn(peerB4, local4, 40000, 443), false},
		}},
		{"ipv6", FirewallConfig{Inbound: []Rule{{CIDRs: []netip.Prefix{pr("fd7a::/64")}, Proto: ProtoTCP, Ports: []PortRange{{22, 22}}}}}, []probe{
			{"b", true, tcpIn(peerB6, local6, 40000, 22), true},
			{"b", true, tcpIn(peerB6, local6, 40000, 21), false},
			{"b", true, tcpIn(peerB4, local4, 40000, 22), false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range tt.probes {
				// A fresh table per probe: these test rules, not tracking.
				h := newHarness(t, tt.cfg, 1024)
				h.expect(p.peer, p.inbound, p.pkt, p.pass)
			}
		})
	}
}

func TestFirewallValidate(t *testing.T) {
	bad := []FirewallConfig{
		{Inbound: []Rule{{Ports: []PortRange{{10, 9}}}}},
		{Inbound: []Rule{{Proto: ProtoICMP, Ports: []PortRange{{1, 2}}}}},
		{Outbound: []Rule{{Peers: []string{""}}}},
		{Outbound: []Rule{{Groups: []string{""}}}},
		{Inbound: []Rule{{CIDRs: []netip.Prefix{{}}}}},
		{Inbound: []Rule{{LocalCIDRs: []netip.Prefix{{}}}}},
		{UDPTimeout: -1},
	}
	for i, c := range bad {
		if err := c.validate(); err == nil {
			t.Errorf("config %d accepted: %+v", i, c)
		}
	}
}

func TestConntrackReturnTraffic(t *testing.T) {
	h := newHarness(t, FirewallConfig{}, 1024)
	// Outbound SYN (default allow) opens the flow...
	h.expect("b", false, tcpIn(local4, peerB4, 40000, 22), true)
	// ...so the SYN-ACK comes back in,
	synack := tcpIn(peerB4, local4, 22, 40000)
	synack.TCPFlags = testpkt.SYN | testpkt.ACK
	h.expect("b", true, synack, true)
	// but a packet of another flow from the same peer does not.
	h.expect("b", true, tcpIn(peerB4, local4, 22, 40001), false)
	h.expect("b", true, tcpIn(peerB4, local4, 23, 40000), false)
	// Nor the same ports from another address.
	h.expect("c", true, tcpIn(peerC4, local4, 22, 40000), false)

	// UDP and ICMP echo the same way.
	h.expect("b", false, udpPkt(local4, peerB4, 5000, 53), true)
	h.expect("b", true, udpPkt(peerB4, local4, 53, 5000), true)
	h.expect("b", true, udpPkt(peerB4, local4, 53, 5001), false)
	h.expect("b", false, echoReq(local4, peerB4, 7), true)
	h.expect("b", true, echoReply(peerB4, local4, 7), true)
	h.expect("b", true, echoReply(peerB4, local4, 8), false)
	h.expect("b", false, echoReq(local6, peerB6, 7), true)
	h.expect("b", true, echoReply(peerB6, local6, 7), true)
	h.expect("b", true, echoReply(peerB6, local6, 8), false)
}

func TestConntrackInboundFlowRepliesDespiteOutboundRules(t *testing.T) {
	// Outbound allows only HTTPS to b; an allowed inbound SSH session must
	// still be able to answer.
	h := newHarness(t, FirewallConfig{
		Inbound:  []Rule{{Proto: ProtoTCP, Ports: []PortRange{{22, 22}}}},
		Outbound: []Rule{{Proto: ProtoTCP, Ports: []PortRange{{443, 443}}}},
	}, 1024)
	h.expect("b", true, tcpIn(peerB4, local4, 40000, 22), true)
	h.expect("b", false, tcpIn(local4, peerB4, 22, 40000), true)
	h.expect("b", false, tcpIn(local4, peerB4, 22, 40001), false)
}

func TestConntrackExpiry(t *testing.T) {
	cfg := FirewallConfig{UDPTimeout: 30 * time.Second, TCPTimeout: time.Minute}
	h := newHarness(t, cfg, 1024)
	h.expect("b", false, udpPkt(local4, peerB4, 5000, 53), true)
	h.now += int64(29 * time.Second)
	h.expect("b", true, udpPkt(peerB4, local4, 53, 5000), true) // refreshes
	h.now += int64(29 * time.Second)
	h.expect("b", true, udpPkt(peerB4, local4, 53, 5000), true)
	h.now += int64(31 * time.Second)
	h.expect("b", true, udpPkt(peerB4, local4, 53, 5000), false) // idle too long

	// TCP: after FIN the flow only lingers for TCPClosingTimeout.
	h.expect("b", false, tcpIn(local4, peerB4, 40000, 22), true)
	fin := tcpIn(peerB4, local4, 22, 40000)
	fin.TCPFlags = testpkt.FIN | testpkt.ACK
	h.expect("b", true, fin, true)
	h.now += int64(TCPClosingTimeout) - 1
	ack := tcpIn(peerB4, local4, 22, 40000)
	ack.TCPFlags = testpkt.ACK
	h.expect("b", true, ack, true)
	h.now += int64(TCPClosingTimeout) + 1
	h.expect("b", true, ack, false)

	// The janitor's sweep removes expired entries that no packet looked up.
	h.expect("b", false, udpPkt(local4, peerB4, 5001, 53), true)
	if n := h.ct.len(); n == 0 {
		t.Fatal("expected entries before sweep")
	}
	h.now += int64(time.Hour)
	h.ct.sweep(h.now)
	if n := h.ct.len(); n != 0 {
		t.Fatalf("%d entries after sweep, want 0", n)
	}
}

func TestConntrackICMPErrorRelated(t *testing.T) {
	h := newHarness(t, FirewallConfig{}, 1024)
	out := udpPkt(local4, peerB4, 5000, 9999)
	h.expect("b", false, out, true)
	orig := out.Marshal()
	related := testpkt.Packet{Src: peerB4, Dst: local4, Proto: testpkt.ProtoICMP, ICMPType: 3, ICMPCode: 3, Payload: orig}
	h.expect("b", true, related, true)
	// An error about a flow we never had is not let in.
	other := udpPkt(local4, peerB4, 5001, 9999).Marshal()
	unrelated := testpkt.Packet{Src: peerB4, Dst: local4, Proto: testpkt.ProtoICMP, ICMPType: 3, ICMPCode: 3, Payload: other}
	h.expect("b", true, unrelated, false)

	// IPv6 Packet Too Big about our TCP flow.
	out6 := tcpIn(local6, peerB6, 40000, 443)
	h.expect("b", false, out6, true)
	ptb := testpkt.Packet{Src: peerB6, Dst: local6, Proto: testpkt.ProtoICMPv6, ICMPType: 2, Payload: out6.Marshal()}
	h.expect("b", true, ptb, true)

	// Our own port-unreachable about an inbound packet we let in.
	h2 := newHarness(t, FirewallConfig{Inbound: []Rule{{Proto: ProtoUDP}}, Outbound: []Rule{{Proto: ProtoTCP}}}, 1024)
	in := udpPkt(peerB4, local4, 7000, 53)
	h2.expect("b", true, in, true)
	unreach := testpkt.Packet{Src: local4, Dst: peerB4, Proto: testpkt.ProtoICMP, ICMPType: 3, ICMPCode: 3, Payload: in.Marshal()}
	h2.expect("b", false, unreach, true)
	h2.expect("b", false, testpkt.Packet{Src: local4, Dst: peerB4, Proto: testpkt.ProtoICMP, ICMPType: 3, ICMPCode: 3, Payload: udpPkt(peerB4, local4, 7001, 53).Marshal()}, false)
}

// A tracked flow belongs to its peer: another peer's packets with the same
// addresses and ports (a peer whose certificate allowed it to claim B's
// address as a subnet) are no replies, and its ICMP errors about the flow
// are not B's word; with the default deny-all inbound rules both are dropped.
func TestConntrackFlowBelongsToItsPeer(t *testing.T) {
	h := newHarness(t, FirewallConfig{}, 1024)
	h.expect("b", false, udpPkt(local4, peerB4, 5000, 53), true)
	h.expect("c", true, udpPkt(peerB4, local4, 53, 5000), false) // injected by c
	h.expect("b", true, udpPkt(peerB4, local4, 53, 5000), true)  // b's reply still passes

	orig := udpPkt(local4, peerB4, 5000, 53).Marshal()
	for _, icmp := range []testpkt.Packet{
		{Src: peerB4, Dst: local4, Proto: testpkt.ProtoICMP, ICMPType: 3, ICMPCode: 3, Payload: orig}, // port unreachable
		{Src: peerB4, Dst: local4, Proto: testpkt.ProtoICMP, ICMPType: 3, ICMPCode: 4, Payload: orig}, // fragmentation needed
	} {
		h.expect("c", true, icmp, false)
		h.expect("b", true, icmp, true)
	}
	out6 := tcpIn(local6, peerB6, 40000, 443)
	h.expect("b", false, out6, true)
	ptb := testpkt.Packet{Src: peerB6, Dst: local6, Proto: testpkt.ProtoICMPv6, ICMPType: 2, Payload: out6.Marshal()}
	h.expect("c", true, ptb, false)
	h.expect("b", true, ptb, true)
	// The flow survived c's attempts.
	h.expect("b", true, udpPkt(peerB4, local4, 53, 5000), true)
}

func TestFirewallFragments(t *testing.T) {
	h := newHarness(t, FirewallConfig{}, 1024)
	frag := testpkt.Packet{Src: peerB4, Dst: local4, Proto: testpkt.ProtoUDP, FragOffset: 185, Payload: make([]byte, 40)}
	h.expect("b", true, frag, true)
	// The first fragment carries the ports and is checked.
	first := udpPkt(peerB4, local4, 1, 2)
	first.MoreFragments = true
	h.expect("b", true, first, false)
}

func TestConntrackRecheckAfterSwap(t *testing.T) {
	ssh := FirewallConfig{Inbound: []Rule{{Peers: []string{"b"}, Proto: ProtoTCP, Ports: []PortRange{{22, 22}}}}}
	h := newHarness(t, ssh, 1024)
	h.expect("b", true, tcpIn(peerB4, local4, 40000, 22), true)
	// Same rules again (a Reconfig that changed something else): the flow
	// is re-checked, still allowed, and survives.
	h.set(ssh)
	ack := tcpIn(peerB4, local4, 40000, 22)
	ack.TCPFlags = testpkt.ACK
	h.expect("b", true, ack, true)
	// b loses SSH: its established session is cut on the next packet.
	h.set(FirewallConfig{Inbound: []Rule{{Peers: []string{"c"}, Proto: ProtoTCP, Ports: []PortRange{{22, 22}}}}})
	h.expect("b", true, ack, false)
	// A flow we started is unaffected by inbound rules.
	h.expect("b", false, udpPkt(local4, peerB4, 5000, 53), true)
	h.set(FirewallConfig{})
	h.expect("b", true, udpPkt(peerB4, local4, 53, 5000), true)
	// ...but outbound rules that no longer allow it cut it.
	h.set(FirewallConfig{Outbound: []Rule{{Peers: []string{"c"}}}})
	h.expect("b", true, udpPkt(peerB4, local4, 53, 5000), false)
}

func TestConntrackBounded(t *testing.T) {
	const maxFlows = 64
	h := newHarness(t, FirewallConfig{}, maxFlows)
	for port := 1; port <= 2000; port++ {
		h.expect("b", false, udpPkt(local4, peerB4, uint16(port), 53), true)
	}
	if n := h.ct.len(); n > maxFlows {
		t.Fatalf("table holds %d flows, bound is %d", n, maxFlows)
	}
	if h.ct.evicted.Load() == 0 {
		t.Fatal("no evictions counted")
	}
	// The newest flow is tracked.
	h.expect("b", true, udpPkt(peerB4, local4, 53, 2000), true)
	// Expired entries are reused before live ones are evicted.
	h.now += int64(time.Hour)
	ev := h.ct.evicted.Load()
	h.expect("b", false, udpPkt(local4, peerB4, 3000, 53), true)
	if h.ct.evicted.Load() != ev {
		t.Fatal("a live flow was evicted although expired ones were there")
	}
}

func TestFirewallEstablishedNoAllocs(t *testing.T) {
	h := newHarness(t, FirewallConfig{Inbound: []Rule{{Proto: ProtoUDP}}}, 1024)
	b := udpPkt(peerB4, local4, 53, 5000).Marshal()
	var p packet
	if err := p.parse(b); err != nil {
		t.Fatal(err)
	}
	peer := h.peers["b"]
	if err := h.fw.filter(h.ct, &p, b, peer, true, h.now, nil); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if err := h.fw.filter(h.ct, &p, b, peer, true, h.now, nil); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("established flow check allocates %v times", n)
	}
	// A denied packet does not allocate either.
	d := tcpIn(peerB4, local4, 1, 2).Marshal()
	var q packet
	_ = q.parse(d)
	if n := testing.AllocsPerRun(1000, func() { _ = h.fw.filter(h.ct, &q, d, peer, true, h.now, nil) }); n != 0 {
		t.Fatalf("deny allocates %v times", n)
	}
}

// FuzzFirewall: rules and packets built from arbitrary bytes never make the
// firewall panic or return anything but nil or ErrNoMatchingRule.
func FuzzFirewall(f *testing.F) {
	f.Add(tcpIn(peerB4, local4, 1, 22).Marshal(), []byte{6, 0, 22, 0, 22, 24, 100, 64, 0, 0}, true)
	f.Add(echoReq(local6, peerB6, 1).Marshal(), []byte{1}, false)
	f.Add(testpkt.Packet{Src: peerB4, Dst: local4, Proto: testpkt.ProtoICMP, ICMPType: 3, Payload: udpPkt(local4, peerB4, 1, 2).Marshal()}.Marshal(), []byte{}, true)
	f.Fuzz(func(t *testing.T, pkt []byte, rb []byte, inbound bool) {
		var rules []Rule
		for len(rb) >= 10 {
			r := Rule{Proto: Proto(rb[0])}
			lo, hi := binary.BigEndian.Uint16(rb[1:3]), binary.BigEndian.Uint16(rb[3:5])
			if lo <= hi && (r.Proto == ProtoAny || r.Proto == ProtoTCP || r.Proto == ProtoUDP) {
				r.Ports = []PortRange{{lo, hi}}
			}
			if pfx, err := netip.AddrFrom4([4]byte(rb[6:10])).Prefix(int(rb[5] % 33)); err == nil {
				if rb[5]&0x80 != 0 {
					r.LocalCIDRs = []netip.Prefix{pfx}
				} else {
					r.CIDRs = []netip.Prefix{pfx}
				}
			}
			if rb[0]&0x80 != 0 {
				r.Groups = []string{"ops"}
			}
			rules = append(rules, r)
			rb = rb[10:]
		}
		cfg := FirewallConfig{Inbound: rules}
		if inbound {
			cfg.Outbound = rules
		}
		h := newHarness(t, cfg, 64)
		var p packet
		if p.parse(pkt) != nil {
			return
		}
		var fc flowCache
		for k := 0; k < 2; k++ {
			fc.reset()
			for _, peer := range h.peers {
				if err := h.fw.filter(h.ct, &p, pkt, peer, inbound, h.now, &fc); err != nil && err != ErrNoMatchingRule {
					t.Fatalf("filter returned %v", err)
				}
			}
			h.set(cfg)
		}
	})
}

// TestFlowCacheBatch: within one batch the flow cache skips lookups only for
// the very flow it saw pass; other flows, FIN/RST packets and new batches go
// through conntrack.
func TestFlowCacheBatch(t *testing.T) {
	h := newHarness(t, FirewallConfig{}, 1024)
	var fc flowCache
	check := func(inbound bool, pkt testpkt.Packet) error {
		b := pkt.Marshal()
		var p packet
		if err := p.parse(b); err != nil {
			t.Fatal(err)
		}
		return h.fw.filter(h.ct, &p, b, h.peers["b"], inbound, h.now, &fc)
	}
	if err := check(false, tcpIn(local4, peerB4, 40000, 22)); err != nil {
		t.Fatal(err)
	}
	ack := tcpIn(peerB4, local4, 22, 40000)
	ack.TCPFlags = testpkt.ACK
	if err := check(true, ack); err != nil {
		t.Fatalf("reply: %v", err)
	}
	if err := check(true, ack); err != nil {
		t.Fatalf("cached reply: %v", err)
	}
	if err := check(true, tcpIn(peerB4, local4, 22, 40001)); err != ErrNoMatchingRule {
		t.Fatalf("other flow in the same batch: %v", err)
	}
	fin := ack
	fin.TCPFlags = testpkt.FIN | testpkt.ACK
	if err := check(true, fin); err != nil {
		t.Fatalf("fin: %v", err)
	}
	// Next batch, after the closing timeout: the FIN was recorded although
	// the flow was cached.
	fc.reset()
	h.now += int64(TCPClosingTimeout) + 1
	if err := check(true, ack); err != ErrNoMatchingRule {
		t.Fatalf("after FIN and closing timeout: %v", err)
	}
}

// TestConntrackFairPerPeer: with the table full, a peer that keeps opening
// flows evicts its own, never the established flows of a peer holding
// fewer; and a lighter peer still gets its new flows tracked.
func TestConntrackFairPerPeer(t *testing.T) {
	const maxFlows = 256
	h := newHarness(t, FirewallConfig{Inbound: []Rule{{Proto: ProtoUDP}}}, maxFlows)
	// b's established flows: it sent to us, we answer.
	const bFlows = 16
	for port := 1; port <= bFlows; port++ {
		h.expect("b", true, udpPkt(peerB4, local4, uint16(port), 53), true)
	}
	// c floods: 20 000 new flows, far beyond the table.
	for port := 1; port <= 20000; port++ {
		h.expect("c", true, udpPkt(peerC4, local4, uint16(port), 53), true)
	}
	if n := h.ct.len(); n > maxFlows {
		t.Fatalf("table holds %d flows, bound is %d", n, maxFlows)
	}
	if h.ct.evicted.Load() == 0 {
		t.Fatal("no evictions counted")
	}
	for port := 1; port <= bFlows; port++ {
		k := flowKeyOf(mustParse(t, udpPkt(peerB4, local4, uint16(port), 53)), true)
		if !h.ct.has(k, peerID("b"), h.now) {
			t.Fatalf("b's flow from port %d was evicted by c's flood", port)
		}
	}
	// A new flow of b (outbound, so only tracking lets the replies in)
	// takes room from c, the heaviest, and its replies pass.
	h.expect("b", false, udpPkt(local4, peerB4, 1000, 9), true)
	h.set(FirewallConfig{}) // no inbound rules: only tracked flows pass in
	h.expect("b", true, udpPkt(peerB4, local4, 9, 1000), true)
	// The per-shard per-peer counts match the table.
	for i := range h.ct.shards {
		sh := &h.ct.shards[i]
		want := map[uint64]int32{}
		for _, e := range sh.m {
			want[e.peer]++
		}
		if len(want) != len(sh.perPeer) {
			t.Fatalf("shard %d: counts %v, entries %v", i, sh.perPeer, want)
		}
		for p, n := range want {
			if sh.perPeer[p] != n {
				t.Fatalf("shard %d: counts %v, entries %v", i, sh.perPeer, want)
			}
		}
	}
	// Expiry and sweeping keep the counts too.
	h.now += int64(2 * time.Hour)
	h.ct.sweep(h.now)
	for i := range h.ct.shards {
		if n := len(h.ct.shards[i].perPeer); n != 0 {
			t.Fatalf("shard %d keeps %d peer counts after everything expired", i, n)
		}
	}
}

func mustParse(t *testing.T, pkt testpkt.Packet) *packet {
	t.Helper()
	var p packet
	if err := p.parse(pkt.Marshal()); err != nil {
		t.Fatal(err)
	}
	return &p
}
