//go:build e2e

package scenarios

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// latencyRounds is how many rounds TestLatency runs per spacing: each
// pings the underlay and then the overlay, latencyPings echoes one at a
// time.
const (
	latencyRounds = 3
	latencyPings  = 200
)

// latencySpacings are the intervals between echoes TestLatency measures:
// 10 ms, as make bench does (each echo finds both machines idle), and
// 1 ms (they are still warm from the previous one). On a VM the two differ
// several-fold for the underlay as much as for the overlay: the gap is
// what waking from idle costs, not meshd's work (docs/performance.md).
var latencySpacings = []string{"0.01", "0.001"}

// latencyStages are the series of meshd_datapath_stage_seconds, in path
// order: outbound on the pinging node, inbound on the peer, and back.
var latencyStages = []string{"tx_route", "tx_seal", "tx_send", "tx_total", "rx_wake", "rx_open", "rx_deliver", "rx_tun_write"}

// TestLatency records where a lone packet waits on a direct link (issue
// 19): alice pings bob over the underlay and over the overlay, rounds
// interleaved, at each of latencySpacings, and both nodes' stage
// histograms (meshd_datapath_stage_seconds) are read before and after the
// overlay pings. It logs the RTT added over the underlay (p50, p99) and
// each stage's mean per node, and asserts only that every stage counted
// the pings on both nodes: speed is measured, never asserted.
func TestLatency(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true})
	alice := m.addNode(l.AddHost(t, "alice", lab.HostOptions{}), nodeOpts{join: []*node{coord}, metrics: true})
	bob := m.addNode(l.AddHost(t, "bob", lab.HostOptions{}), nodeOpts{join: []*node{coord}, metrics: true})
	for _, n := range []*node{coord, alice, bob} {
		n.start()
	}
	for _, n := range []*node{coord, alice, bob} {
		n.waitSession(t, sessionTimeout)
	}
	mustPeer(t, alice, "bob", isDirect, linkTimeout, "direct")
	ctx := context.Background()
	if _, err := pingRTTs(ctx, alice, bob.addr, 5, "0.01"); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, spacing := range latencySpacings {
		latencyAt(ctx, t, &b, spacing, alice, bob)
	}
	t.Log(b.String())
}

// latencyAt runs TestLatency's rounds with echoes spacing seconds apart
// and writes their figures to b.
func latencyAt(ctx context.Context, t *testing.T, b *strings.Builder, spacing string, alice, bob *node) {
	t.Helper()
	var under, over []time.Duration
	var stages [2]map[string]stageTotals // alice, bob
	var cpu [2]time.Duration             // meshd's CPU time during the overlay pings
	for r := 0; r < latencyRounds; r++ {
		u, err := pingRTTs(ctx, alice, bob.host.IP(), latencyPings, spacing)
		if err != nil {
			t.Fatal(err)
		}
		under = append(under, u...)
		before := [2]map[string]stageTotals{scrapeStages(ctx, t, alice), scrapeStages(ctx, t, bob)}
		cpuBefore := [2]time.Duration{processCPU(t, alice), processCPU(t, bob)}
		o, err := pingRTTs(ctx, alice, bob.addr, latencyPings, spacing)
		if err != nil {
			t.Fatal(err)
		}
		over = append(over, o...)
		for i, n := range []*node{alice, bob} {
			cpu[i] += processCPU(t, n) - cpuBefore[i]
			after := scrapeStages(ctx, t, n)
			if stages[i] == nil {
				stages[i] = map[string]stageTotals{}
			}
			for _, st := range latencyStages {
				d := stages[i][st]
				d.count += after[st].count - before[i][st].count
				d.sum += after[st].sum - before[i][st].sum
				stages[i][st] = d
			}
		}
	}
	pct := func(rs []time.Duration, p float64) time.Duration {
		s := slices.Clone(rs)
		slices.Sort(s)
		return s[int(p*float64(len(s)-1))]
	}
	us := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 0, 64) }
	gap, _ := strconv.ParseFloat(spacing, 64)
	fmt.Fprintf(b, "ping alice → bob, %d × %d echoes %v apart:\n", latencyRounds, latencyPings, time.Duration(gap*float64(time.Second)))
	fmt.Fprintf(b, "  underlay p50 %s µs, p99 %s µs; overlay p50 %s µs, p99 %s µs; added p50 %s µs, p99 %s µs\n",
		us(pct(under, .5)), us(pct(under, .99)), us(pct(over, .5)), us(pct(over, .99)),
		us(pct(over, .5)-pct(under, .5)), us(pct(over, .99)-pct(under, .99)))
	fmt.Fprintf(b, "  meshd CPU during the overlay pings: alice %v, bob %v\n", cpu[0], cpu[1])
	fmt.Fprintf(b, "  %-13s %14s %14s\n", "stage (mean)", "alice", "bob")
	for _, st := range latencyStages {
		fmt.Fprintf(b, "  %-13s", st)
		for i, n := range []*node{alice, bob} {
			s := stages[i][st]
			if s.count < latencyRounds*latencyPings {
				t.Errorf("%s: stage %s counted %v batches for %d echoes %s s apart", n.name, st, s.count, latencyRounds*latencyPings, spacing)
			}
			mean := 0.0
			if s.count > 0 {
				mean = s.sum / s.count * 1e6
			}
			fmt.Fprintf(b, " %8.1f µs ×%4.0f", mean, s.count)
		}
		b.WriteString("\n")
	}
}

// processCPU returns the CPU time (user and system) n's meshd has used so
// far, from /proc (10 ms resolution).
func processCPU(t *testing.T, n *node) time.Duration {
	t.Helper()
	p, _ := n.process()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID()))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (which may hold spaces) start at ")".
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		t.Fatalf("%s: /proc/%d/stat: %q", n.name, p.PID(), b)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ 100
}

// stageTotals are one stage's histogram count and sum (seconds).
type stageTotals struct{ count, sum float64 }

var stageSeries = regexp.MustCompile(`(?m)^meshd_datapath_stage_seconds_(sum|count)\{stage="([a-z_]+)"\} (\S+)$`)

// scrapeStages reads n's meshd_datapath_stage_seconds counts and sums.
func scrapeStages(ctx context.Context, t *testing.T, n *node) map[string]stageTotals {
	t.Helper()
	m := map[string]stageTotals{}
	for _, s := range scrapeSeries(ctx, t, n, stageSeries) {
		st := m[s.groups[1]]
		if s.groups[0] == "sum" {
			st.sum = s.value
		} else {
			st.count = s.value
		}
		m[s.groups[1]] = st
	}
	return m
}

var pingTime = regexp.MustCompile(`(?m) time=(\d+(?:\.\d+)?) ms$`)

// pingRTTs pings dst from n, count echoes interval seconds apart (ping's
// -i), and returns every reply's RTT; an error if any echo went unanswered.
func pingRTTs(ctx context.Context, n *node, dst fmt.Stringer, count int, interval string) ([]time.Duration, error) {
	out, err := n.host.Run(ctx, "ping", "-n", "-c", strconv.Itoa(count), "-i", interval, "-W", "1", dst.String())
	var rtts []time.Duration
	for _, m := range pingTime.FindAllStringSubmatch(out, -1) {
		ms, perr := strconv.ParseFloat(m[1], 64)
		if perr == nil {
			rtts = append(rtts, time.Duration(ms*1e6))
		}
	}
	if err != nil || len(rtts) != count {
		return rtts, fmt.Errorf("ping %s from %s: %d of %d replies (%v): %s", dst, n.name, len(rtts), count, err, tailLines(out, 3))
	}
	return rtts, nil
}
