package overlay

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/meshd/meshd/overlay/internal/testpkt"
)

func BenchmarkParse(b *testing.B) {
	pkt := testpkt.Packet{Src: local4, Dst: peerB4, Proto: testpkt.ProtoTCP, SrcPort: 1, DstPort: 2, Payload: make([]byte, 1360)}.Marshal()
	var p packet
	b.ReportAllocs()
	for b.Loop() {
		if err := p.parse(pkt); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRouteLookup: 1000 peers with a /32 each plus 100 /24 subnets.
func BenchmarkRouteLookup(b *testing.B) {
	var rt routeTable
	for i := range 1000 {
		p := &peerState{name: fmt.Sprint(i)}
		rt.insert(netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)}), 32), p)
		if i < 100 {
			rt.insert(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24), p)
		}
	}
	dsts := []netip.Addr{netip.MustParseAddr("100.64.3.7"), netip.MustParseAddr("10.42.0.9"), netip.MustParseAddr("192.0.2.1")}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		rt.lookup(dsts[i%len(dsts)])
		i++
	}
}

// BenchmarkFirewallEstablished: the per-packet firewall cost of a tracked
// flow without the batch flow cache (every packet a conntrack lookup).
func BenchmarkFirewallEstablished(b *testing.B) {
	ct := newConntrack(DefaultMaxFlows)
	cfg := FirewallConfig{Inbound: []Rule{{Proto: ProtoUDP, Ports: []PortRange{{53, 53}}}}}
	fw := compileFirewall(cfg, 1)
	peer := &peerState{fwIn: identityBits(cfg.Inbound, "b", nil)}
	pkt := testpkt.Packet{Src: peerB4, Dst: local4, Proto: testpkt.ProtoUDP, SrcPort: 5000, DstPort: 53}.Marshal()
	var p packet
	if err := p.parse(pkt); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := fw.filter(ct, &p, pkt, peer, true, 1, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConntrackNewFlowFull: the cost of tracking a new flow when the
// table is full (a peer opening flows in a loop), with a second peer's
// flows in the table.
func BenchmarkConntrackNewFlowFull(b *testing.B) {
	ct := newConntrack(DefaultMaxFlows)
	key := func(peer netip.Addr, port uint32) flowKey {
		return flowKey{local: local4.As16(), remote: peer.As16(), lport: uint16(port), rport: uint16(port >> 16), proto: protoUDP}
	}
	idB, idC := peerID("b"), peerID("c")
	for i := range uint32(DefaultMaxFlows / 8) {
		ct.insert(key(peerB4, i), flowEntry{expire: 1 << 62, peer: idB}, 1)
	}
	var i uint32
	for range DefaultMaxFlows {
		ct.insert(key(peerC4, i), flowEntry{expire: 1 << 62, peer: idC}, 1)
		i++
	}
	b.ReportAllocs()
	for b.Loop() {
		ct.insert(key(peerC4, i), flowEntry{expire: 1 << 62, peer: idC}, 1)
		i++
	}
}
