package overlay

import (
	"net/netip"
	"testing"
)

func TestRouteLongestPrefix(t *testing.T) {
	peers := map[string]*peerState{}
	var rt routeTable
	add := func(name string, prefixes ...string) {
		p := &peerState{name: name}
		peers[name] = p
		for _, s := range prefixes {
			rt.insert(netip.MustParsePrefix(s), p)
		}
	}
	add("gw", "10.0.0.0/8", "fd00::/8")
	add("lan", "10.1.0.0/16")
	add("rack", "10.1.2.0/24", "fd00:1:2::/48")
	add("host", "10.1.2.3/32", "fd00:1:2::3/128")
	add("mesh-b", "100.64.0.2/32", "fd7a::2/128")
	add("edge", "192.0.2.128/25")

	tests := []struct {
		dst, want string
		bits      int
	}{
		{"10.1.2.3", "host", 32},
		{"10.1.2.4", "rack", 24},
		{"10.1.3.1", "lan", 16},
		{"10.200.0.1", "gw", 8},
		{"100.64.0.2", "mesh-b", 32},
		{"192.0.2.200", "edge", 25},
		{"fd00:1:2::3", "host", 128},
		{"fd00:1:2::4", "rack", 48},
		{"fd00:9::1", "gw", 8},
		{"fd7a::2", "mesh-b", 128},
		// no route
		{"100.64.0.3", "", 0},
		{"11.0.0.1", "", 0},
		{"192.0.2.127", "", 0},
		{"fe80::1", "", 0},
		{"2001:db8::1", "", 0},
		{"::ffff:10.1.2.3", "", 0}, // an IPv4-mapped IPv6 destination is IPv6, not 10.1.2.3
	}
	for _, tt := range tests {
		p, bits := rt.lookup(netip.MustParseAddr(tt.dst))
		got := ""
		if p != nil {
			got = p.name
		}
		if got != tt.want || bits != tt.bits {
			t.Errorf("lookup(%s) = %q /%d, want %q /%d", tt.dst, got, bits, tt.want, tt.bits)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		rt.lookup(netip.MustParseAddr("10.1.2.4"))
		rt.lookup(netip.MustParseAddr("fd00:1:2::4"))
	}); n != 0 {
		t.Fatalf("lookup allocates %v times per run", n)
	}
}

func TestRouteEmptyTable(t *testing.T) {
	var rt routeTable
	if p, _ := rt.lookup(netip.MustParseAddr("10.0.0.1")); p != nil {
		t.Fatal("empty table routed")
	}
	if p, _ := rt.lookup(netip.Addr{}); p != nil {
		t.Fatal("invalid address routed")
	}
}
