package daemon

import (
	"net/netip"
	"testing"
)

// TestNameTable: the names are this node and the peers of the view that are
// not excluded; a revoked (or otherwise excluded) peer has no name.
func TestNameTable(t *testing.T) {
	d := &Daemon{self: selfInfo{Name: "a", Addrs: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/10"), netip.MustParsePrefix("fd7a:6d65:7368::1/48")}}}
	peers := []peerPlan{
		{Name: "b", Addr: netip.MustParseAddr("100.64.0.2"), Addr6: netip.MustParseAddr("fd7a:6d65:7368::2")},
		{Name: "c", Addr: netip.MustParseAddr("100.64.0.3"), Excluded: excludeRevoked},
		{Name: "d", Addr: netip.MustParseAddr("100.64.0.4"), Excluded: excludeExpired},
	}
	tb := d.nameTable("home.internal", peers)
	for name, want := range map[string]string{"a.home.internal": "100.64.0.1", "b.home.internal": "100.64.0.2", "fd7a:6d65:7368::2": "b"} {
		h, ok := tb.Lookup(name)
		if !ok || (h.Addrs[0].String() != want && h.Name != want) {
			t.Errorf("Lookup(%s) = %v, %v", name, h, ok)
		}
	}
	for _, name := range []string{"c", "d", "100.64.0.3"} {
		if h, ok := tb.Lookup(name); ok {
			t.Errorf("excluded peer %s has a name: %v", name, h)
		}
	}
}

// TestPeerArg: a peer argument may be the node's name in the mesh domain.
func TestPeerArg(t *testing.T) {
	d := &Daemon{names: &names{domain: "mesh.internal"}}
	for in, want := range map[string]string{
		"nas": "nas", "nas.mesh.internal": "nas", "NAS.Mesh.Internal.": "nas", "web.eu.mesh.internal": "web.eu",
		"100.64.0.7": "100.64.0.7", "nas.other.internal": "nas.other.internal", ".mesh.internal": ".mesh.internal",
	} {
		if got := d.peerArg(in); got != want {
			t.Errorf("peerArg(%q) = %q, want %q", in, got, want)
		}
	}
}
