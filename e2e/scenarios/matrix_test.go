//go:build e2e

package scenarios

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// natClass is how a matrix node sees the internet, in the terms of LAB.md
// §3's expected-outcome table (a double NAT or a LAN host is classified by
// the behaviour its site shows).
type natClass int

const (
	classOpen natClass = iota
	classFirewall
	classFullCone
	classAddrRestricted
	classPortRestricted
	classSymmetric
	classUDPBlocked
)

// ipv6Class is what a matrix node has of IPv6 (issue 16's site kinds).
type ipv6Class int

const (
	// v6None: no IPv6 on the underlay (every IPv4-only kind).
	v6None ipv6Class = iota
	// v6Open: a global IPv6 address, nothing filtering it (the public
	// dual-stack host, the IPv6-only VPS).
	v6Open
	// v6Firewall: a global IPv6 address behind the home router's stateful
	// firewall (nothing unsolicited comes in).
	v6Firewall
)

// Address families of a path, as the matrix records them.
const (
	famIPv4 = "ipv4"
	famIPv6 = "ipv6"
)

// expectation is a cell of the expected outcome matrix.
type expectation struct {
	path       control.Path
	determined bool // false: the "*" cells, recorded but not asserted
	// family, if set, is the underlay family the (direct) path must use:
	// where it is the only one with a direct path.
	family string
	why    string
}

// expectedTable is LAB.md §3 (upper triangle, indexed by natClass up to
// classSymmetric): D direct, R relay, * depends on check timing.
var expectedTable = [6][6]string{
	classOpen:           {"D", "D", "D", "D", "D", "D"},
	classFirewall:       {"", "D", "D", "D", "D", "R*"},
	classFullCone:       {"", "", "D", "D", "D", "D"},
	classAddrRestricted: {"", "", "", "D", "D", "D*"},
	classPortRestricted: {"", "", "", "", "D", "R"},
	classSymmetric:      {"", "", "", "", "", "R"},
}

// expect returns the outcome LAB.md §3 predicts for two matrix nodes.
func expect(a, b *matrixNode) expectation {
	switch {
	case a.host.Site() != nil && a.host.Site() == b.host.Site():
		return expectation{path: control.PathDirect, determined: true, why: "same LAN: host candidates"}
	case a.class == classUDPBlocked || b.class == classUDPBlocked:
		return expectation{path: control.PathRelay, determined: true, why: "no UDP at all: TURN over TCP"}
	case (!a.host.HasIPv4() && b.ipv6 == v6None) || (!b.host.HasIPv4() && a.ipv6 == v6None):
		return expectation{path: control.PathRelay, determined: true, why: "no address family in common: IPv6-only meets IPv4-only through the relay"}
	case a.ipv6 != v6None && b.ipv6 != v6None:
		// Global IPv6 on both sides: no NAT, at most a stateful firewall,
		// which the simultaneous connectivity checks open from both ends.
		e := expectation{path: control.PathDirect, determined: true, why: "both have global IPv6: direct (simultaneous open through stateful firewalls)"}
		if !a.host.HasIPv4() || !b.host.HasIPv4() || expect4(a.class, b.class).path != control.PathDirect {
			e.family, e.why = famIPv6, e.why+"; over IPv4 only the relay"
		}
		return e
	}
	return expect4(a.class, b.class)
}

// expect4 is LAB.md §3's cell for two IPv4 NAT classes.
func expect4(x, y natClass) expectation {
	if x > y {
		x, y = y, x
	}
	cell := expectedTable[x][y]
	e := expectation{determined: !strings.HasSuffix(cell, "*"), why: "LAB.md §3"}
	if strings.HasPrefix(cell, "D") {
		e.path = control.PathDirect
	} else {
		e.path = control.PathRelay
	}
	return e
}

// matrixNode is one node of the matrix with what it stands for.
type matrixNode struct {
	*node
	label string     // kind, for the table
	class natClass   // its IPv4 side
	ipv6  ipv6Class  // its IPv6 side
	addr6 netip.Addr // overlay IPv6 address (meshctl status)
	// ownRelayLinks is how many of its matrix links have a relay candidate
	// of the node's own (gathered from the coordinator's TURN).
	ownRelayLinks int
}

// pairResult is what the matrix saw for one pair.
type pairResult struct {
	a, b        *matrixNode
	want        expectation
	firstReply  time.Duration // from the later daemon start to the first overlay ping reply
	replyErr    error
	viewA       control.Peer // a's peer entry for b, after settling
	viewB       control.Peer // b's peer entry for a
	transfer    time.Duration
	transferErr error
	// over6 is the overlay IPv6 check of a pair whose path must be IPv6
	// (ping -6 and the TCP transfer to the overlay IPv6 address).
	over6      bool
	ping6      string
	ping6Err   error
	relayCands int // candidate pairs of the link with a relay candidate on either side
	problems   []string
}

func (r *pairResult) fail(format string, args ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// TestNATMatrix starts one coordinator and one node behind each kind of NAT
// the lab has, all at once, and checks every pair: a kernel ping over the
// overlay (timed from daemon start to the first reply), a 1 MiB TCP
// transfer checked end to end, and the path `meshctl peers --json` reports,
// asserted where LAB.md §3 determines it. The coordinator and "pub" are
// dual-stack; two home sites have global IPv6 behind a stateful firewall
// (and symmetric IPv4 NAT, so that IPv6 is their only direct path) and one
// VPS is IPv6-only: the path's address family is recorded for every pair
// and asserted where only one family has a direct path, and pairs whose
// path must be IPv6 carry the overlay's IPv6 (ping -6 and the transfer to
// the peer's overlay IPv6 address). The UDP-blocked node's relayed
// transfers (TURN over TCP) must move the coordinator's TURN fast-path
// counters for TCP clients both ways (meshd_coordinator_turn_fast_packets_total).
// It writes docs/nat-matrix.md.
func TestNATMatrix(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	// The coordinator also relays over TCP, for the UDP-blocked node.
	// It is dual-stack: the IPv6-only node reaches it over IPv6, and its
	// TURN relays between the families.
	// Its metrics show whether the relayed bytes took the TURN server's
	// fast path.
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{IPv6: true}), nodeOpts{coordinator: true, turnTCP: true, metrics: true})
	join := nodeOpts{join: []*node{coord}}

	var nodes []*matrixNode
	add6 := func(h *lab.Host, label string, class natClass, v6 ipv6Class) {
		nodes = append(nodes, &matrixNode{node: m.addNode(h, join), label: label, class: class, ipv6: v6})
	}
	addNATLineup(t, l, add6, true)
	add6(l.AddNode(t, "home6a", lab.NATSymmetric, lab.HostOptions{IPv6: true}), "home router: symmetric IPv4 NAT, global IPv6 behind a stateful firewall", classSymmetric, v6Firewall)
	add6(l.AddNode(t, "home6b", lab.NATSymmetric, lab.HostOptions{IPv6: true}), "home router: symmetric IPv4 NAT, global IPv6 behind a stateful firewall", classSymmetric, v6Firewall)
	add6(l.AddHost(t, "vps", lab.HostOptions{NoIPv4: true}), "IPv6 only (no IPv4 address or route)", classOpen, v6Open)
	t.Logf("topology:\n%s", l.Describe())

	pairs := matrixPairs(nodes)

	// All daemons at once; the coordinator first by a hair. Each pair pings
	// as soon as its first node's overlay address is up (before that the
	// kernel would pick the LAN address as the source), and the first reply
	// is the time to connect, from the later of the two daemon starts.
	coord.start()
	for _, n := range nodes {
		n.start()
	}
	ready := map[*matrixNode]chan error{}
	for _, n := range nodes {
		ch := make(chan error, 1)
		ready[n] = ch
		go func() { ch <- n.controlUp(sessionTimeout) }()
	}
	var wg sync.WaitGroup
	for _, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := ready[p.a]
			err := <-ch
			ch <- err // for the next pair of this node
			if err != nil {
				p.replyErr = err
				return
			}
			p.pingFirstReply()
		}()
	}
	wg.Wait()
	for _, n := range nodes {
		n.startSinkOn(t, netip.IPv6Unspecified())
		if st, err := n.status(context.Background()); err == nil {
			n.addr6 = st.Address6
		}
	}
	for _, n := range append(nodes, &matrixNode{node: coord}) {
		n.alive(t)
	}

	// Let the paths settle: a link may start on the relay and move to a
	// direct pair (UpgradeHold), so the determined cells get time to reach
	// their expected path before the snapshot.
	views := map[string]map[string]control.Peer{}
	snapshot := func() {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ps, err := n.peers(context.Background())
				if err != nil {
					return
				}
				v := map[string]control.Peer{}
				for _, p := range ps {
					v[p.Name] = p
				}
				mu.Lock()
				views[n.name] = v
				mu.Unlock()
			}()
		}
		wg.Wait()
		for _, p := range pairs {
			p.viewA, p.viewB = views[p.a.name][p.b.name], views[p.b.name][p.a.name]
		}
	}
	settled, _, ok := waitUntil(linkTimeout, 500*time.Millisecond, func() (bool, string) {
		snapshot()
		for _, p := range pairs {
			if !p.want.determined || p.replyErr != nil {
				continue
			}
			if !p.viewA.Online || p.viewA.Path != p.want.path || p.viewB.Path != p.want.path {
				return false, ""
			}
		}
		return true, ""
	})
	t.Logf("paths settled after %v more (all determined cells as expected: %v)", settled.Round(time.Millisecond), ok)

	// 1 MiB over TCP for every pair, a few at a time.
	fastBefore := scrapeTURNFast(context.Background(), t, coord)
	sem := make(chan struct{}, 3)
	for _, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			if p.replyErr != nil {
				p.transferErr = errors.New("not attempted: the pair never answered a ping")
				return
			}
			dst := p.b.addr
			if p.want.family == famIPv6 {
				// The overlay's IPv6 over the IPv6 underlay, end to end.
				p.over6, dst = true, p.b.addr6
				p.ping6, p.ping6Err = ping6(ctx, p.a, p.b)
			}
			r, err := send(ctx, p.a.host.Namespace, m.tool, dst, 1<<20, 0, 40*time.Second)
			p.transfer, p.transferErr = r.Duration, err
		}()
	}
	wg.Wait()
	snapshot() // the path the transfer used
	checkTURNFast(t, pairs, fastBefore, scrapeTURNFast(context.Background(), t, coord))

	// Every link must keep a relayed candidate pair: it is what the link
	// falls back to when its direct path breaks (TestPaths/relay-fallback).
	// Each side gathers its own relay candidates from the coordinator's
	// TURN for every link, so the count of links with a relay candidate of
	// the node's own also shows what the TURN allocation quota allows a node
	// with ten peers.
	ownRelay := map[*matrixNode]int{}
	var mu sync.Mutex
	for _, p := range pairs {
		for _, side := range [2][2]*matrixNode{{p.a, p.b}, {p.b, p.a}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var why control.PeerWhy
				if err := side[0].ctlJSON(context.Background(), &why, "peers", "--why", side[1].name); err != nil {
					mu.Lock()
					p.fail("%s: peers --why %s: %v", side[0].name, side[1].name, err)
					mu.Unlock()
					return
				}
				own, any := false, 0
				for _, cp := range why.Pairs {
					if cp.Local.Type == control.CandidateRelay || cp.Remote.Type == control.CandidateRelay {
						any++
					}
					own = own || cp.Local.Type == control.CandidateRelay
				}
				mu.Lock()
				defer mu.Unlock()
				if side[0] == p.a {
					p.relayCands = any
				}
				if own {
					ownRelay[side[0]]++
				}
			}()
		}
	}
	wg.Wait()
	for _, n := range nodes {
		n.ownRelayLinks = ownRelay[n]
		t.Logf("%s: %d of its %d peer links have a relay candidate of its own", n.name, ownRelay[n], len(nodes)-1)
	}

	for _, p := range pairs {
		judge(p)
		for _, pr := range p.problems {
			t.Errorf("%s ↔ %s: %s", p.a.name, p.b.name, pr)
		}
		if len(p.problems) > 0 {
			pathDiag(t, p.a.node, p.b.node)
			if p.a.ipv6 != v6None || p.b.ipv6 != v6None {
				// An IPv6 row: what the other side gathered and paired.
				if out, err := p.b.ctl(context.Background(), "peers", "--why", p.a.name, "--json"); err == nil {
					t.Logf("%s: peers --why %s --json:\n%s", p.b.name, p.a.name, out)
				}
			}
		}
		t.Logf("%-6s ↔ %-6s want %-6s%s got %-6s %-9s first reply %-8s 1 MiB %-8s relay pairs %2d | %s | %s", p.a.name, p.b.name,
			p.want.path, map[bool]string{true: " ", false: "*"}[p.want.determined], p.viewA.Path, familyCell(p),
			durCell(p.firstReply, p.replyErr), durCell(p.transfer, p.transferErr), p.relayCands, describePeer(p.viewA), describePeer(p.viewB))
		if p.over6 {
			t.Logf("%-6s ↔ %-6s overlay IPv6 %v over the IPv6 underlay: %s", p.a.name, p.b.name, p.b.addr6, orDash(p.ping6))
		}
	}
	for _, n := range append(nodes, &matrixNode{node: coord}) {
		n.alive(t)
	}
	doc := renderMatrix(nodes, pairs, t.Failed())
	if err := os.WriteFile(filepath.Join(l.ArtifactDir(), "nat-matrix.md"), []byte(doc), 0o644); err != nil {
		t.Error(err)
	}
	path := filepath.Join(moduleRoot(), "docs", "nat-matrix.md")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Errorf("writing %s: %v", path, err)
	}
	t.Logf("wrote %s", path)
}

// turnFastSeries is a series of the coordinator's TURN fast-path counters.
var turnFastSeries = regexp.MustCompile(`(?m)^meshd_coordinator_turn_fast_packets_total\{direction="([a-z_]+)",transport="([a-z]+)"\} (\S+)$`)

// scrapeTURNFast reads the coordinator's embedded TURN fast-path datagram
// counts, keyed "transport direction" (e.g. "tcp to_peer").
func scrapeTURNFast(ctx context.Context, t *testing.T, coord *node) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, s := range scrapeSeries(ctx, t, coord, turnFastSeries) {
		m[s.groups[1]+" "+s.groups[0]] = s.value
	}
	return m
}

// metricSeries is one series scrapeSeries matched: its pattern's groups
// but the last, and the value the last one holds.
type metricSeries struct {
	groups []string
	value  float64
}

// scrapeSeries reads n's metrics endpoint (nodeOpts.metrics) and returns
// the series re matches; re's last group is the value.
func scrapeSeries(ctx context.Context, t *testing.T, n *node, re *regexp.Regexp) []metricSeries {
	t.Helper()
	out, err := n.host.Output(ctx, "curl", "-sf", fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatalf("%s: scrape: %v", n.name, err)
	}
	var ms []metricSeries
	for _, s := range re.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(s[len(s)-1], 64)
		if err != nil {
			t.Fatalf("%s: %s: %v", n.name, s[0], err)
		}
		ms = append(ms, metricSeries{groups: s[1 : len(s)-1], value: v})
	}
	return ms
}

// checkTURNFast logs what the coordinator's TURN fast path forwarded during
// the transfers and asserts that the UDP-blocked node's relayed transfers
// (TURN over TCP) took it both ways: a relayed pair that works only
// through pion's one-datagram-per-call path fails here.
func checkTURNFast(t *testing.T, pairs []*pairResult, before, after map[string]float64) {
	t.Helper()
	var parts []string
	for _, tr := range []string{"udp", "tcp", "tls"} {
		for _, dir := range []string{"to_peer", "to_client"} {
			k := tr + " " + dir
			parts = append(parts, fmt.Sprintf("%s %.0f", k, after[k]-before[k]))
		}
	}
	t.Logf("coordinator TURN fast path during the transfers (datagrams): %s", strings.Join(parts, ", "))
	tcpRelayed := 0
	for _, p := range pairs {
		if (p.a.class == classUDPBlocked || p.b.class == classUDPBlocked) && p.transferErr == nil && p.viewA.Path == control.PathRelay {
			tcpRelayed++
		}
	}
	if tcpRelayed == 0 {
		t.Error("no UDP-blocked pair transferred over the relay: the TURN-over-TCP fast path was not exercised")
		return
	}
	for _, dir := range []string{"to_peer", "to_client"} {
		if k := "tcp " + dir; after[k]-before[k] < 1 {
			t.Errorf("%d relayed transfers of the UDP-blocked node (TURN over TCP), but the coordinator's TURN fast path forwarded %.0f datagrams %s for TCP clients",
				tcpRelayed, after[k]-before[k], dir)
		}
	}
}

// judge checks one pair against the expectations.
func judge(p *pairResult) {
	if p.replyErr != nil {
		p.fail("overlay ping: %v", p.replyErr)
	}
	if p.transferErr != nil {
		p.fail("1 MiB TCP transfer: %v", p.transferErr)
	}
	if !p.viewA.Online || !p.viewB.Online {
		p.fail("link not up in peers --json: %s / %s", describePeer(p.viewA), describePeer(p.viewB))
		return
	}
	if p.relayCands == 0 {
		p.fail("no relayed candidate pair on the link: nothing to fall back to if the path breaks")
	}
	if p.viewA.Path != p.viewB.Path {
		p.fail("the two sides disagree on the path: %s says %s, %s says %s", p.a.name, p.viewA.Path, p.b.name, p.viewB.Path)
	}
	if p.want.determined && p.viewA.Path != p.want.path {
		p.fail("path %s, want %s (%s): %s", p.viewA.Path, p.want.path, p.want.why, describePeer(p.viewA))
	}
	if p.want.family != "" && p.viewA.Path == p.want.path {
		for _, v := range []control.Peer{p.viewA, p.viewB} {
			if f := family(v); f != p.want.family {
				p.fail("%s path over %s, want %s (%s): %s", v.Path, orDash(f), p.want.family, p.want.why, describePeer(v))
			}
		}
	}
	if p.over6 {
		if p.ping6Err != nil {
			p.fail("ping -6 of the overlay IPv6 address: %v", p.ping6Err)
		}
		if !p.b.addr6.IsValid() {
			p.fail("%s has no overlay IPv6 address in meshctl status", p.b.name)
		}
	}
	if s := p.a.host.Site(); s != nil && s == p.b.host.Site() {
		for _, v := range []control.Peer{p.viewA, p.viewB} {
			if !s.LAN().Contains(v.Endpoint.Addr()) {
				p.fail("same-LAN pair uses endpoint %v, not an address of the LAN %v", v.Endpoint, s.LAN())
			}
		}
	}
}

// family is the underlay family of a peer's selected pair as meshctl peers
// reports it, or else that of its endpoint (for a relayed pair, the peer's
// address as the relay sees it); "" when offline.
func family(p control.Peer) string {
	switch {
	case !p.Online:
		return ""
	case p.Family != "":
		return p.Family
	case !p.Endpoint.IsValid():
		return ""
	case p.Endpoint.Addr().Unmap().Is4():
		return famIPv4
	default:
		return famIPv6
	}
}

// familyCell is a pair's families, first node's view then the second's,
// e.g. "v6" or "v4|v6" (a relayed pair's sides may differ).
func familyCell(p *pairResult) string {
	short := func(f string) string { return strings.Replace(orDash(f), "ip", "", 1) }
	a, b := short(family(p.viewA)), short(family(p.viewB))
	if a == b {
		return a
	}
	return a + "|" + b
}

// ping6 pings b's overlay IPv6 address from a's namespace (five echoes) and
// returns ping's summary; every echo must be answered.
func ping6(ctx context.Context, a, b *matrixNode) (string, error) {
	if !b.addr6.IsValid() {
		return "", fmt.Errorf("%s has no overlay IPv6 address", b.name)
	}
	sent, recv, out, err := ping(ctx, a.host.Namespace, b.addr6, 5)
	if err == nil && (sent == 0 || recv != sent) {
		err = fmt.Errorf("%d of %d echoes answered: %s", recv, sent, tailLines(out, 3))
	}
	return fmt.Sprintf("ping -6 %v: %d/%d replies", b.addr6, recv, sent), err
}

// addNATLineup adds, with add6, one node behind each kind of IPv4 NAT the lab
// has (the matrix's IPv4 rows). With dualStackPub the NAT-less "pub" also
// has a public IPv6 address; every other node is IPv4-only.
func addNATLineup(t *testing.T, l *lab.Lab, add6 func(h *lab.Host, label string, class natClass, v6 ipv6Class), dualStackPub bool) {
	add := func(h *lab.Host, label string, class natClass) { add6(h, label, class, v6None) }
	if dualStackPub {
		add6(l.AddNode(t, "pub", lab.NATNone, lab.HostOptions{IPv6: true}), "no NAT, dual-stack (public IPv4 and IPv6)", classOpen, v6Open)
	} else {
		add(l.AddNode(t, "pub", lab.NATNone, lab.HostOptions{}), "no NAT", classOpen)
	}
	add(l.AddNode(t, "fw", lab.NATFirewall, lab.HostOptions{}), "public + stateful firewall", classFirewall)
	add(l.AddNode(t, "full", lab.NATFullCone, lab.HostOptions{}), "full cone", classFullCone)
	add(l.AddNode(t, "addr", lab.NATAddressRestricted, lab.HostOptions{}), "address-restricted cone", classAddrRestricted)
	add(l.AddNode(t, "port", lab.NATPortRestricted, lab.HostOptions{}), "port-restricted cone", classPortRestricted)
	add(l.AddNode(t, "sym", lab.NATSymmetric, lab.HostOptions{}), "symmetric", classSymmetric)
	// The carrier is the deterministic port-restricted recipe: a MASQUERADE
	// carrier keeps the port only while it is free, and a peer's check that
	// arrives first takes it (conntrack), after which the double NAT maps
	// per destination like a symmetric one and the fw pair goes relayed.
	dbl := l.AddSite(t, "dbl", lab.SiteOptions{NAT: lab.NATFullCone, Carrier: lab.NATPortRestricted})
	add(dbl.AddHost(t, "dbl", lab.HostOptions{}), "double NAT: full cone behind a port-restricted carrier NAT", classPortRestricted)
	add(l.AddNode(t, "udpb", lab.NATUDPBlocked, lab.HostOptions{}), "UDP blocked (TCP only)", classUDPBlocked)
	lan := l.AddSite(t, "lan", lab.SiteOptions{NAT: lab.NATSymmetric})
	add(lan.AddHost(t, "lan1", lab.HostOptions{}), "same LAN #1, behind symmetric NAT", classSymmetric)
	add(lan.AddHost(t, "lan2", lab.HostOptions{}), "same LAN #2, behind symmetric NAT", classSymmetric)
}

// matrixPairs returns every pair of nodes once, with what LAB.md §3
// expects of it.
func matrixPairs(nodes []*matrixNode) []*pairResult {
	var pairs []*pairResult
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			pairs = append(pairs, &pairResult{a: nodes[i], b: nodes[j], want: expect(nodes[i], nodes[j])})
		}
	}
	return pairs
}

// pingFirstReply pings b's overlay address from a until the first reply
// and records it as the time since the later of the two daemon starts, or
// records why there was none.
func (p *pairResult) pingFirstReply() {
	ctx, cancel := context.WithTimeout(context.Background(), linkTimeout+10*time.Second)
	defer cancel()
	at, err := firstReply(ctx, p.a.host.Namespace, p.b.addr, linkTimeout)
	if err != nil {
		p.replyErr = err
		return
	}
	_, sa := p.a.process()
	_, sb := p.b.process()
	p.firstReply = at.Sub(later(sa, sb))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func durCell(d time.Duration, err error) string {
	if err != nil {
		return "FAIL"
	}
	if d < 10*time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// renderMatrix writes the grid and the per-pair details as Markdown.
func renderMatrix(nodes []*matrixNode, pairs []*pairResult, failed bool) string {
	byPair := map[[2]string]*pairResult{}
	for _, p := range pairs {
		byPair[[2]string{p.a.name, p.b.name}] = p
		byPair[[2]string{p.b.name, p.a.name}] = p
	}
	var b strings.Builder
	b.WriteString("# NAT traversal matrix\n\n")
	b.WriteString("Generated by `TestNATMatrix` (`e2e/scenarios/matrix_test.go`); do not edit by hand.\n")
	b.WriteString("Regenerate with `sudo go test -tags e2e -count=1 -run TestNATMatrix ./e2e/scenarios/`.\n\n")
	fmt.Fprintf(&b, "- **Run:** %s, meshd %s, %s/%s, kernel %s, %d CPUs.\n", time.Now().UTC().Format("2006-01-02 15:04 MST"),
		gitVersion(), runtime.GOOS, runtime.GOARCH, kernelRelease(), runtime.NumCPU())
	verdict := "every pair connected and every determined cell had its expected path"
	if failed {
		verdict = "**FAILED** — see the cells marked ✗ and the notes below"
	}
	fmt.Fprintf(&b, "- **Result:** %s.\n", verdict)
	b.WriteString("- **Method:** one network-namespace lab (`e2e/lab`): a dual-stack backbone \"internet\" (198.51.100.0/24 and 2001:db8::/32), one dual-stack coordinator on it " +
		"(real `meshd` with `coordinator.enabled`, embedded STUN and TURN on UDP and TCP :3478 of both families), and one real `meshd` (kernel TUN) per row, " +
		"each behind the NAT the lab builds with nftables/iptables (recipes and measured RFC 4787 behaviour: `e2e/README.md`); " +
		"the IPv6 home sites route a global /64 through a stateful firewall (replies in, nothing unsolicited), the VPS has no IPv4 at all. " +
		"All daemons start at once, so every pair connects at the same time (a full mesh). For every pair the test pings the peer's " +
		"overlay address with the kernel's `ping` from the first node's namespace, sends 1 MiB over TCP through the overlay " +
		"(`labtool send`, byte count and SHA-256 checked by the receiver), and reads the path from `meshctl peers --json` on both sides. " +
		"Pairs whose path must be IPv6 ping the peer's overlay IPv6 address (`ping -6`) and send the 1 MiB to it instead.\n")
	b.WriteString("- **Cells:** path (**D** direct, **R** relayed through the coordinator's TURN), its underlay family (v4, v6; a relayed pair's two sides may differ: first|second) and the time from daemon start to the " +
		"first overlay ping reply. ✓ = the path is determined by LAB.md §3 (RFC 4787 behaviour) and was asserted; " +
		"`*` = depends on check timing, recorded only; ✗ = failed (see the notes).\n\n")

	b.WriteString("| |")
	for _, n := range nodes {
		fmt.Fprintf(&b, " %s |", n.name)
	}
	b.WriteString("\n|---|")
	for range nodes {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, row := range nodes {
		fmt.Fprintf(&b, "| **%s** (%s) |", row.name, row.label)
		for _, col := range nodes {
			if row == col {
				b.WriteString(" — |")
				continue
			}
			fmt.Fprintf(&b, " %s |", cell(byPair[[2]string{row.name, col.name}]))
		}
		b.WriteString("\n")
	}

	b.WriteString("\n## Pairs\n\n")
	b.WriteString("| pair | expected | path | family | candidates (first → second) | endpoint or relay | first reply | 1 MiB TCP | notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range pairs {
		want := string(p.want.path)
		if p.want.family != "" {
			want += " over " + p.want.family
		}
		if !p.want.determined {
			want += " *"
		}
		via := "-"
		if p.viewA.Online {
			via = p.viewA.Endpoint.String()
			if p.viewA.Path == control.PathRelay && p.viewA.Relay != "" {
				via = "relay " + p.viewA.Relay
			}
		}
		cands := "-"
		if p.viewA.Online {
			cands = fmt.Sprintf("%s/%s", p.viewA.LocalCandidate, p.viewA.RemoteCandidate)
		}
		notes := strings.Join(p.problems, "; ")
		if notes == "" {
			notes = p.want.why
		}
		if p.over6 {
			notes += "; overlay IPv6: " + orDash(p.ping6) + ", 1 MiB to " + p.b.addr6.String()
		}
		fmt.Fprintf(&b, "| %s ↔ %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", p.a.name, p.b.name, want, orDash(string(p.viewA.Path)),
			strings.ReplaceAll(familyCell(p), "|", "\\|"), cands, via, durCell(p.firstReply, p.replyErr), durCell(p.transfer, p.transferErr), strings.ReplaceAll(notes, "|", "\\|"))
	}
	b.WriteString("\n## Nodes\n\n")
	for _, n := range nodes {
		six := ""
		if a := n.host.IP6(); a.IsValid() {
			six = fmt.Sprintf(", global IPv6 %v", a)
		}
		fmt.Fprintf(&b, "- **%s**: %s; LAN address %v, public address %v%s, overlay %v and %v; %d of %d links with a relay candidate of its own\n",
			n.name, n.label, n.host.IP(), n.host.PublicIP(), six, n.addr, n.addr6, n.ownRelayLinks, len(nodes)-1)
	}
	return b.String()
}

func cell(p *pairResult) string {
	if p == nil {
		return "?"
	}
	mark := "✓"
	switch {
	case len(p.problems) > 0:
		mark = "✗"
	case !p.want.determined:
		mark = "*"
	}
	path := "?"
	switch p.viewA.Path {
	case control.PathDirect:
		path = "D"
	case control.PathRelay:
		path = "R"
	}
	if p.replyErr != nil {
		return "✗ no reply"
	}
	return fmt.Sprintf("%s %s %s %s", path, strings.ReplaceAll(familyCell(p), "|", "\\|"), durCell(p.firstReply, nil), mark)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// moduleRoot is the checkout: the first directory with go.mod above the
// package directory go test runs in.
func moduleRoot() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

func gitVersion() string {
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = moduleRoot()
	out, err := cmd.Output()
	if err != nil {
		return "(no git)"
	}
	return strings.TrimSpace(string(out))
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
