//go:build e2e

package scenarios

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// vpnPort is the UDP port of the hosts' other VPN (labtool vpn).
const vpnPort = 4789

// TestRealHost runs meshd on two hosts that look like a sysadmin's, not
// the clean lab host: besides the underlay each runs another VPN (labtool
// vpn: a TUN whose packets travel in UDP between the two, as wireguard-go
// or Nebula would carry them) and a Docker-like bridge (docker0 with
// 172.17.0.1/16 on both, as Docker gives every host, and a veth in it).
//
// meshd must keep its link on the underlay: netcheck says which
// interfaces it uses and why it skips the others; over 60 s of traffic the
// link's path does not change once; and not one meshd datagram leaves
// through an interface other than the underlay (an nft counter on each
// host, the negative assertion). With ice.include_interfaces = ["*"] (the
// old default: every interface) the same hosts are measured too, for
// docs/performance.md; that part is recorded, not asserted.
func TestRealHost(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true})
	opts := nodeOpts{join: []*node{coord}}
	a := m.addNode(l.AddHost(t, "alpha", lab.HostOptions{}), opts)
	b := m.addNode(l.AddHost(t, "beta", lab.HostOptions{}), opts)
	ctx := context.Background()

	vpnAddr := map[*node]netip.Prefix{a: netip.MustParsePrefix("10.77.0.1/24"), b: netip.MustParsePrefix("10.77.0.2/24")}
	for _, pair := range [][2]*node{{a, b}, {b, a}} {
		n, other := pair[0], pair[1]
		vpn, err := n.host.StartWith(lab.ProcOptions{Label: "vpn"}, m.tool, "vpn", "-dev", "vpn0",
			"-listen", netip.AddrPortFrom(n.host.IP(), vpnPort).String(),
			"-to", netip.AddrPortFrom(other.host.IP(), vpnPort).String())
		if err != nil {
			t.Fatal(err)
		}
		vpn.WaitOutput(t, 10*time.Second, "the other VPN's TUN", func(out, _ string) bool { return strings.HasPrefix(out, "ready") })
		for _, argv := range [][]string{
			{"ip", "addr", "add", vpnAddr[n].String(), "dev", "vpn0"},
			{"ip", "link", "set", "vpn0", "up"},
			{"ip", "link", "add", "docker0", "type", "bridge"},
			{"ip", "addr", "add", "172.17.0.1/16", "dev", "docker0"},
			{"ip", "link", "set", "docker0", "up"},
			{"ip", "link", "add", "vethd0", "type", "veth", "peer", "name", "vethd1"},
			{"ip", "link", "set", "vethd0", "master", "docker0"},
			{"ip", "link", "set", "vethd0", "up"},
			{"ip", "link", "set", "vethd1", "up"},
			// Counts meshd's datagrams (its ICE port) that leave through
			// anything but the underlay.
			{"nft", "add", "table", "inet", "mdcount"},
			{"nft", "add", "chain", "inet", "mdcount", "out", "{ type filter hook output priority 0 ; policy accept ; }"},
			{"nft", "add", "rule", "inet", "mdcount", "out", "oifname", "!=", "eth0", "udp", "sport", strconv.Itoa(n.host.Port()), "counter"},
		} {
			if out, err := n.host.Run(ctx, argv[0], argv[1:]...); err != nil {
				t.Fatalf("%s: %s: %v\n%s", n.name, strings.Join(argv, " "), err, out)
			}
		}
	}
	// The other VPN really carries traffic between the hosts: a candidate
	// on it would work, which is what made links flap before.
	if sent, recv, out, err := ping(ctx, a.host.Namespace, vpnAddr[b].Addr(), 3); err != nil || recv == 0 {
		t.Fatalf("the other VPN does not carry pings (%d sent, %d received, %v):\n%s", sent, recv, err, out)
	}

	for _, n := range []*node{coord, a, b} {
		n.start()
	}
	for _, n := range []*node{coord, a, b} {
		n.waitSession(t, sessionTimeout)
	}
	mustPeer(t, a, "beta", isDirect, linkTimeout, "direct over the underlay")

	// netcheck names what is used and what is skipped, and why.
	var nc control.Netcheck
	if err := a.ctlJSON(ctx, &nc, "netcheck"); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	for _, ifc := range nc.Interfaces {
		t.Logf("alpha: netcheck: %s used=%v: %s", ifc.Name, ifc.Used, ifc.Reason)
		used[ifc.Name] = ifc.Used
	}
	for name, want := range map[string]bool{"eth0": true, "vpn0": false, "docker0": false, "vethd0": false, "vethd1": false, "lo": false} {
		if got, ok := used[name]; !ok || got != want {
			t.Errorf("alpha: netcheck lists %s used=%v (listed %v), want used=%v", name, got, ok, want)
		}
	}
	text, err := a.ctl(ctx, "netcheck")
	if err != nil || !strings.Contains(text, "vpn0 skipped: tunnel device") || !strings.Contains(text, "eth0 used: carries the default route") {
		t.Errorf("alpha: meshctl netcheck does not say which interfaces it uses and why (%v):\n%s", err, text)
	}

	b.startSink(t)
	stable := measureHost(t, m, a, b, true)
	for _, n := range []*node{a, b} {
		if c := nftCount(t, n); c != 0 {
			t.Errorf("%s: %d meshd datagrams left through an interface other than the underlay", n.name, c)
		}
	}

	// The same hosts with every interface offering candidates, for the
	// record (docs/performance.md).
	for _, n := range []*node{a, b} {
		if err := n.stop(); err != nil {
			t.Logf("%s: meshd exit: %v", n.name, err)
		}
		n.opts.ice = []string{`include_interfaces = ["*"]`}
		n.writeConfig()
		n.start()
		n.waitSession(t, sessionTimeout)
	}
	if _, _, ok := a.waitPeer(linkTimeout, "beta", isOnline); !ok {
		t.Logf("every interface: alpha → beta never came up")
		return
	}
	all := measureHost(t, m, a, b, false)
	t.Logf("two-tunnel host, single TCP stream alpha → beta: default interfaces %s; every interface %s",
		stable, all)
}

var nftPacketsRE = regexp.MustCompile(`counter packets (\d+)`)

// nftCount reads the mdcount counter of n's host.
func nftCount(t *testing.T, n *node) int {
	t.Helper()
	out, err := n.host.Run(context.Background(), "nft", "list", "chain", "inet", "mdcount", "out")
	if err != nil {
		t.Fatalf("%s: nft list: %v\n%s", n.name, err, out)
	}
	mm := nftPacketsRE.FindStringSubmatch(out)
	if mm == nil {
		t.Fatalf("%s: no counter in:\n%s", n.name, out)
	}
	c, _ := strconv.Atoi(mm[1])
	return c
}

// measureHost sends a paced stream for 60 s and then three unpaced
// 64 MB streams from a to b, and returns the unpaced throughputs. With
// steady set it fails t if the link's selected pair changed at all or the
// path left b's underlay address; otherwise it only logs what happened.
func measureHost(t *testing.T, m *mesh, a, b *node, steady bool) string {
	t.Helper()
	ctx := context.Background()
	before, _, err := a.peer(ctx, "beta")
	if err != nil {
		t.Fatal(err)
	}
	beforeB, _, _ := b.peer(ctx, "alpha")
	// 60 s of traffic: 1 MB/s, paced, as a busy link between two servers.
	const size, rate = 60_000_000, 1_000_000
	if _, err := send(ctx, a.host.Namespace, m.tool, b.addr, size, rate, 2*time.Minute); err != nil {
		if steady {
			t.Errorf("paced transfer alpha → beta: %v", err)
		} else {
			t.Logf("every interface: paced transfer alpha → beta: %v", err)
		}
	}
	var figures []string
	for i := 0; i < 3; i++ {
		r, err := send(ctx, a.host.Namespace, m.tool, b.addr, 64<<20, 0, 2*time.Minute)
		if err != nil {
			figures = append(figures, "failed")
			if steady {
				t.Errorf("transfer alpha → beta: %v", err)
			}
			continue
		}
		figures = append(figures, fmt.Sprintf("%.0f", float64(r.Acked)*8/r.Duration.Seconds()/1e6))
	}
	after, _, err := a.peer(ctx, "beta")
	if err != nil {
		t.Fatal(err)
	}
	afterB, _, _ := b.peer(ctx, "alpha")
	changes := after.PathChanges - before.PathChanges
	changesB := afterB.PathChanges - beforeB.PathChanges
	summary := fmt.Sprintf("%s Mbit/s, %d+%d path changes, endpoint %v", strings.Join(figures, " / "), changes, changesB, after.Endpoint)
	t.Logf("alpha → beta (%s interfaces): %s", map[bool]string{true: "default", false: "every"}[steady], summary)
	if steady {
		if changes != 0 || changesB != 0 {
			t.Errorf("the link changed its path %d (alpha) and %d (beta) times under traffic, want 0: %s", changes, changesB, describePeer(after))
		}
		if after.Endpoint.Addr() != b.host.IP() || !after.Online {
			t.Errorf("alpha reaches beta at %v, want beta's underlay %v: %s", after.Endpoint, b.host.IP(), describePeer(after))
		}
	}
	return summary
}

// TestNetcheckOneCoordinator: the most common mesh has one coordinator.
// Behind every NAT the lab builds, netcheck must still name the mapping
// behaviour (the coordinator's STUN socket and its session port are two
// destinations) and, where the NAT keeps one mapping, the public endpoint
// of meshd's own ICE port: the one a sysadmin opens a firewall for.
func TestNetcheckOneCoordinator(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true})
	kinds := []lab.NATKind{lab.NATNone, lab.NATFirewall, lab.NATFullCone, lab.NATAddressRestricted,
		lab.NATPortRestricted, lab.NATPortRestrictedMasq, lab.NATSymmetric, lab.NATUDPBlocked}
	nodes := map[lab.NATKind]*node{}
	for i, k := range kinds {
		nodes[k] = m.addNode(l.AddNode(t, fmt.Sprintf("n%d", i), k, lab.HostOptions{}), nodeOpts{join: []*node{coord}})
	}
	coord.start()
	coord.waitSession(t, sessionTimeout)
	for _, k := range kinds {
		nodes[k].start()
	}
	for _, k := range kinds {
		nodes[k].waitSession(t, sessionTimeout)
	}
	ctx := context.Background()
	for _, k := range kinds {
		n := nodes[k]
		want := map[lab.NATKind]control.NATBehavior{
			lab.NATNone: control.NATNone, lab.NATFirewall: control.NATNone,
			lab.NATSymmetric: control.NATAddressPortDependent, lab.NATUDPBlocked: control.NATUDPBlocked,
		}[k]
		if want == "" {
			want = control.NATEndpointIndependent
		}
		// The first netcheck may run before the session delivered the
		// coordinator's STUN server: poll until a run names a behaviour.
		var nc control.Netcheck
		took, last, ok := waitUntil(linkTimeout, 500*time.Millisecond, func() (bool, string) {
			if err := n.ctlJSON(ctx, &nc, "netcheck"); err != nil {
				return false, err.Error()
			}
			if k == lab.NATPortRestrictedMasq && nc.NAT == control.NATAddressPortDependent && distinctMappings(nc) > 1 {
				// Plain MASQUERADE keeps the source port only while it is
				// free on the router (LAB.md); when it did not, the mapping
				// did depend on the destination, and netcheck says so.
				want = nc.NAT
			}
			return nc.NAT == want, fmt.Sprintf("NAT %s, %d STUN probes", nc.NAT, len(nc.STUN))
		})
		for _, p := range nc.STUN {
			t.Logf("%s (%s): %s -> %v %s", n.name, k, p.Server, p.Reflexive, p.Error)
		}
		if !ok {
			t.Errorf("%s behind %s: netcheck says %s, want %s", n.name, k, last, want)
			continue
		}
		t.Logf("%s behind %s: NAT %s after %v: %s", n.name, k, nc.NAT, took.Round(time.Millisecond), nc.Verdict)
		if want != control.NATEndpointIndependent && want != control.NATNone {
			if k == lab.NATPortRestrictedMasq {
				out, err := n.host.Site().Router().Run(ctx, "conntrack", "-L", "-p", "udp")
				t.Logf("%s: MASQUERADE mapped the ICE port per destination this run (%v):\n%s", n.name, err, out)
			}
			continue
		}
		// One mapping for every destination: it is meshd's own port,
		// public (static maps and MASQUERADE keep the port).
		wantEP := netip.AddrPortFrom(n.host.PublicIP(), uint16(n.host.Port()))
		for _, p := range nc.STUN {
			if p.Error == "" && p.Reflexive != wantEP {
				t.Errorf("%s behind %s: %s saw %v, want meshd's own port %v", n.name, k, p.Server, p.Reflexive, wantEP)
			}
		}
		st, err := n.status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.PublicEndpoints) == 0 || st.PublicEndpoints[0] != wantEP {
			t.Errorf("%s behind %s: status lists public endpoints %v, want %v first", n.name, k, st.PublicEndpoints, wantEP)
		}
	}
}

// distinctMappings counts the different reflexive addresses of a netcheck.
func distinctMappings(nc control.Netcheck) int {
	seen := map[netip.AddrPort]bool{}
	for _, p := range nc.STUN {
		if p.Error == "" {
			seen[p.Reflexive] = true
		}
	}
	return len(seen)
}

// TestClonedVM: a VM image cloned with its /etc/meshd runs a second host
// with the same certificate and key. The coordinator keeps the established
// session and refuses the clone, which says so in meshctl status; the
// genuine node's session and links lose nothing (0 of 300 pings lost over
// 30 s while the clone keeps trying).
func TestClonedVM(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true})
	opts := nodeOpts{join: []*node{coord}}
	alpha := m.addNode(l.AddHost(t, "alpha", lab.HostOptions{}), opts)
	beta := m.addNode(l.AddHost(t, "beta", lab.HostOptions{}), opts)
	// The clone: alpha's certificate, key and configuration on another host.
	h2 := l.AddHost(t, "alphaclone", lab.HostOptions{})
	dir2, err := h2.StateDir()
	if err != nil {
		t.Fatal(err)
	}
	clone := &node{m: m, name: alpha.name, host: h2, addr: alpha.addr, dir: dir2, opts: alpha.opts,
		cert: alpha.cert, key: alpha.key, cfg: filepath.Join(dir2, "meshd.toml"), sock: filepath.Join(dir2, "meshd.sock")}
	text := clone.config()
	if err := os.WriteFile(clone.cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, n := range []*node{coord, alpha, beta} {
		n.start()
	}
	for _, n := range []*node{coord, alpha, beta} {
		n.waitSession(t, sessionTimeout)
	}
	mustPeer(t, beta, "alpha", isDirect, linkTimeout, "direct")
	ctx := context.Background()
	before, err := alpha.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	linkBefore, _, _ := beta.peer(ctx, "alpha")

	pinger, err := beta.host.StartWith(lab.ProcOptions{Label: "ping-clone"}, "ping", "-n", "-i", "0.1", "-c", "300", "-W", "1", alpha.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	clone.start()
	// The clone is refused, and says why.
	var st *control.Status
	took, last, ok := waitUntil(linkTimeout, 200*time.Millisecond, func() (bool, string) {
		s, err := clone.status(ctx)
		if err != nil {
			return false, err.Error()
		}
		st = s
		return s.Coordinator.Conflict != "", fmt.Sprintf("%+v", s.Coordinator)
	})
	if !ok {
		t.Fatalf("clone: status never showed the identity conflict: %s", last)
	}
	t.Logf("clone refused %v after its start: %s", took.Round(time.Millisecond), st.Coordinator.Conflict)
	if !strings.Contains(st.Coordinator.Conflict, alpha.host.IP().String()) {
		t.Errorf("clone: conflict %q does not name the host that holds the identity (%v)", st.Coordinator.Conflict, alpha.host.IP())
	}
	text, err = clone.ctl(ctx, "status")
	if err != nil || !strings.Contains(text, "WARNING") || !strings.Contains(text, "identity") {
		t.Errorf("clone: meshctl status does not say it (%v):\n%s", err, text)
	}

	<-pinger.Done()
	out := pinger.Stdout()
	mm := pingStats.FindStringSubmatch(out)
	if mm == nil {
		t.Fatalf("no ping statistics:\n%s", tailLines(out, 5))
	}
	sent, _ := strconv.Atoi(mm[1])
	recv, _ := strconv.Atoi(mm[2])
	t.Logf("beta → alpha while the clone ran: %d of %d pings answered", recv, sent)
	if sent != 300 || recv != sent {
		t.Errorf("beta → alpha lost %d of %d pings while the clone ran, want 0", sent-recv, sent)
	}
	after, err := alpha.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Coordinator.State != control.SessionConnected || !after.Coordinator.Since.Equal(before.Coordinator.Since) || after.Coordinator.Conflict != "" {
		t.Errorf("alpha's session changed while the clone ran: before %+v, after %+v", before.Coordinator, after.Coordinator)
	}
	linkAfter, _, _ := beta.peer(ctx, "alpha")
	if !linkAfter.Online || !linkAfter.Since.Equal(linkBefore.Since) {
		t.Errorf("beta's link to alpha was re-established while the clone ran: before %s since %v, after %s since %v",
			describePeer(linkBefore), linkBefore.Since, describePeer(linkAfter), linkAfter.Since)
	}
	// Refusals are logged once on each side (at warn/error), not once per
	// attempt; the repeats go to debug.
	if n := strings.Count(coord.stderr(), "another host holds this node's session"); n < 1 || n > 2 {
		t.Errorf("coordinator logged the refusal %d times, want once", n)
	}
	if p, _ := clone.process(); p != nil {
		if n := strings.Count(p.Stderr(), "another host is using this node's identity"); n < 1 || n > 2 {
			t.Errorf("clone logged the refusal %d times, want once", n)
		}
	}
}
