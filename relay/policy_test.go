package relay

import (
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/peerpolicy"
)

// lanHost is a relay host with a public address and a LAN one.
func lanHost() ([]net.Addr, error) {
	return []net.Addr{
		&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
		&net.IPNet{IP: net.ParseIP("203.0.113.7"), Mask: net.CIDRMask(24, 32)},
		&net.IPNet{IP: net.ParseIP("192.168.1.10"), Mask: net.CIDRMask(24, 32)},
	}, nil
}

// hostilePolicy is the policy of a relay at relayAddr on lanHost whose mesh
// vouches for every address in vouched (a hostile member put them in its
// self-signed record's endpoints).
func hostilePolicy(relayAddr string, vouched []netip.Addr) *policy {
	return newPolicy(&Options{
		RelayAddress:   netip.MustParseAddr(relayAddr),
		Vouched:        func() []netip.Addr { return vouched },
		MeshPort:       func() uint16 { return 41641 },
		Now:            time.Now,
		Logger:         slog.New(slog.DiscardHandler),
		interfaceAddrs: lanHost,
	})
}

// TestPolicyRefusesVouchedInternalPeers: a member relay applies the
// coordinators' default peer policy on top of the vouched-address rule, so
// a member that advertises an internal address of the relay host's
// networks as its endpoint cannot send there through the relay: a private
// address of the relay's LAN while the relay is public, NAT64 or 6to4
// addresses embedding a private or loopback IPv4, unroutable and reserved
// addresses. Vouched public endpoints (the test ranges a lab's internet is
// built from included) still pass, and so do private ones when the relay
// itself is on a private address.
func TestPolicyRefusesVouchedInternalPeers(t *testing.T) {
	const public, lanRelay = "203.0.113.7", "192.168.1.10"
	for _, tc := range []struct {
		name, relay, peer string
		want              peerpolicy.Reason
	}{
		{"public relay: LAN address of its host's network", public, "192.168.1.20:22", peerpolicy.Private},
		{"public relay: other rfc1918", public, "10.0.0.1:53", peerpolicy.Private},
		{"public relay: cgnat", public, "100.64.0.1:9", peerpolicy.Private},
		{"public relay: ula", public, "[fd00::1]:9", peerpolicy.Private},
		{"public relay: v4-mapped LAN address", public, "[::ffff:192.168.1.20]:22", peerpolicy.Private},
		{"nat64 of a LAN address", public, "[64:ff9b::192.168.1.20]:22", peerpolicy.Private},
		{"nat64 of loopback", public, "[64:ff9b::127.0.0.1]:22", peerpolicy.Special},
		{"nat64 of link-local (metadata)", public, "[64:ff9b::169.254.169.254]:80", peerpolicy.Special},
		{"6to4 of a LAN address", public, "[2002:c0a8:114::1]:22", peerpolicy.Private},
		{"6to4 of loopback", public, "[2002:7f00:1::1]:22", peerpolicy.Special},
		{"nat64 of its own service", public, "[64:ff9b::203.0.113.7]:22", peerpolicy.OwnService},
		{"local-use nat64", public, "[64:ff9b:1::c0a8:114]:9", peerpolicy.Private},
		{"v4-compatible", public, "[::c0a8:114]:9", peerpolicy.Special},
		{"discard prefix", public, "[100::1]:9", peerpolicy.Special},
		{"reserved", public, "240.0.0.1:9", peerpolicy.Special},
		{"broadcast", public, "255.255.255.255:9", peerpolicy.Special},
		{"this network", public, "0.1.2.3:9", peerpolicy.Special},
		{"loopback", public, "127.0.0.1:41641", peerpolicy.Special},
		{"link-local", public, "169.254.169.254:80", peerpolicy.Special},
		{"v6 multicast", public, "[ff02::1]:9", peerpolicy.Special},
		{"own LAN address, service port", public, "192.168.1.10:22", peerpolicy.OwnService},
		{"own LAN address, mesh port", public, "192.168.1.10:41641", peerpolicy.Allowed},
		{"public endpoint", public, "198.51.100.9:41641", peerpolicy.Allowed},
		{"benchmarking range endpoint", public, "198.18.0.5:41641", peerpolicy.Allowed},
		{"documentation range endpoint", public, "203.0.113.9:41641", peerpolicy.Allowed},
		{"public v6 endpoint", public, "[2001:db8::7]:41641", peerpolicy.Allowed},
		{"nat64 of a public endpoint", public, "[64:ff9b::198.51.100.9]:41641", peerpolicy.Allowed},
		{"LAN relay: LAN endpoint", lanRelay, "192.168.1.20:41641", peerpolicy.Allowed},
		{"LAN relay: other private endpoint", lanRelay, "10.1.1.1:41641", peerpolicy.Allowed},
		{"LAN relay: nat64 of a LAN endpoint", lanRelay, "[64:ff9b::192.168.1.20]:41641", peerpolicy.Allowed},
		{"LAN relay: loopback", lanRelay, "127.0.0.1:41641", peerpolicy.Special},
		{"LAN relay: own service", lanRelay, "192.168.1.10:22", peerpolicy.OwnService},
		{"LAN relay: own relay port", lanRelay, "192.168.1.10:50000", peerpolicy.Allowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := netip.MustParseAddrPort(tc.peer)
			p := hostilePolicy(tc.relay, []netip.Addr{peer.Addr()})
			if got := p.allowAddrPort(peer); got != (tc.want == peerpolicy.Allowed) {
				t.Errorf("datagram to %s relayed = %v, want %v", peer, got, tc.want)
			}
			// The permission (IP only) refuses what is refused on every
			// port.
			if got := p.allowIP(peer.Addr()); got != (tc.want == peerpolicy.Allowed || tc.want == peerpolicy.OwnService) {
				t.Errorf("permission for %s granted = %v (want %v)", peer.Addr(), got, tc.want)
			}
			if want := tc.want != peerpolicy.Allowed; (p.refused.Load() > 0) != want {
				t.Errorf("%d refusals counted, want some = %v", p.refused.Load(), want)
			}
		})
	}
	// The same addresses, vouched for by nobody, are refused as before.
	p := hostilePolicy(public, nil)
	for _, a := range []string{"198.51.100.9:41641", "192.168.1.20:41641"} {
		if p.allowAddrPort(netip.MustParseAddrPort(a)) {
			t.Errorf("unvouched %s relayed", a)
		}
	}
}

// TestPolicyDefaultsMatchCoordinator: for random addresses the mesh vouches
// for, a member relay relays exactly where a coordinator's embedded TURN
// with the same relay address, host addresses and open ports would by
// default (no allowed/denied lists: discovery's peerPolicy over
// peerpolicy.Policy): the member relay adds the vouched-address rule and
// nothing else.
func TestPolicyDefaultsMatchCoordinator(t *testing.T) {
	host, _ := lanHost()
	var own []netip.Addr
	for _, a := range host {
		ip, _ := netip.AddrFromSlice(a.(*net.IPNet).IP)
		own = append(own, ip.Unmap())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, relayAddr := range []string{"203.0.113.7", "192.168.1.10", "2001:db8::1", "fd00::1"} {
		ra := netip.MustParseAddr(relayAddr)
		isOwn := func(a netip.Addr) bool { return a == ra || slices.Contains(own, a) }
		coord := peerpolicy.Policy{
			AllowPrivate: peerpolicy.AllowPrivateFor(ra),
			IsOwn:        isOwn,
			OpenPort:     func(p uint16) bool { return p >= relayPortMin || p == 41641 },
		}
		for range 5000 {
			ap := netip.AddrPortFrom(randomPeer(rng, own), randomPort(rng))
			p := hostilePolicy(relayAddr, []netip.Addr{ap.Addr().Unmap()})
			want := coord.CheckSend(ap) == peerpolicy.Allowed
			if got := p.allowAddrPort(ap); got != want {
				t.Fatalf("relay at %s: datagram to %s relayed = %v, coordinator default %v", relayAddr, ap, got, want)
			}
		}
	}
}

// randomPeer draws addresses around the interesting ranges: random IPv4 and
// IPv6, the host's own, and IPv4-mapped, NAT64 and 6to4 forms of IPv4.
func randomPeer(rng *rand.Rand, own []netip.Addr) netip.Addr {
	v4 := func() [4]byte {
		var b [4]byte
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		switch rng.IntN(6) { // bias towards the ranges the policy names
		case 0:
			b[0] = []byte{0, 10, 100, 127, 169, 172, 192, 198, 203, 224, 240, 255}[rng.IntN(12)]
		case 1:
			b[0], b[1] = 192, 168
		}
		return b
	}
	switch rng.IntN(7) {
	case 0:
		return own[rng.IntN(len(own))]
	case 1:
		return netip.AddrFrom4(v4())
	case 2:
		b := v4()
		return netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: b[0], 13: b[1], 14: b[2], 15: b[3]})
	case 3:
		b := v4()
		return netip.AddrFrom16([16]byte{0: 0, 1: 0x64, 2: 0xff, 3: 0x9b, 12: b[0], 13: b[1], 14: b[2], 15: b[3]})
	case 4:
		b := v4()
		return netip.AddrFrom16([16]byte{0: 0x20, 1: 0x02, 2: b[0], 3: b[1], 4: b[2], 5: b[3], 15: 1})
	}
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	if rng.IntN(2) == 0 {
		b[0], b[1] = []byte{0, 1, 0xfc, 0xfd, 0xfe, 0xfe, 0xff, 0x20}[rng.IntN(8)], []byte{0, 0x80, 0xc0, 0x01}[rng.IntN(4)]
	}
	return netip.AddrFrom16(b)
}

func randomPort(rng *rand.Rand) uint16 {
	return []uint16{22, 53, 41641, relayPortMin - 1, relayPortMin, 50000, relayPortMax}[rng.IntN(7)]
}
