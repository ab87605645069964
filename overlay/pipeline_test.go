package overlay_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/overlay/overlaytest"
)

var allowAll = overlay.FirewallConfig{Inbound: []overlay.Rule{{}}}

func udp(src, dst netip.Addr, sport, dport uint16, payload string) []byte {
	return overlaytest.Packet{Src: src, Dst: dst, Proto: overlaytest.ProtoUDP, SrcPort: sport, DstPort: dport, Payload: []byte(payload)}.Marshal()
}

func tcp(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	return overlaytest.Packet{Src: src, Dst: dst, Proto: overlaytest.ProtoTCP, SrcPort: sport, DstPort: dport, TCPFlags: flags}.Marshal()
}

// twoNodes joins A (100.64.0.1, fd7a:…::1) and B (…2) over a direct pipe.
func twoNodes(t *testing.T, fwA, fwB overlay.FirewallConfig) (a, b *tnode, ca, cb *overlaytest.Conn) {
	a = newTNode(t, overlaytest.TUNOptions{}, nil)
	b = newTNode(t, overlaytest.TUNOptions{}, nil)
	ca, cb = pipe(t, false)
	reconfig(t, a.ifc, overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrA), meshAddr(addrA6)},
		Peers:     []overlay.PeerConfig{{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB), host(addrB6)}, Conn: ca}},
		Firewall:  fwA,
	})
	reconfig(t, b.ifc, overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrB), meshAddr(addrB6)},
		Peers:     []overlay.PeerConfig{{Name: "a", AllowedPrefixes: []netip.Prefix{host(addrA), host(addrA6)}, Conn: cb}},
		Firewall:  fwB,
	})
	return a, b, ca, cb
}

func TestTwoNodesExchange(t *testing.T) {
	testutil.LeakCheck(t)
	a, b, _, _ := twoNodes(t, overlay.FirewallConfig{}, overlay.FirewallConfig{Inbound: []overlay.Rule{{Proto: overlay.ProtoUDP, Ports: []overlay.PortRange{{53, 53}}}}})

	q := udp(addrA, addrB, 40000, 53, "query")
	inject(t, a.tun, q)
	if got := recvPacket(t, b.tun); !bytes.Equal(got, q) {
		t.Fatalf("B received % x, want % x", got, q)
	}
	// The answer comes back through B's outbound (default allow) and A's
	// inbound (default deny, but the flow is tracked).
	r := udp(addrB, addrA, 53, 40000, "answer")
	inject(t, b.tun, r)
	if got := recvPacket(t, a.tun); !bytes.Equal(got, r) {
		t.Fatalf("A received % x, want % x", got, r)
	}
	// IPv6 too.
	q6 := udp(addrA6, addrB6, 40000, 53, "query6")
	inject(t, a.tun, q6)
	if got := recvPacket(t, b.tun); !bytes.Equal(got, q6) {
		t.Fatalf("B received % x, want % x", got, q6)
	}

	sa := waitStats(t, a.ifc, "A counted", func(s overlay.Stats) bool { return s.PacketsOut == 2 && s.PacketsIn == 1 })
	if sa.BytesOut != uint64(len(q)+len(q6)) || sa.BytesIn != uint64(len(r)) || sa.Drops.Total() != 0 {
		t.Fatalf("A stats %+v", sa)
	}
	sb := waitStats(t, b.ifc, "B counted", func(s overlay.Stats) bool { return s.PacketsIn == 2 && s.PacketsOut == 1 })
	if sb.Flows == 0 {
		t.Fatalf("B tracks no flows: %+v", sb)
	}
}

func TestThreeNodesLongestPrefixRouting(t *testing.T) {
	testutil.LeakCheck(t)
	a := newTNode(t, overlaytest.TUNOptions{}, nil)
	b := newTNode(t, overlaytest.TUNOptions{}, nil)
	c := newTNode(t, overlaytest.TUNOptions{}, nil)
	ab, ba := pipe(t, false)
	ac, ca := pipe(t, false)
	reconfig(t, a.ifc, overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrA)},
		Peers: []overlay.PeerConfig{
			// B routes the whole 10.2.0.0/16, C the more specific 10.2.3.0/24.
			{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB), pfx("10.2.0.0/16")}, Conn: ab},
			{Name: "c", AllowedPrefixes: []netip.Prefix{host(addrC), pfx("10.2.3.0/24")}, Conn: ac},
		},
	})
	reconfig(t, b.ifc, overlay.Config{
		Addresses:    []netip.Prefix{meshAddr(addrB)},
		Peers:        []overlay.PeerConfig{{Name: "a", AllowedPrefixes: []netip.Prefix{host(addrA)}, Conn: ba}},
		LocalSubnets: []netip.Prefix{pfx("10.2.0.0/16")},
		Forwarding:   true,
		Firewall:     allowAll,
	})
	reconfig(t, c.ifc, overlay.Config{
		Addresses:    []netip.Prefix{meshAddr(addrC)},
		Peers:        []overlay.PeerConfig{{Name: "a", AllowedPrefixes: []netip.Prefix{host(addrA)}, Conn: ca}},
		LocalSubnets: []netip.Prefix{pfx("10.2.3.0/24")},
		Forwarding:   true,
		Firewall:     allowAll,
	})

	toB1 := udp(addrA, addrB, 1, 1, "b1")
	toC1 := udp(addrA, addrC, 1, 1, "c1")
	toC2 := udp(addrA, netip.MustParseAddr("10.2.3.4"), 1, 1, "c2")
	toB2 := udp(addrA, netip.MustParseAddr("10.2.4.4"), 1, 1, "b2")
	toB3 := udp(addrA, netip.MustParseAddr("10.2.255.1"), 1, 1, "b3")
	// One batch, interleaved: each peer must get its packets in order.
	inject(t, a.tun, toB1, toC1, toC2, toB2, toB3)
	for _, want := range [][]byte{toB1, toB2, toB3} {
		if got := recvPacket(t, b.tun); !bytes.Equal(got, want) {
			t.Fatalf("B got %q, want %q", got[28:], want[28:])
		}
	}
	for _, want := range [][]byte{toC1, toC2} {
		if got := recvPacket(t, c.tun); !bytes.Equal(got, want) {
			t.Fatalf("C got %q, want %q", got[28:], want[28:])
		}
	}
	for dst, want := range map[string]string{"10.2.3.4": "c", "10.2.9.9": "b", "100.64.0.3": "c", "100.64.0.99": ""} {
		got, ok := a.ifc.RouteTo(netip.MustParseAddr(dst))
		if got != want || ok != (want != "") {
			t.Errorf("RouteTo(%s) = %q, %v; want %q", dst, got, ok, want)
		}
	}
}

func TestNoRouteICMPUnreachable(t *testing.T) {
	testutil.LeakCheck(t)
	a, b, _, _ := twoNodes(t, overlay.FirewallConfig{}, allowAll)

	syn := tcp(addrA, addrX, 40000, 80, overlaytest.SYN)
	inject(t, a.tun, syn)
	icmp := recvPacket(t, a.tun)
	want := overlaytest.Packet{Src: addrX, Dst: addrA, Proto: overlaytest.ProtoICMP, ICMPType: 3, ICMPCode: 1, Payload: syn}.Marshal()
	if !bytes.Equal(icmp, want) {
		t.Fatalf("ICMP error\n% x\nwant\n% x", icmp, want)
	}
	syn6 := tcp(addrA6, netip.MustParseAddr("fd7a:115c:a1e0::99"), 40000, 80, overlaytest.SYN)
	inject(t, a.tun, syn6)
	icmp6 := recvPacket(t, a.tun)
	if icmp6[0]>>4 != 6 || icmp6[6] != overlaytest.ProtoICMPv6 || icmp6[40] != 1 || icmp6[41] != 3 || !bytes.Equal(icmp6[48:], syn6) {
		t.Fatalf("ICMPv6 error % x", icmp6)
	}
	// Multicast without a route is dropped and counted, never answered.
	inject(t, a.tun, udp(addrA, netip.MustParseAddr("224.0.0.251"), 5353, 5353, "mdns"))
	s := waitStats(t, a.ifc, "three no-route drops", func(s overlay.Stats) bool { return s.Drops.NoRoute == 3 })
	if s.ICMPSent != 2 || s.PacketsOut != 0 {
		t.Fatalf("stats %+v", s)
	}
	noPacket(t, a.tun)
	noPacket(t, b.tun)

	// Rate limit: a burst of no-route packets gets a bounded number of
	// answers.
	var burst [][]byte
	for i := range 60 {
		burst = append(burst, tcp(addrA, addrX, uint16(1000+i), 80, overlaytest.SYN))
	}
	inject(t, a.tun, burst...)
	s = waitStats(t, a.ifc, "burst counted", func(s overlay.Stats) bool { return s.Drops.NoRoute == 63 })
	if s.ICMPSent >= 62 || s.ICMPSent < 3 {
		t.Fatalf("ICMP errors sent for 60 no-route packets: %d total, want rate-limited", s.ICMPSent)
	}
}

func TestAntiSpoofing(t *testing.T) {
	testutil.LeakCheck(t)
	a := newTNode(t, overlaytest.TUNOptions{}, nil)
	ab, _ := pipe(t, false)
	ac, _ := pipe(t, false)
	base := overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrA), meshAddr(addrA6)},
		Peers: []overlay.PeerConfig{
			{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB), host(addrB6), pfx("10.2.0.0/24")}, Conn: ab},
			{Name: "c", AllowedPrefixes: []netip.Prefix{host(addrC), pfx("10.3.0.0/24")}, Conn: ac},
		},
		LocalSubnets: []netip.Prefix{pfx("192.168.7.0/24")},
		Firewall:     allowAll,
	}
	reconfig(t, a.ifc, base)

	type probe struct {
		name string
		via  *overlaytest.Conn // A's link the packet arrives on
		pkt  []byte
		drop string // "" = delivered, else the Drops field that counts it
	}
	lan := netip.MustParseAddr("192.168.7.10")
	probes := []probe{
		{"b from its overlay address", ab, udp(addrB, addrA, 1, 2, "ok"), ""},
		{"b from its v6 overlay address", ab, udp(addrB6, addrA6, 1, 2, "ok"), ""},
		{"b from its subnet", ab, udp(netip.MustParseAddr("10.2.0.7"), addrA, 1, 2, "ok"), ""},
		{"b claiming c's address", ab, udp(addrC, addrA, 1, 2, "spoof"), "spoofed"},
		{"b claiming c's subnet", ab, udp(netip.MustParseAddr("10.3.0.7"), addrA, 1, 2, "spoof"), "spoofed"},
		{"b from outside its subnet", ab, udp(netip.MustParseAddr("10.2.1.7"), addrA, 1, 2, "spoof"), "spoofed"},
		{"b claiming our own address", ab, udp(addrA, addrA, 1, 2, "spoof"), "spoofed"},
		{"c from its overlay address", ac, udp(addrC, addrA, 1, 2, "ok"), ""},
		{"c claiming b's address", ac, udp(addrB, addrA, 1, 2, "spoof"), "spoofed"},
		{"c from a v6 address it does not have", ac, udp(netip.MustParseAddr("fd7a:115c:a1e0::3"), addrA6, 1, 2, "spoof"), "spoofed"},
		{"b to an address that is not ours", ab, udp(addrB, addrX, 1, 2, "transit"), "notLocal"},
		{"b to a local subnet with forwarding off", ab, udp(addrB, lan, 1, 2, "lan"), "notLocal"},
	}
	var want overlay.Drops
	var delivered uint64
	for _, p := range probes {
		p.via.Deliver(p.pkt)
		switch p.drop {
		case "":
			delivered++
			if got := recvPacket(t, a.tun); !bytes.Equal(got, p.pkt) {
				t.Fatalf("%s: TUN got % x", p.name, got)
			}
		case "spoofed":
			want.Spoofed++
		case "notLocal":
			want.NotLocal++
		}
		s := a.ifc.Stats()
		if s.Drops != want || s.PacketsIn != delivered {
			t.Fatalf("%s: drops %+v in %d, want %+v in %d", p.name, s.Drops, s.PacketsIn, want, delivered)
		}
		noPacket(t, a.tun)
	}

	// With forwarding on, the local subnet is accepted.
	fwd := base
	fwd.Forwarding = true
	reconfig(t, a.ifc, fwd)
	pkt := udp(addrB, lan, 1, 2, "lan")
	ab.Deliver(pkt)
	if got := recvPacket(t, a.tun); !bytes.Equal(got, pkt) {
		t.Fatalf("forwarded packet: TUN got % x", got)
	}

	// A link the overlay let go is not trusted, even for a valid source:
	// act as a link that still calls its old receiver.
	stale := ac.Receiver()
	gone := fwd
	gone.Peers = gone.Peers[:1]
	reconfig(t, a.ifc, gone)
	if ac.HasReceiver() {
		t.Fatal("A did not detach the link of removed peer c")
	}
	if !ab.HasReceiver() {
		t.Fatal("A detached the link of peer b, which stayed")
	}
	buf := make([]byte, overlay.HeaderRoom+100)
	n := copy(buf[overlay.HeaderRoom:], udp(addrC, addrA, 1, 2, "late"))
	stale([][]byte{buf[:overlay.HeaderRoom+n]}, overlay.HeaderRoom)
	if s := a.ifc.Stats(); s.Drops.Spoofed != want.Spoofed+1 {
		t.Fatalf("packet through a released link: drops %+v", s.Drops)
	}
	noPacket(t, a.tun)
}
