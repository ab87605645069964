package tunnel

import (
	"net/netip"
	"testing"
	"time"

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
