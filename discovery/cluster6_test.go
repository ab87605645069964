package discovery

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// onIPv6Loopback puts a test coordinator's session listener and gossip
// (memberlist's own transport, bound as the daemon binds it) on ::1.
func onIPv6Loopback(t testing.TB) coordTweak {
	return func(o *CoordinatorOptions) {
		_ = o.GossipTransport.Shutdown() // the IPv4 fault transport is not used
		o.GossipTransport = nil
		o.ListenAddr = "[::1]:0"
		o.GossipAddr = "[::1]:0"
	}
}

// TestClusterOverIPv6: coordinators bound to IPv6 addresses gossip with
// each other, advertise IPv6 gossip addresses, and nodes that join them by
// IPv6 literals see each other and signal across them.
func TestClusterOverIPv6(t *testing.T) {
	testutil.LeakCheck(t)
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		_ = c.Close()
	}
	m := newTestMesh(t)
	coords := startCluster(t, m, 2, onIPv6Loopback(t))
	for _, c := range coords {
		for _, a := range []string{c.GossipAddr(), c.addr()} {
			if ap, err := netip.ParseAddrPort(a); err != nil || ap.Addr() != netip.IPv6Loopback() {
				t.Fatalf("%s: address %q, want one on ::1", c.Name(), a)
			}
		}
	}
	a := m.startClient(t, m.creds(t, "node-a", 1), prefer(coords, 0))
	b := m.startClient(t, m.creds(t, "node-b", 2), prefer(coords, 1))
	names := []string{"node-a", "node-b"}
	testutil.WaitFor(t, 10*time.Second, "both nodes see each other online", func() bool {
		return seesAll(a.Client, names, true) && seesAll(b.Client, names, true)
	})
	if st := b.Status(); st.Coordinator != "coord-2" {
		t.Fatalf("node-b on %q, want coord-2", st.Coordinator)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.SendSignal(ctx, "node-b", []byte("over v6")); err != nil {
		t.Fatalf("cross-coordinator signal: %v", err)
	}
	expectSignal(t, b, "node-a", "over v6")
}

// TestWildcardGossipAdvertise: gossip bound to "::" advertises a
// reachable address of the host (memberlist would advertise "::"): a
// private IPv4 address as memberlist picks for 0.0.0.0, else a global IPv4,
// else a global IPv6 one; never loopback, link-local or the overlay's.
func TestWildcardGossipAdvertise(t *testing.T) {
	ifs := func(cidrs ...string) []net.Addr {
		var out []net.Addr
		for _, c := range cidrs {
			ip, n, err := net.ParseCIDR(c)
			if err != nil {
				t.Fatal(err)
			}
			n.IP = ip
			out = append(out, n)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		addrs []net.Addr
		want  string // "" = error
	}{
		{"private IPv4 first", ifs("127.0.0.1/8", "2001:db8::7/64", "203.0.113.7/24", "192.168.1.7/24"), "192.168.1.7"},
		{"global IPv4 before IPv6", ifs("::1/128", "2001:db8::7/64", "203.0.113.7/24"), "203.0.113.7"},
		{"IPv6-only host", ifs("127.0.0.1/8", "::1/128", "fe80::1/64", "2001:db8::7/64"), "2001:db8::7"},
		{"overlay addresses skipped", ifs("100.64.0.7/10", "fd7a:115c:a1e0::7/48", "2001:db8::7/64"), "2001:db8::7"},
		{"nothing reachable", ifs("127.0.0.1/8", "::1/128", "fe80::1/64", "100.64.0.7/10"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wildcardAdvertise(tc.addrs)
			switch {
			case tc.want == "" && !errors.Is(err, errNoGossipAdvertise):
				t.Fatalf("got %v, %v; want errNoGossipAdvertise", got, err)
			case tc.want != "" && (err != nil || got.String() != tc.want):
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}
