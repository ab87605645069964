package tunnel

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// The links below are what netlink reports for each kind on a real host
// (`ip -d link`): kind, ARPHRD encapsulation and flags.
func TestClassifyInterfaces(t *testing.T) {
	up := func(l LinkInfo) LinkInfo { l.Up = true; return l }
	policy := InterfacePolicy{OwnTUN: "meshd0", Overlay: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd7a:115c::/64")}}
	tests := []struct {
		name   string
		policy InterfacePolicy
		link   LinkInfo
		use    bool
		reason string // a part of the reason
	}{
		{"physical NIC with the default route", policy, up(LinkInfo{Name: "eth0", Kind: "device", Encap: "ether", DefaultRoute: true, Addrs: addrs("192.0.2.10")}), true, "default route"},
		{"second NIC (storage LAN)", policy, up(LinkInfo{Name: "enp2s0", Kind: "device", Encap: "ether", Addrs: addrs("10.9.0.5")}), true, "uplink"},
		{"VLAN", policy, up(LinkInfo{Name: "eth0.20", Kind: "vlan", Encap: "ether", Addrs: addrs("10.20.0.5")}), true, "uplink"},
		{"bond", policy, up(LinkInfo{Name: "bond0", Kind: "bond", Encap: "ether", DefaultRoute: true}), true, "default route"},
		{"loopback", policy, up(LinkInfo{Name: "lo", Kind: "device", Encap: "loopback", Loopback: true, Addrs: addrs("127.0.0.1")}), false, "loopback"},
		{"down", policy, LinkInfo{Name: "eth1", Kind: "device", Encap: "ether"}, false, "down"},
		{"meshd's own TUN", policy, up(LinkInfo{Name: "meshd0", Kind: "tuntap", Encap: "none", PointToPoint: true, NoARP: true, Addrs: addrs("100.64.0.7")}), false, "own TUN"},
		{"address in the overlay", policy, up(LinkInfo{Name: "eth9", Kind: "device", Encap: "ether", Addrs: addrs("100.64.3.3")}), false, "mesh prefix"},
		{"overlay even when included", InterfacePolicy{Include: []string{"*"}, Overlay: policy.Overlay}, up(LinkInfo{Name: "x", Kind: "device", Encap: "ether", Addrs: addrs("fd7a:115c::9")}), false, "loop"},
		{"own TUN even when included", InterfacePolicy{Include: []string{"meshd*"}, OwnTUN: "meshd0"}, up(LinkInfo{Name: "meshd0", Kind: "tuntap", Encap: "none"}), false, "own TUN"},
		{"wireguard-go (a TUN)", policy, up(LinkInfo{Name: "wg0", Kind: "tuntap", Encap: "none", PointToPoint: true, NoARP: true, Addrs: addrs("10.201.0.1")}), false, "tunnel device (tuntap)"},
		{"kernel WireGuard", policy, up(LinkInfo{Name: "wg1", Kind: "wireguard", Encap: "none", NoARP: true, Addrs: addrs("10.202.0.1")}), false, "wireguard"},
		{"Nebula", policy, up(LinkInfo{Name: "nebula1", Kind: "tuntap", Encap: "none", PointToPoint: true, NoARP: true}), false, "tunnel device"},
		{"OpenVPN TAP", policy, up(LinkInfo{Name: "tap0", Kind: "tuntap", Encap: "ether"}), false, "tunnel device"},
		{"Tailscale", policy, up(LinkInfo{Name: "tailscale0", Kind: "tuntap", Encap: "none", PointToPoint: true, NoARP: true, Addrs: addrs("fd7a:115c:a1e0::1")}), false, "tunnel device"},
		// Tailscale's 100.64.0.0/10 is meshd's default mesh prefix too.
		{"Tailscale in the mesh prefix", policy, up(LinkInfo{Name: "tailscale0", Kind: "tuntap", Encap: "none", Addrs: addrs("100.101.102.103")}), false, "mesh prefix"},
		{"GRE tunnel", policy, up(LinkInfo{Name: "gre1", Kind: "gre", Encap: "ipgre", PointToPoint: true, NoARP: true}), false, "gre"},
		{"flannel VXLAN", policy, up(LinkInfo{Name: "flannel.1", Kind: "vxlan", Encap: "ether"}), false, "vxlan"},
		{"unknown kind without link layer", policy, up(LinkInfo{Name: "x0", Kind: "", Encap: "none"}), false, "no link-layer"},
		{"PPP uplink with the default route", policy, up(LinkInfo{Name: "ppp0", Kind: "ppp", Encap: "ppp", PointToPoint: true, NoARP: true, DefaultRoute: true}), true, "default route"},
		{"OpenVZ venet0 with the default route", policy, up(LinkInfo{Name: "venet0", Kind: "venet", Encap: "void", NoARP: true, DefaultRoute: true}), true, "default route"},
		{"point-to-point without default route", policy, up(LinkInfo{Name: "ppp1", Kind: "ppp", Encap: "ppp", PointToPoint: true}), false, "point-to-point"},
		{"docker0", policy, up(LinkInfo{Name: "docker0", Kind: "bridge", Encap: "ether", Addrs: addrs("172.17.0.1")}), false, "bridge without the default route"},
		{"docker user network", policy, up(LinkInfo{Name: "br-3f2a9c", Kind: "bridge", Encap: "ether"}), false, "bridge"},
		{"container veth", policy, up(LinkInfo{Name: "vethab12cd", Kind: "veth", Encap: "ether"}), false, "veth"},
		{"calico veth", policy, up(LinkInfo{Name: "cali12ab", Kind: "veth", Encap: "ether"}), false, "veth"},
		{"libvirt bridge", policy, up(LinkInfo{Name: "virbr0", Kind: "bridge", Encap: "ether", Addrs: addrs("192.168.122.1")}), false, "bridge"},
		{"cni0 by name", policy, up(LinkInfo{Name: "cni0", Kind: "device", Encap: "ether"}), false, "cni*"},
		{"Proxmox vmbr0 with the default route", policy, up(LinkInfo{Name: "vmbr0", Kind: "bridge", Encap: "ether", DefaultRoute: true, Addrs: addrs("192.168.1.20")}), true, "default route"},
		{"home-lab br0 uplink", policy, up(LinkInfo{Name: "br0", Kind: "bridge", Encap: "ether", DefaultRoute: true}), true, "default route"},
		{"a container's eth0 (veth with the default route)", policy, up(LinkInfo{Name: "eth0", Kind: "veth", Encap: "ether", DefaultRoute: true}), true, "default route"},
		{"excluded", InterfacePolicy{Exclude: []string{"eth*"}}, up(LinkInfo{Name: "eth0", Kind: "device", Encap: "ether", DefaultRoute: true}), false, "exclude_interfaces"},
		{"included tunnel", InterfacePolicy{Include: []string{"wg*"}}, up(LinkInfo{Name: "wg0", Kind: "tuntap", Encap: "none"}), true, "include_interfaces"},
		{"not included", InterfacePolicy{Include: []string{"wg*"}}, up(LinkInfo{Name: "eth0", Kind: "device", Encap: "ether", DefaultRoute: true}), false, "not in ice.include_interfaces"},
		{"exclude wins over include", InterfacePolicy{Include: []string{"*"}, Exclude: []string{"docker*"}}, up(LinkInfo{Name: "docker0", Kind: "bridge"}), false, "exclude"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vs := tc.policy.Classify([]LinkInfo{tc.link})
			if len(vs) != 1 {
				t.Fatalf("%d verdicts", len(vs))
			}
			v := vs[0]
			if v.Use != tc.use || !strings.Contains(v.Reason, tc.reason) {
				t.Errorf("%s: use %v (%s), want %v (%s)", tc.link.Name, v.Use, v.Reason, tc.use, tc.reason)
			}
		})
	}
}

// The manager's view: local candidates only on used interfaces, remote ones
// only where the host routes them out of a used interface.
func TestIfaceJudge(t *testing.T) {
	links := []LinkInfo{
		{Name: "eth0", Kind: "device", Encap: "ether", Up: true, DefaultRoute: true, Addrs: addrs("192.0.2.10")},
		{Name: "wg0", Kind: "tuntap", Encap: "none", Up: true, Addrs: addrs("10.201.0.1")},
		{Name: "meshd0", Kind: "tuntap", Encap: "none", Up: true, Addrs: addrs("100.64.0.1")},
	}
	routes := map[string]string{"198.51.100.7": "eth0", "10.201.0.2": "wg0", "10.9.0.4": "meshd0"}
	j := newIfaceJudge(Options{
		Interfaces: InterfacePolicy{OwnTUN: "meshd0", Overlay: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}},
		Links:      func() ([]LinkInfo, error) { return links, nil },
		RouteInterface: func(a netip.Addr) (string, error) {
			if n, ok := routes[a.String()]; ok {
				return n, nil
			}
			return "", errors.New("no route")
		},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	local := j.localAddrs()
	if !local[netip.MustParseAddr("192.0.2.10")] || len(local) != 1 {
		t.Errorf("local candidate addresses %v, want only eth0's", local)
	}
	for addr, want := range map[string]bool{
		"198.51.100.7": true,  // out of the uplink
		"10.201.0.2":   false, // into another VPN
		"10.9.0.4":     false, // into meshd's own TUN (a peer's subnet route)
		"203.0.113.9":  true,  // no route known: left for pion to fail on
	} {
		if got := j.remoteOK(netip.MustParseAddr(addr)); got != want {
			t.Errorf("remoteOK(%s) = %v, want %v", addr, got, want)
		}
	}
	// Interfaces that cannot be listed filter nothing.
	j2 := newIfaceJudge(Options{Links: func() ([]LinkInfo, error) { return nil, errors.New("netlink: denied") }},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if j2.localAddrs() != nil {
		t.Error("an unlistable host filtered local addresses")
	}
}

// TestChooseAddrs: which of a used interface's addresses are host
// candidates. IPv6 addresses of a typical home router's LAN: a stable
// SLAAC global, a temporary (privacy) one, a deprecated one from the old
// prefix, a ULA, the link-local one.
func TestChooseAddrs(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct {
		name    string
		in      []HostAddr
		use     []netip.Addr
		skipped map[netip.Addr]string // a part of the reason
	}{
		{"home LAN", []HostAddr{
			{Addr: a("192.168.1.20")},
			{Addr: a("2001:db8:1::20")},
			{Addr: a("2001:db8:1::9f3a:1"), Temporary: true},
			{Addr: a("2001:db8:2::20"), Deprecated: true},
			{Addr: a("fd12:3456::20")},
			{Addr: a("fe80::20")},
		}, []netip.Addr{a("192.168.1.20"), a("2001:db8:1::20"), a("fd12:3456::20")}, map[netip.Addr]string{
			a("2001:db8:1::9f3a:1"): "temporary",
			a("2001:db8:2::20"):     "deprecated",
			a("fe80::20"):           "link-local",
		}},
		{"only a temporary address", []HostAddr{
			{Addr: a("2001:db8:1::9f3a:1"), Temporary: true},
			{Addr: a("fe80::20")},
		}, []netip.Addr{a("2001:db8:1::9f3a:1")}, map[netip.Addr]string{a("fe80::20"): "link-local"}},
		{"duplicate address detection", []HostAddr{
			{Addr: a("2001:db8:1::20"), Tentative: true},
			{Addr: a("2001:db8:1::21"), DADFailed: true, Tentative: true},
			{Addr: a("169.254.3.4")},
		}, nil, map[netip.Addr]string{
			a("2001:db8:1::20"): "tentative",
			a("2001:db8:1::21"): "failed duplicate",
			a("169.254.3.4"):    "link-local",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			use, skipped := ChooseAddrs(tc.in)
			if !slices.Equal(use, tc.use) {
				t.Errorf("used %v, want %v", use, tc.use)
			}
			if len(skipped) != len(tc.skipped) {
				t.Errorf("skipped %v, want %d", skipped, len(tc.skipped))
			}
			for _, s := range skipped {
				if want, ok := tc.skipped[s.Addr]; !ok || !strings.Contains(s.Reason, want) {
					t.Errorf("skipped %v (%s), want reason with %q", s.Addr, s.Reason, want)
				}
			}
		})
	}
	// A skipped address inside the overlay still marks the interface a loop.
	p := InterfacePolicy{Overlay: []netip.Prefix{netip.MustParsePrefix("fd7a:115c::/48")}}
	v := p.Classify([]LinkInfo{{Name: "eth0", Kind: "device", Encap: "ether", Up: true, DefaultRoute: true,
		Skipped: []SkippedAddr{{Addr: a("fd7a:115c::5"), Reason: "tentative"}}}})
	if v[0].Use {
		t.Errorf("interface with a (tentative) overlay address used: %+v", v[0])
	}
}
