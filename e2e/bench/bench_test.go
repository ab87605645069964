//go:build e2e && bench

package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// settings are one run's knobs, from the environment so that `make bench`
// needs no flags.
type settings struct {
	seconds int    // MESHD_BENCH_SECONDS: iperf3 -t; default 8
	runs    int    // MESHD_BENCH_RUNS: one-stream runs and ping rounds per path; default 3
	nebula  string // MESHD_BENCH_NEBULA: Nebula version; "" = newest that builds
	out     string // MESHD_BENCH_OUT: the report; default docs/performance-lab.md
}

func loadSettings(root string) (settings, error) {
	s := settings{seconds: 8, runs: 3, nebula: os.Getenv("MESHD_BENCH_NEBULA"), out: os.Getenv("MESHD_BENCH_OUT")}
	for _, e := range []struct {
		env      string
		dst      *int
		min, max int
	}{
		{"MESHD_BENCH_SECONDS", &s.seconds, 1, 120},
		{"MESHD_BENCH_RUNS", &s.runs, 1, 20},
	} {
		v := os.Getenv(e.env)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < e.min || n > e.max {
			return s, fmt.Errorf("%s=%q: want a whole number from %d to %d", e.env, v, e.min, e.max)
		}
		*e.dst = n
	}
	if s.out == "" {
		s.out = filepath.Join(root, "docs", "performance-lab.md")
	}
	return s, nil
}

// column is one row of the table: a path from host src to host dst.
type column struct {
	key      string  // [a-z]+: logs and nft counter names
	label    string  // the table's row label
	ref      bool    // wireguard-go: the reference of the ratios (of its family)
	six      bool    // the path's underlay is IPv6 (between IPv6-only hosts)
	headline bool    // meshd direct: the family comparison's meshd figure
	underlay bool    // the plain underlay: what the tunnels of its family add RTT to
	base     *column // a relayed path: the direct one it is compared with
	src, dst *lab.Host
	addr     netip.Addr // dst's address on this path, once set up
	legs     []wireLeg  // what its sender puts on the backbone, counted by nft

	unavailable string        // why the path was not measured; "" if it was
	setup       time.Duration // meshd: daemons' start to first overlay reply
	direct      time.Duration // meshd direct: daemons' start until the link reports a direct path
	via         string        // meshd relayed: the TURN server used

	server   *lab.Proc // iperf3 -s on dst
	tcp1     []float64 // Mbit/s, one per run
	tcp4     []float64
	ping     pingResult // every round's echoes, 10 ms apart
	warm     pingResult // every round's echoes, 1 ms apart
	failures []string
	cleanup  []func()
}

func (c *column) fail(err error) { c.failures = append(c.failures, err.Error()) }

// TestBench measures the plain underlay, wireguard-go, Nebula and meshd
// (direct and relayed) side by side and writes docs/performance-lab.md; see
// the package doc. A path that cannot be set up is reported as not
// available; the test fails only if the underlay or the wireguard-go
// reference gives no figure, since without them the table means nothing.
func TestBench(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"iperf3", "ping", "wg", "nft", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/lab-deps.sh --bench as root", tool)
		}
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	s, err := loadSettings(root)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep := &report{when: start, machine: describeMachine(), settings: s}
	tmp := t.TempDir()

	l := lab.New(t, lab.Options{})
	host := func(name string) *lab.Host { return l.AddHost(t, name, lab.HostOptions{}) }
	// The IPv6 underlay's paths run between IPv6-only hosts, so that their
	// tunnels cannot use anything else.
	host6 := func(name string) *lab.Host { return l.AddHost(t, name, lab.HostOptions{NoIPv4: true}) }
	// All traffic of one protocol from one host to the other: each pair
	// carries nothing but its path's traffic.
	leg := func(a, b *lab.Host, proto string) wireLeg {
		return wireLeg{
			what:  fmt.Sprintf("%s → %s, %s", a.Name(), b.Name(), strings.ToUpper(proto)),
			match: legMatch(a.IP(), b.IP(), proto),
		}
	}
	plain := &column{key: "plain", label: "plain underlay (veth + bridge, MTU 1500)", underlay: true, src: host("plaina"), dst: host("plainb")}
	plain.legs = []wireLeg{leg(plain.src, plain.dst, "tcp")}
	plain6 := &column{key: "plainsix", label: "plain underlay over IPv6 (veth + bridge, MTU 1500)", underlay: true, six: true,
		src: host6("plainsixa"), dst: host6("plainsixb")}
	plain6.legs = []wireLeg{leg(plain6.src, plain6.dst, "tcp")}
	wg := &column{key: "wg", label: "wireguard-go", ref: true, src: host("wga"), dst: host("wgb")}
	wg.legs = []wireLeg{leg(wg.src, wg.dst, "udp")}
	neb := &column{key: "nebula", label: "Nebula", src: host("neba"), dst: host("nebb")}
	neb.legs = []wireLeg{leg(neb.src, neb.dst, "udp")}
	wg6 := &column{key: "wgsix", label: "wireguard-go over IPv6", ref: true, six: true, src: host6("wgsixa"), dst: host6("wgsixb")}
	wg6.legs = []wireLeg{leg(wg6.src, wg6.dst, "udp")}
	// Dual-stack: the IPv6-only nodes reach it over IPv6.
	coord := l.AddHost(t, "coord", lab.HostOptions{IPv6: true})
	mesh := &column{key: "meshd", label: "meshd, direct", headline: true, src: host("mesha"), dst: host("meshb")}
	mesh.legs = []wireLeg{leg(mesh.src, mesh.dst, "udp")}
	mesh6 := &column{key: "meshdsix", label: "meshd, direct, over IPv6", headline: true, six: true, src: host6("meshsixa"), dst: host6("meshsixb")}
	mesh6.legs = []wireLeg{leg(mesh6.src, mesh6.dst, "udp")}
	relay := &column{key: "meshdrelay", label: "meshd, relayed over TURN/UDP (direct path blocked)", base: mesh, src: host("relaya"), dst: host("relayb")}
	// Both legs: to the relay (to its TURN port or, if the destination
	// holds the allocation, to the allocated port) and from it.
	relay.legs = []wireLeg{leg(relay.src, coord, "udp"), leg(coord, relay.dst, "udp")}
	relayTCP := &column{key: "meshdtcp", label: "meshd, relayed over TURN/TCP (UDP blocked)", base: mesh, src: host("relaytcpa"), dst: host("relaytcpb")}
	// Both nodes hold TCP allocations: each leg is a node's TURN stream.
	relayTCP.legs = []wireLeg{leg(relayTCP.src, coord, "tcp"), leg(coord, relayTCP.dst, "tcp")}
	cols := []*column{plain, wg, neb, mesh, relay, relayTCP, plain6, wg6, mesh6}
	rep.cols = cols
	t.Cleanup(func() {
		for _, c := range cols {
			for _, f := range c.cleanup {
				f()
			}
		}
	})

	// Build and bring up every path; a failure marks that path only.
	bins := filepath.Join(tmp, "bin")
	if err := os.MkdirAll(bins, 0o755); err != nil {
		t.Fatal(err)
	}
	plain.addr, plain6.addr = plain.dst.IP(), plain6.dst.IP6()
	t.Log("building wireguard-go")
	if bin, ver, err := buildWireguardGo(root, bins); err != nil {
		wg.unavailable, wg6.unavailable = err.Error(), err.Error()
	} else {
		wg.label = "wireguard-go, tun MTU " + strconv.Itoa(tunMTU)
		wg6.label = "wireguard-go over IPv6, tun MTU " + strconv.Itoa(tunMTU)
		rep.versions = append(rep.versions, "wireguard-go "+ver+", the version go.mod requires")
		for i, c := range []*column{wg, wg6} {
			if c.addr, err = setupWireguard(bin, c, byte('a'+2*i)); err != nil {
				c.unavailable = err.Error()
			}
		}
	}
	t.Log("building Nebula")
	nebDir := filepath.Join(tmp, "nebula")
	if err := os.MkdirAll(nebDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if nb, err := buildNebula(nebDir, s.nebula); err != nil {
		neb.unavailable = err.Error()
	} else {
		neb.label = "Nebula " + nb.version + ", tun MTU " + strconv.Itoa(tunMTU)
		v := "Nebula " + nb.version + ", built with go install"
		if len(nb.skipped) > 0 {
			v += " (the newest release that builds here: " + strings.Join(nb.skipped, "; ") + ")"
		}
		rep.versions = append(rep.versions, v)
		dir := filepath.Join(tmp, "nebula-pki")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if neb.addr, err = setupNebula(nb, dir, neb); err != nil {
			neb.unavailable = err.Error()
		}
	}
	t.Log("building meshd")
	setupMeshd(t, root, bins, tmp, l, coord, meshdColumns{mesh, relay, relayTCP, mesh6}, rep)
	for _, c := range cols {
		if c.unavailable != "" {
			t.Logf("%s: not available: %s", c.key, c.unavailable)
		}
	}

	if err := installCounters(l, cols, tmp); err != nil {
		rep.wireErr = err
	}
	var live []*column
	for _, c := range cols {
		if c.unavailable == "" {
			if err := startServer(c); err != nil {
				c.unavailable = err.Error()
				continue
			}
			live = append(live, c)
		}
	}

	runLoads(t, live, s)
	if rep.wireErr == nil {
		rep.wire, rep.wireErr = readCounters(l)
	}

	rep.took = time.Since(start)
	text := rep.markdown()
	fmt.Println(text)
	if err := os.MkdirAll(filepath.Dir(s.out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.out, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("report written to %s", s.out)
	for _, c := range []*column{plain, wg, plain6, wg6} {
		if len(c.tcp1) == 0 {
			t.Errorf("%s gave no TCP figure (%s%s): the table has no reference", c.key, c.unavailable, strings.Join(c.failures, "; "))
		}
	}
}

// runLoads measures every live column: interleaved rounds of the one-stream
// run, each round starting at the next path (the plain underlays only until
// one run succeeds), then the four-stream run per path, then interleaved
// rounds of ping, whose echoes are pooled per path. A failed run is
// recorded in the column and the bench goes on.
func runLoads(t *testing.T, live []*column, s settings) {
	t.Helper()
	rounds := func(what string, run func(c *column)) {
		for r := 0; r < s.runs; r++ {
			t.Logf("%s, round %d of %d", what, r+1, s.runs)
			for i := range live {
				run(live[(i+r)%len(live)])
			}
		}
	}
	// tcp runs iperf3 with streams streams and adds the figure to *dst.
	tcp := func(c *column, streams int, dst *[]float64) {
		v, err := iperfTCP(c.src.Namespace, c.addr, s.seconds, streams)
		if err != nil {
			c.fail(err)
			restartServer(c)
			return
		}
		*dst = append(*dst, v)
		t.Logf("%-10s TCP %d stream(s) %8.0f Mbit/s", c.key, streams, v)
	}
	rounds("TCP 1 stream", func(c *column) {
		// The plain underlay is the physical limit, an order above every
		// tunnel: one run tells it, and the bench stays within minutes.
		if !c.underlay || len(c.tcp1) == 0 {
			tcp(c, 1, &c.tcp1)
		}
	})
	for _, c := range live {
		tcp(c, 4, &c.tcp4)
	}
	// ping runs one round of echoes interval apart and pools it into *dst.
	ping := func(c *column, interval string, dst *pingResult) {
		p, err := pingRTT(c.src.Namespace, c.addr, interval)
		if err != nil {
			c.fail(err)
			return
		}
		dst.merge(p)
		t.Logf("%-10s ping -i %s p50 %v p99 %v (%d/%d)", c.key, interval, p.pct(50), p.pct(99), p.received, p.sent)
	}
	rounds("ping", func(c *column) { ping(c, pingInterval, &c.ping) })
	rounds("ping, 1 ms apart", func(c *column) { ping(c, pingWarmInterval, &c.warm) })
}

// meshdColumns are the meshd paths.
type meshdColumns struct {
	direct, relay, relayTCP, direct6 *column
}

func (mc meshdColumns) all() []*column {
	return []*column{mc.direct, mc.relay, mc.relayTCP, mc.direct6}
}

// setupMeshd builds meshd, starts the coordinator and the meshd pairs. A
// failure marks every meshd column not available with the reason.
func setupMeshd(t *testing.T, root, bins, tmp string, l *lab.Lab, coord *lab.Host, mc meshdColumns, rep *report) {
	t.Helper()
	mark := func(err error) {
		for _, c := range mc.all() {
			c.unavailable = err.Error()
		}
	}
	meshdBin, meshctlBin, err := buildMeshd(root, bins)
	if err != nil {
		mark(err)
		return
	}
	rep.versions = append(rep.versions, "meshd "+checkoutVersion(root)+", this checkout")
	for _, c := range mc.all() {
		c.label += ", tun MTU " + strconv.Itoa(tunMTU)
	}
	m, err := newMeshdMesh(meshdBin, meshctlBin, filepath.Join(tmp, "meshd"), coord)
	if err != nil {
		mark(err)
		return
	}
	t.Log("meshd coordinator up; starting the direct pair")
	if mc.direct.addr, err = m.startPair(mc.direct, control.PathDirect); err != nil {
		mc.direct.unavailable = err.Error()
	} else {
		t.Logf("meshd direct link setup: %v", mc.direct.setup)
	}
	t.Log("starting the direct pair over IPv6")
	if mc.direct6.addr, err = m.startPair(mc.direct6, control.PathDirect); err != nil {
		mc.direct6.unavailable = err.Error()
	} else {
		t.Logf("meshd direct link setup over IPv6: %v", mc.direct6.setup)
	}
	for _, r := range []struct {
		c     *column
		block func(c *column) error
		want  string // the transport of the node's own TURN allocation
	}{
		{mc.relay, func(c *column) error {
			if err := blockPath(l, c); err != nil {
				return err
			}
			// Else one node may take its TCP allocation (the coordinator
			// announces both), and the row would measure a mix.
			return blockTURNTCP(l, c, tmp, turnTCP(coord))
		}, "/udp"},
		{mc.relayTCP, func(c *column) error {
			if err := blockPath(l, c); err != nil {
				return err
			}
			return blockUDP(l, c, tmp)
		}, "/tcp"},
	} {
		if err := r.block(r.c); err != nil {
			r.c.unavailable = err.Error()
			continue
		}
		t.Logf("starting the pair %s", r.c.key)
		if r.c.addr, err = m.startPair(r.c, control.PathRelay); err != nil {
			r.c.unavailable = err.Error()
			continue
		}
		t.Logf("%s link setup: %v (via %s)", r.c.key, r.c.setup, r.c.via)
		// The label is the node's own allocation ("addr:port/udp"), or
		// the peer's relayed address when the node sends to that
		// directly; either way the path must be the one the row names.
		if o := map[string]string{"/udp": "/tcp", "/tcp": "/udp"}[r.want]; strings.HasSuffix(r.c.via, o) {
			r.c.fail(fmt.Errorf("the link runs over TURN%s (%s), not TURN%s as this row says", strings.ToUpper(o), r.c.via, strings.ToUpper(r.want)))
		}
	}
}

// blockPath drops all traffic between c's two hosts in the bridge.
func blockPath(l *lab.Lab, c *column) error {
	blk, err := l.BlockPath(c.src, c.dst)
	if err != nil {
		return err
	}
	c.cleanup = append(c.cleanup, func() { _ = blk.Remove() })
	return nil
}

// checkoutVersion is `git describe` of the checkout, as `make build` stamps
// it, or "dev".
func checkoutVersion(root string) string {
	cmd := exec.Command("git", "describe", "--tags", "--always", "--dirty")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

// startServer starts the iperf3 server on c's destination and waits until
// it listens.
func startServer(c *column) error {
	p, err := c.dst.StartWith(lab.ProcOptions{Label: "iperf3-server"}, "iperf3", "-s", "-p", strconv.Itoa(iperfPort))
	if err != nil {
		return err
	}
	c.server = p
	want := ":" + strconv.Itoa(iperfPort)
	listening := testutil.Eventually(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, _ := c.dst.Run(ctx, "ss", "-Hlnt")
		for _, line := range strings.Split(out, "\n") {
			// ss -H columns: State Recv-Q Send-Q Local:Port Peer:Port
			if f := strings.Fields(line); len(f) >= 4 && strings.HasSuffix(f[3], want) {
				return true
			}
		}
		return p.Exited()
	})
	if !listening || p.Exited() {
		return fmt.Errorf("iperf3 -s on %s does not listen: %s", c.dst.Name(), lastLine(p.Stderr()+p.Stdout()))
	}
	return nil
}

// restartServer replaces c's iperf3 server after a failed run, which can
// leave it stuck in the broken test.
func restartServer(c *column) {
	if c.server != nil {
		_ = c.server.Stop()
	}
	if err := startServer(c); err != nil {
		c.fail(err)
	}
}
