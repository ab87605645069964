package daemon

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/pki"
)

// TestComputeDesiredIPv6: the desired state treats a peer's IPv6 overlay
// address and IPv6 subnets as it treats IPv4 ones: routed and accepted as
// sources (host /128), IPv6 subnets installed inside routes.accept and never
// inside the mesh's IPv6 prefix, an IPv6 address claimed twice decided by
// the earliest certificate, an address the authenticated certificate does
// not carry not trusted, and a peer without IPv6 routed IPv4 only.
func TestComputeDesiredIPv6(t *testing.T) {
	m := newTestMesh(t)
	a6 := func(n byte) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 15: n}), 48)
	}
	self := selfInfo{Name: "self", Addrs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/10"), a6(1)}}
	a := m.node(t, "a", 2, nodeSpec{addr6: a6(2), subnets: []string{"fd00:2::/48", "fd7a:115c:a1e0:9::/64"}})
	v4 := m.node(t, "v4", 3, nodeSpec{})
	clash := m.node(t, "zz", 4, nodeSpec{addr6: a6(2)}) // a's IPv6 address, issued later
	{
		nc, x := *clash.cert, *clash.cert.Cert
		x.NotBefore = a.cert.Cert.NotBefore.Add(time.Second)
		nc.Cert = &x
		clash.cert = &nc
	}
	rec := func(n *testNode, routes ...string) discovery.Record {
		return discovery.Record{Name: n.name, Cert: n.cert, Addrs: []netip.Addr{n.cert.Identity.Addr.Addr()},
			Routes: pfx(routes...), Presence: discovery.Presence{Online: true}}
	}
	base := desiredInput{Self: self, Firewall: firewallFrom(config.Default().Firewall), Now: time.Now(),
		Accept: pfx("::/0", "0.0.0.0/0")}

	t.Run("addresses and subnets", func(t *testing.T) {
		in := base
		in.Records = []discovery.Record{rec(a, "fd00:2::/48", "fd7a:115c:a1e0:9::/64"), rec(v4)}
		got := computeDesired(in)
		want := map[string][]netip.Prefix{
			"a":  pfx("100.64.0.2/32", "fd7a:115c:a1e0::2/128", "fd00:2::/48"),
			"v4": pfx("100.64.0.3/32"),
		}
		if len(got.Overlay.Peers) != len(want) {
			t.Fatalf("peers %+v", got.Overlay.Peers)
		}
		for _, p := range got.Overlay.Peers {
			if !slices.Equal(p.Routes, want[p.Name]) || !slices.Equal(p.AllowedPrefixes, want[p.Name]) {
				t.Errorf("peer %s: routes %v, allowed %v; want %v", p.Name, p.Routes, p.AllowedPrefixes, want[p.Name])
			}
		}
		if len(got.Dropped) != 1 || got.Dropped[0].Prefix != netip.MustParsePrefix("fd7a:115c:a1e0:9::/64") || got.Dropped[0].Reason != routeMesh {
			t.Errorf("dropped %+v, want the subnet inside the mesh's IPv6 prefix (%s)", got.Dropped, routeMesh)
		}
		if !slices.Equal(got.Overlay.Addresses, self.Addrs) {
			t.Errorf("own addresses %v, want %v", got.Overlay.Addresses, self.Addrs)
		}
		// A real overlay takes it.
		ov, err := overlay.New(overlay.Options{Mode: overlay.ModeUserspace, UserspaceAddresses: []netip.Addr{self.Addrs[0].Addr(), self.Addrs[1].Addr()}})
		if err != nil {
			t.Fatal(err)
		}
		defer ov.Close()
		if err := ov.Reconfig(got.Overlay); err != nil {
			t.Fatalf("Reconfig: %v", err)
		}
	})

	t.Run("routes.accept of one family", func(t *testing.T) {
		in := base
		in.Accept = pfx("0.0.0.0/0")
		in.Records = []discovery.Record{rec(a, "fd00:2::/48")}
		got := computeDesired(in)
		if len(got.Overlay.Peers) != 1 || slices.Contains(got.Overlay.Peers[0].Routes, netip.MustParsePrefix("fd00:2::/48")) {
			t.Errorf("an IPv6 subnet was installed although routes.accept holds only 0.0.0.0/0: %+v", got.Overlay.Peers)
		}
		if len(got.Dropped) != 1 || got.Dropped[0].Reason != routeNotAccept {
			t.Errorf("dropped %+v, want %s", got.Dropped, routeNotAccept)
		}
	})

	t.Run("IPv6 address claimed twice", func(t *testing.T) {
		in := base
		in.Records = []discovery.Record{rec(clash), rec(a)}
		got := computeDesired(in)
		for _, p := range got.Peers {
			switch p.Name {
			case "a":
				if p.Excluded != "" {
					t.Errorf("a (the earlier certificate) excluded: %s", p.Excluded)
				}
			case "zz":
				if p.Excluded != excludeAddrConflict {
					t.Errorf("zz (a later certificate for a's IPv6 address) excluded = %q, want %q", p.Excluded, excludeAddrConflict)
				}
			}
		}
	})

	t.Run("IPv6 address of our own", func(t *testing.T) {
		own := m.node(t, "own6", 5, nodeSpec{addr6: a6(1)})
		in := base
		in.Records = []discovery.Record{rec(own)}
		got := computeDesired(in)
		if len(got.Peers) != 1 || got.Peers[0].Excluded != excludeSelfAddress {
			t.Errorf("a peer with our IPv6 address: %+v", got.Peers)
		}
	})

	t.Run("authenticated certificate without the IPv6 address", func(t *testing.T) {
		key, _ := pki.GenerateKey(pki.KeyECDSAP256)
		id := a.cert.Identity
		id.Addr6 = netip.Prefix{}
		shown, err := m.ca.Sign(key.Public(), id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		in := base
		in.Records = []discovery.Record{rec(a)}
		in.Handshake = map[string]*pki.NodeCert{"a": shown}
		got := computeDesired(in)
		if len(got.Overlay.Peers) != 1 || slices.Contains(got.Overlay.Peers[0].AllowedPrefixes, netip.MustParsePrefix("fd7a:115c:a1e0::2/128")) {
			t.Errorf("the registry's IPv6 address was trusted although the link's certificate lacks it: %+v", got.Overlay.Peers)
		}
	})
}
