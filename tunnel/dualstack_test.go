package tunnel

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshd/meshd/internal/testutil"
)

// uplinkFamilies returns the name of an interface the default candidate
// policy uses that has both an IPv4 and a non-link-local IPv6 address, or
// "" if the host has none.
func uplinkFamilies(t *testing.T) string {
	t.Helper()
	ls, err := SystemLinks()
	if err != nil {
		return ""
	}
	for _, v := range (InterfacePolicy{}).Classify(ls) {
		var v4, v6 bool
		for _, a := range v.Addrs {
			v4 = v4 || a.Is4()
			v6 = v6 || (a.Is6() && !a.IsLinkLocalUnicast())
		}
		if v.Use && v4 && v6 {
			return v.Name
		}
	}
	return ""
}

// TestDualStackLinkPrefersIPv6: two managers bound to :: (both families
// on one port) offer host candidates of both families, connect, and the
// link ends on a direct IPv6 pair (the RTTs are alike on one host).
func TestDualStackLinkPrefersIPv6(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	uplink := uplinkFamilies(t)
	if uplink == "" {
		t.Skip("no uplink interface with an IPv4 and a global or ULA IPv6 address here")
	}
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	dual := func(o *Options) {
		o.ListenAddr = netip.IPv6Unspecified()
		// Both nodes are on this host: the kernel routes their addresses
		// through lo, which the candidate policy never uses.
		o.RouteInterface = func(netip.Addr) (string, error) { return uplink, nil }
	}
	ma := startManager(t, sig, a, dual)
	mb := startManager(t, sig, b, dual)
	if v4, v6, why := ma.Families(); !v4 || !v6 {
		t.Fatalf("Families() = %v, %v (%v), want both", v4, v6, why)
	}
	ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	var atB collector
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	exchange(t, ab, &atB, "dual", 5*time.Second)
	var st Status
	testutil.WaitFor(t, 15*time.Second, "the link on a direct IPv6 pair", func() bool {
		_, _ = ab.WriteBatch([][]byte{packet("keep")}, HeaderRoom)
		st = ab.Status()
		return st.Path == PathDirect && st.Remote.Addr.Addr().Is6() && ba.Status().Remote.Addr.Addr().Is6()
	})
	v4Pairs := 0
	for _, p := range st.Pairs {
		if p.Remote.Addr.Addr().Is4() && p.State == "succeeded" {
			v4Pairs++
		}
	}
	t.Logf("selected %v -> %v; %d IPv4 pairs also succeeded", st.Local, st.Remote, v4Pairs)
	exchange(t, ab, &atB, "v6", 5*time.Second)
}

// TestSrflxConnFamily: on a dual-stack socket the mux gives a
// server-reflexive conn only to a base of the STUN server's family; pion
// asks for one per listen address of every family, and an IPv4 mapping on
// an IPv6 base would be a second candidate for the same mapped address.
func TestSrflxConnFamily(t *testing.T) {
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	mux := &sharedMux{UniversalUDPMuxDefault: ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{UDPConn: uc})}
	defer mux.Close()
	v4 := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 51830}
	v6 := &net.UDPAddr{IP: net.ParseIP("2001:db8::2"), Port: 51830}
	for _, tc := range []struct {
		url  string
		base *net.UDPAddr
		ok   bool
	}{
		{"stun:198.51.100.1:3478", v4, true},
		{"stun:198.51.100.1:3478", v6, false},
		{"stun:[2001:db8::1]:3478", v6, true},
		{"stun:[2001:db8::1]:3478", v4, false},
		{"stun:stun.example.net:3478", v6, true}, // a name: pion resolved it for this family
	} {
		// pion itself then refuses these bases (not the mux's listen
		// addresses); only the family check is this test's.
		c, err := mux.GetConnForURL("ufrag", tc.url, tc.base)
		if errors.Is(err, errSrflxFamily) == tc.ok {
			t.Errorf("GetConnForURL(%s, base %v): %v, want refused for the family: %v", tc.url, tc.base, err, !tc.ok)
		}
		if c != nil {
			_ = c.Close()
		}
	}
}
