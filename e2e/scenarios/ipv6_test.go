//go:build e2e

package scenarios

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// TestIPv6Overlay: the overlay carries IPv6 between kernel-TUN nodes over
// the lab's IPv4 underlay. The mesh CA (meshctl ca init) picked a unique
// local /48 and meshctl cert sign derived each node's IPv6 address from its
// IPv4 one; the TUN device holds both addresses. alice (full cone) and bob
// (port-restricted) reach each other with ping -6 and a TCP transfer whose
// byte count and SHA-256 the sink confirms; a packet to an IPv6 address of
// the mesh that no node holds gets an ICMPv6 unreachable at once.
func TestIPv6Overlay(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	ca, err := pki.LoadCA(m.caDir)
	if err != nil {
		t.Fatal(err)
	}
	prefix6 := ca.Prefix6()
	if pki.ValidateMeshPrefix6(prefix6) != nil {
		t.Fatalf("meshctl ca init made no IPv6 prefix (%v)", prefix6)
	}
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true})
	alice := m.addNode(l.AddNode(t, "alice", lab.NATFullCone, lab.HostOptions{}), nodeOpts{join: []*node{coord}})
	bob := m.addNode(l.AddNode(t, "bob", lab.NATPortRestricted, lab.HostOptions{}), nodeOpts{join: []*node{coord}})
	all := []*node{coord, alice, bob}
	for _, n := range all {
		n.start()
	}
	addr6 := map[string]netip.Addr{}
	for _, n := range all {
		st := n.waitSession(t, sessionTimeout)
		want, err := pki.DeriveAddr6(prefix6, netip.PrefixFrom(n.addr, 10))
		if err != nil {
			t.Fatal(err)
		}
		if st.Address6 != want.Addr() {
			t.Fatalf("%s: status address6 %v, want %v (derived from %v in %v)", n.name, st.Address6, want.Addr(), n.addr, prefix6)
		}
		addr6[n.name] = st.Address6
		out, _ := n.host.Run(context.Background(), "ip", "-6", "addr", "show", "dev", "meshd0")
		if !strings.Contains(out, want.String()) {
			t.Fatalf("%s: meshd0 lacks %v:\n%s", n.name, want, out)
		}
	}
	p := mustPeer(t, alice, "bob", isOnline, linkTimeout, "up")
	if p.Address6 != addr6["bob"] {
		t.Errorf("alice: peers --json gives bob address6 %v, want %v", p.Address6, addr6["bob"])
	}
	mustPeer(t, bob, "alice", isOnline, linkTimeout, "up")

	ctx := context.Background()
	// ping -6 through the overlay.
	out, err := alice.host.Run(ctx, "ping", "-6", "-n", "-q", "-c", "5", "-i", "0.2", "-W", "1", addr6["bob"].String())
	m6 := pingStats.FindStringSubmatch(out)
	if err != nil || m6 == nil || m6[1] != m6[2] {
		t.Fatalf("alice: ping -6 %v: %v\n%s", addr6["bob"], err, out)
	}
	t.Logf("alice → bob ping -6 %v: %s of %s replies", addr6["bob"], m6[2], m6[1])
	route, _ := alice.host.Run(ctx, "ip", "-6", "route", "get", addr6["bob"].String())
	if !containsDev(route, "meshd0") {
		t.Errorf("alice routes %v outside the overlay: %s", addr6["bob"], route)
	}

	// A TCP transfer: bob's sink listens on both families.
	sink, err := bob.host.StartWith(lab.ProcOptions{Label: "sink6"}, m.tool, "sink", "-listen", fmt.Sprintf("[::]:%d", sinkPort))
	if err != nil {
		t.Fatal(err)
	}
	sink.WaitOutput(t, 10*time.Second, "sink ready", func(out, _ string) bool { return strings.HasPrefix(out, "ready") })
	const size = 4 << 20
	r, err := send(ctx, alice.host.Namespace, m.tool, addr6["bob"], size, 0, 30*time.Second)
	if err != nil {
		t.Fatalf("alice → bob TCP over IPv6: %v", err)
	}
	if r.Bytes != size || r.Acked != size {
		t.Fatalf("alice → bob TCP over IPv6: sent %d, acked %d, want %d", r.Bytes, r.Acked, size)
	}
	t.Logf("alice → bob: %d bytes over TCP/IPv6 intact (byte count and SHA-256 confirmed by the sink) in %v", r.Bytes, r.Duration.Round(time.Millisecond))

	// No node holds PREFIX::ffff:fffe: meshd answers with ICMPv6
	// "address unreachable" rather than letting ping time out.
	nobody := prefix6.Addr().As16()
	nobody[12], nobody[13], nobody[14], nobody[15] = 0, 0, 0xff, 0xfe
	dst := netip.AddrFrom16(nobody)
	out, _ = alice.host.Run(ctx, "ping", "-6", "-n", "-c", "1", "-W", "2", dst.String())
	if !strings.Contains(strings.ToLower(out), "unreachable") {
		t.Errorf("alice: ping -6 %v (nobody's address) got no ICMPv6 unreachable:\n%s", dst, out)
	}

	// meshctl ping takes the IPv6 address too.
	out, err = alice.ctl(ctx, "ping", "-c", "1", addr6["bob"].String())
	if err != nil || !strings.Contains(out, "pong from bob ("+addr6["bob"].String()+")") {
		t.Errorf("alice: meshctl ping %v: %v\n%s", addr6["bob"], err, out)
	}
	for _, n := range all {
		n.alive(t)
	}
}
