package daemon

import (
	"math/big"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel"
)

func pfx(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, x := range s {
		out[i] = netip.MustParsePrefix(x)
	}
	return out
}

func TestComputeDesired(t *testing.T) {
	m := newTestMesh(t)
	// a: plain; b: may route 10.2.0.0/16; c: may route 10.3.0.0/16 and the
	// same 10.9.0.0/24 as d; e: same address as self.
	a := m.node(t, "a", 2, nodeSpec{groups: []string{"lab"}})
	b := m.node(t, "b", 3, nodeSpec{subnets: []string{"10.2.0.0/16"}})
	c := m.node(t, "c", 4, nodeSpec{subnets: []string{"10.3.0.0/16", "10.9.0.0/24", "100.64.0.0/10"}})
	dn := m.node(t, "d", 5, nodeSpec{subnets: []string{"10.9.0.0/24"}})
	self := m.node(t, "self", 1, nodeSpec{subnets: []string{"192.168.1.0/24"}})
	twin := m.node(t, "twin", 1, nodeSpec{}) // same address as self
	clash := m.node(t, "zz", 2, nodeSpec{})  // same address as a
	b2 := m.node(t, "b2", 6, nodeSpec{})     // revoked
	// Certificates carry whole seconds: make the rivals of a visibly younger
	// so that the earliest-issued rule, not fingerprint order, decides.
	issuedAfter := func(n, ref *testNode) {
		nc, x := *n.cert, *n.cert.Cert
		x.NotBefore = ref.cert.Cert.NotBefore.Add(time.Second)
		nc.Cert = &x
		n.cert = &nc
	}
	issuedAfter(clash, a)
	// hijack holds a valid certificate for a's address, issued after a's,
	// with a name that sorts first.
	hijack := m.node(t, "0hijack", 2, nodeSpec{})
	issuedAfter(hijack, a)
	rec := func(n *testNode, online bool, routes ...string) discovery.Record {
		return discovery.Record{Name: n.name, Cert: n.cert, Addrs: []netip.Addr{n.cert.Identity.Addr.Addr()},
			Groups: n.cert.Identity.Groups, Routes: pfx(routes...), Presence: discovery.Presence{Online: online}}
	}
	now := time.Now()
	fw := firewallFrom(config.Default().Firewall)
	base := func() desiredInput {
		return desiredInput{
			Self:     selfInfo{Name: "self", Addrs: pfx("100.64.0.1/10")},
			Firewall: fw,
			Now:      now,
		}
	}
	peerA := overlay.PeerConfig{Name: "a", Groups: []string{"lab"}, AllowedPrefixes: pfx("100.64.0.2/32"), Routes: pfx("100.64.0.2/32")}
	linkA := tunnel.Peer{Name: "a", Addr: netip.MustParseAddr("100.64.0.2"), Fingerprint: a.cert.Fingerprint}
	linkB := tunnel.Peer{Name: "b", Addr: netip.MustParseAddr("100.64.0.3"), Fingerprint: b.cert.Fingerprint}
	// shownAs is another certificate of n (a renewal, or an older one), with
	// other groups and subnets: what n's link may authenticate while the
	// registry holds n.cert.
	shownAs := func(n *testNode, groups []string, subnets ...string) *pki.NodeCert {
		key, err := pki.GenerateKey(pki.KeyECDSAP256)
		if err != nil {
			t.Fatal(err)
		}
		id := n.cert.Identity
		id.Groups, id.Subnets = groups, pfx(subnets...)
		nc, err := m.ca.Sign(key.Public(), id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}

	tests := []struct {
		name      string
		in        func() desiredInput
		peers     []overlay.PeerConfig
		links     []string
		excluded  map[string]string
		dropped   map[netip.Prefix]string
		idle      []string
		checkLink *tunnel.Peer
	}{
		{
			name: "online peer gets routes and a link",
			in: func() desiredInput {
				in := base()
				in.Records = []discovery.Record{rec(a, true)}
				return in
			},
			peers:     []overlay.PeerConfig{peerA},
			links:     []string{"a"},
			checkLink: &linkA,
		},
		{
			name: "offline peer is routed but gets no link",
			in: func() desiredInput {
				in := base()
				in.Records = []discovery.Record{rec(a, false)}
				return in
			},
			peers: []overlay.PeerConfig{peerA},
		},
		{
			name: "offline peer keeps a link that is up",
			in: func() desiredInput {
				in := base()
				in.Records = []discovery.Record{rec(a, false)}
				in.Connected = map[string]bool{"a": true}
				return in
			},
			peers: []overlay.PeerConfig{peerA},
			links: []string{"a"},
		},
		{
			name: "self, left and certificate-less records are ignored",
			in: func() desiredInput {
				in := base()
				left := rec(b, true)
				left.Left = true
				in.Records = []discovery.Record{rec(self, true), left, {Name: "ghost"}, rec(a, true)}
				return in
			},
			peers: []overlay.PeerConfig{peerA},
			links: []string{"a"},
		},
		{
			name: "revoked, expired and not yet valid peers are excluded",
			in: func() desiredInput {
				in := base()
				in.Records = []discovery.Record{rec(a, true), rec(b2, true)}
				serial := b2.cert.Cert.SerialNumber
				in.Revoked = func(s *big.Int) bool { return s.Cmp(serial) == 0 }
				return in
			},
			peers:    []overlay.PeerConfig{peerA},
			links:    []string{"a"},
			excluded: map[string]string{"b2": excludeRevoked},
		},
		{
			name: "expired",
			in: func() desiredInput {
				in := base()
				in.Records = []discovery.Record{rec(a, true)}
				in.Now = now.Add(48 * time.Hour)
				return in
			},
			excluded: map[string]string{"a": excludeExpired},
		},
		{
			name: "not yet valid",
			in: func() desiredInput {
				in := base()
				in.Records = []discovery.Record{rec(a, true)}
				in.Now = now.Add(-time.Hour)
				return in
			},
			excluded: map[string]string{"a": excludeNotYetValid},
		},
		{
			name: "subnet routes only where the certificate allows and routes.accept accepts",
			in: func() desiredInput {
				in := base()
				in.Accept = pfx("10.0.0.0/8")
				in.Records = []discovery.Record{
					// b advertises its allowed subnet and one it may not route.
					rec(b, true, "10.2.0.0/16", "10.7.0.0/16"),
					// c advertises its subnet (accepted), the mesh prefix and
					// 10.9.0.0/24, which d also claims.
					rec(c, false, "10.3.1.0/24", "100.64.0.0/10", "10.9.0.0/24"),
					rec(dn, true, "10.9.0.0/24"),
				}
				return in
			},
			peers: []overlay.PeerConfig{
				{Name: "b", AllowedPrefixes: pfx("100.64.0.3/32", "10.2.0.0/16"), Routes: pfx("100.64.0.3/32", "10.2.0.0/16")},
				{Name: "c", AllowedPrefixes: pfx("100.64.0.4/32", "10.3.1.0/24"), Routes: pfx("100.64.0.4/32", "10.3.1.0/24")},
				// d is online, so it wins 10.9.0.0/24 over offline c.
				{Name: "d", AllowedPrefixes: pfx("100.64.0.5/32", "10.9.0.0/24"), Routes: pfx("100.64.0.5/32", "10.9.0.0/24")},
			},
			links: []string{"b", "d"},
			dropped: map[netip.Prefix]string{
				netip.MustParsePrefix("10.7.0.0/16"):   routeNotAllowed,
				netip.MustParsePrefix("100.64.0.0/10"): routeNotAccept,
				netip.MustParsePrefix("10.9.0.0/24"):   routeClaimed,
			},
		},
		{
			name: "routes.accept empty installs no subnet; local subnets win",
			in: func() desiredInput {
				in := base()
				in.Advertise = pfx("10.2.0.0/24")
				in.Forward = true
				in.Records = []discovery.Record{rec(b, true, "10.2.0.0/16")}
				return in
			},
			peers:   []overlay.PeerConfig{{Name: "b", AllowedPrefixes: pfx("100.64.0.3/32"), Routes: pfx("100.64.0.3/32")}},
			links:   []string{"b"},
			dropped: map[netip.Prefix]string{netip.MustParsePrefix("10.2.0.0/16"): routeNotAccept},
		},
		{
			name: "a peer subnet overlapping our own advertised subnet is not routed",
			in: func() desiredInput {
				in := base()
				in.Accept = pfx("0.0.0.0/0")
				in.Advertise = pfx("10.2.0.0/24")
				in.Records = []discovery.Record{rec(b, true, "10.2.0.0/16"), rec(c, true, "100.64.0.0/10")}
				return in
			},
			peers: []overlay.PeerConfig{
				{Name: "b", AllowedPrefixes: pfx("100.64.0.3/32"), Routes: pfx("100.64.0.3/32")},
				{Name: "c", AllowedPrefixes: pfx("100.64.0.4/32"), Routes: pfx("100.64.0.4/32")},
			},
			links: []string{"b", "c"},
			dropped: map[netip.Prefix]string{
				netip.MustParsePrefix("10.2.0.0/16"):   routeLocal,
				netip.MustParsePrefix("100.64.0.0/10"): routeMesh,
			},
		},
		{
			name: "address conflicts",
			in: func() desiredInput {
				in := base()
				in.Records = []discovery.Record{rec(twin, true), rec(a, true), rec(clash, true)}
				return in
			},
			peers:    []overlay.PeerConfig{peerA},
			links:    []string{"a"},
			excluded: map[string]string{"twin": excludeSelfAddress, "zz": excludeAddrConflict},
		},
		{
			name: "a later certificate for a live address does not take it, online or not, whatever its name",
			in: func() desiredInput {
				in := base()
				in.Records = []discovery.Record{rec(hijack, true), rec(a, false)}
				return in
			},
			peers:    []overlay.PeerConfig{peerA},
			excluded: map[string]string{"0hijack": excludeAddrConflict},
		},
		{
			name: "groups come from the certificate the link authenticated, not the registry's copy",
			in: func() desiredInput {
				in := base()
				in.Records = []discovery.Record{rec(a, true)}
				in.Connected = map[string]bool{"a": true}
				in.Handshake = map[string]*pki.NodeCert{"a": shownAs(a, []string{"ops"})}
				return in
			},
			peers:     []overlay.PeerConfig{{Name: "a", Groups: []string{"ops"}, AllowedPrefixes: pfx("100.64.0.2/32"), Routes: pfx("100.64.0.2/32")}},
			links:     []string{"a"},
			checkLink: &linkA,
		},
		{
			name: "subnets: routed and accepted only where the authenticated certificate allows; the link stays",
			in: func() desiredInput {
				in := base()
				in.Accept = pfx("10.0.0.0/8")
				// The registry's copy allows 10.2.0.0/16; the link
				// authenticated a certificate without it (and with a subnet
				// the registry's copy lacks, which no route gets either).
				in.Records = []discovery.Record{rec(b, true, "10.2.0.0/16", "10.7.0.0/16")}
				in.Handshake = map[string]*pki.NodeCert{"b": shownAs(b, []string{"ops"}, "10.7.0.0/16")}
				return in
			},
			peers: []overlay.PeerConfig{{Name: "b", Groups: []string{"ops"}, AllowedPrefixes: pfx("100.64.0.3/32"), Routes: pfx("100.64.0.3/32")}},
			links: []string{"b"},
			dropped: map[netip.Prefix]string{
				netip.MustParsePrefix("10.2.0.0/16"): routeNotShown,
				netip.MustParsePrefix("10.7.0.0/16"): routeNotAllowed,
			},
			checkLink: &linkB,
		},
		{
			name: "subnets: without an authenticated certificate yet, the registry's copy routes (no packet flows before the handshake)",
			in: func() desiredInput {
				in := base()
				in.Accept = pfx("10.0.0.0/8")
				in.Records = []discovery.Record{rec(b, true, "10.2.0.0/16")}
				return in
			},
			peers:     []overlay.PeerConfig{{Name: "b", AllowedPrefixes: pfx("100.64.0.3/32", "10.2.0.0/16"), Routes: pfx("100.64.0.3/32", "10.2.0.0/16")}},
			links:     []string{"b"},
			checkLink: &linkB,
		},
		{
			name: "lazy: only wanted peers or existing links",
			in: func() desiredInput {
				in := base()
				in.Lazy = true
				in.Wanted = map[string]bool{"b": true}
				in.HaveLink = map[string]bool{"d": true}
				in.Records = []discovery.Record{rec(a, true), rec(b, true), rec(dn, true)}
				return in
			},
			peers: []overlay.PeerConfig{
				peerA,
				{Name: "b", AllowedPrefixes: pfx("100.64.0.3/32"), Routes: pfx("100.64.0.3/32")},
				{Name: "d", AllowedPrefixes: pfx("100.64.0.5/32"), Routes: pfx("100.64.0.5/32")},
			},
			links: []string{"b", "d"},
			idle:  []string{"a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in()
			got := computeDesired(in)
			if !slices.Equal(got.Overlay.Addresses, in.Self.Addrs) {
				t.Errorf("addresses %v, want %v", got.Overlay.Addresses, in.Self.Addrs)
			}
			if got.Overlay.Forwarding != in.Forward || !slices.Equal(got.Overlay.LocalSubnets, masked(in.Advertise)) {
				t.Errorf("forwarding %v %v, want %v %v", got.Overlay.Forwarding, got.Overlay.LocalSubnets, in.Forward, in.Advertise)
			}
			if len(got.Overlay.Firewall.Outbound) != len(fw.Outbound) {
				t.Errorf("firewall not passed through: %+v", got.Overlay.Firewall)
			}
			if len(got.Overlay.Peers) != len(tc.peers) {
				t.Fatalf("overlay peers %+v, want %+v", got.Overlay.Peers, tc.peers)
			}
			for i, want := range tc.peers {
				g := got.Overlay.Peers[i]
				// Anti-spoofing accepts exactly what is routed to the peer
				// (#13): never a subnet routing refused.
				if !slices.Equal(g.AllowedPrefixes, g.Routes) {
					t.Errorf("peer %s accepts sources %v but is routed %v", g.Name, g.AllowedPrefixes, g.Routes)
				}
				if g.Name != want.Name || !slices.Equal(g.AllowedPrefixes, want.AllowedPrefixes) || !slices.Equal(g.Routes, want.Routes) ||
					!slices.Equal(g.Groups, want.Groups) || g.Conn != nil {
					t.Errorf("peer %d = %+v, want %+v", i, g, want)
				}
			}
			var links []string
			for _, l := range got.Links {
				links = append(links, l.Name)
			}
			if !slices.Equal(links, tc.links) {
				t.Errorf("links %v, want %v", links, tc.links)
			}
			if tc.checkLink != nil && !samePeer(got.Links[0], *tc.checkLink) {
				t.Errorf("link peer %+v, want %+v", got.Links[0], *tc.checkLink)
			}
			excluded := map[string]string{}
			var idle []string
			for _, p := range got.Peers {
				if p.Excluded != "" {
					excluded[p.Name] = p.Excluded
				}
				if p.Idle {
					idle = append(idle, p.Name)
				}
			}
			if len(excluded) != len(tc.excluded) {
				t.Errorf("excluded %v, want %v", excluded, tc.excluded)
			}
			for k, v := range tc.excluded {
				if excluded[k] != v {
					t.Errorf("excluded[%s] = %q, want %q", k, excluded[k], v)
				}
			}
			if !slices.Equal(idle, tc.idle) {
				t.Errorf("idle %v, want %v", idle, tc.idle)
			}
			dropped := map[netip.Prefix]string{}
			for _, r := range got.Dropped {
				dropped[r.Prefix] = r.Reason
			}
			if len(dropped) != len(tc.dropped) {
				t.Errorf("dropped %v, want %v", dropped, tc.dropped)
			}
			for k, v := range tc.dropped {
				if dropped[k] != v {
					t.Errorf("dropped[%s] = %q, want %q", k, dropped[k], v)
				}
			}
			// Determinism: the order of the records does not matter.
			rev := in
			rev.Records = slices.Clone(in.Records)
			slices.Reverse(rev.Records)
			again := computeDesired(rev)
			if len(again.Overlay.Peers) != len(got.Overlay.Peers) {
				t.Fatalf("reversed input gives %d peers, want %d", len(again.Overlay.Peers), len(got.Overlay.Peers))
			}
			for i := range got.Overlay.Peers {
				if !slices.Equal(again.Overlay.Peers[i].Routes, got.Overlay.Peers[i].Routes) {
					t.Errorf("reversed input routes %v, want %v", again.Overlay.Peers[i].Routes, got.Overlay.Peers[i].Routes)
				}
			}
		})
	}
}

func samePeer(p, q tunnel.Peer) bool {
	return p.Name == q.Name && p.Addr == q.Addr && p.Fingerprint == q.Fingerprint && slices.Equal(p.Subnets, q.Subnets)
}

// TestDesiredIsValidOverlayConfig applies computed states to a real
// (userspace) overlay: whatever the registry holds, Reconfig accepts it.
func TestDesiredIsValidOverlayConfig(t *testing.T) {
	m := newTestMesh(t)
	b := m.node(t, "b", 3, nodeSpec{subnets: []string{"10.2.0.0/16", "0.0.0.0/0"}})
	c := m.node(t, "c", 4, nodeSpec{subnets: []string{"10.2.0.0/16"}})
	ov, err := overlay.New(overlay.Options{Mode: overlay.ModeUserspace, UserspaceAddresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	recs := []discovery.Record{
		{Name: "b", Cert: b.cert, Routes: pfx("10.2.0.0/16", "0.0.0.0/0"), Presence: discovery.Presence{Online: true}},
		{Name: "c", Cert: c.cert, Routes: pfx("10.2.0.0/16")},
	}
	want := computeDesired(desiredInput{
		Self:     selfInfo{Name: "self", Addrs: pfx("100.64.0.1/10")},
		Firewall: firewallFrom(config.Default().Firewall),
		Accept:   pfx("0.0.0.0/0"),
		Records:  recs,
		Now:      time.Now(),
	})
	if err := ov.Reconfig(want.Overlay); err != nil {
		t.Fatalf("Reconfig(%+v): %v", want.Overlay, err)
	}
	if p, ok := ov.RouteTo(netip.MustParseAddr("10.2.3.4")); !ok || p != "b" {
		t.Errorf("10.2.3.4 routes to %q %v, want b (online peer wins the contested subnet)", p, ok)
	}
	if _, ok := ov.RouteTo(netip.MustParseAddr("8.8.8.8")); ok {
		t.Error("a default route was installed")
	}
}
