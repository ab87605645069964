//go:build e2e && bench

package bench

// The loads: iperf3 TCP and ping, run in a lab namespace, and the parsers of
// their output.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/e2e/lab"
)

// iperfPort is where every destination host's iperf3 server listens.
const iperfPort = 5201

// pingCount and pingInterval are one latency round: ping -n -c 200 -i 0.01.
// The interval, 10 ms, is ten times the slowest path's RTT, so one echo is
// in flight at a time (ping's "pipe N" tells otherwise, and the report says
// so): the latency of a lone packet, not of a flood. pingWarmInterval is
// the second round, echoes 1 ms apart: still one in flight, but the
// machines have not gone idle between them, which on a VM costs more than
// any tunnel's own work (docs/performance.md, "Idle and warm").
const (
	pingCount        = 200
	pingInterval     = "0.01"
	pingWarmInterval = "0.001"
)

// iperfTCP runs `iperf3 -c dst -t seconds -J [-P streams]` in ns and returns
// the receiver's throughput in Mbit/s (end.sum_received).
func iperfTCP(ns *lab.Namespace, dst netip.Addr, seconds, streams int) (float64, error) {
	args := []string{"-c", dst.String(), "-p", strconv.Itoa(iperfPort), "-t", strconv.Itoa(seconds), "-J"}
	if streams > 1 {
		args = append(args, "-P", strconv.Itoa(streams))
	}
	// iperf3 gives up connecting by itself; the margin covers its start
	// and the end-of-test exchange over a slow tunnel.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+20)*time.Second)
	defer cancel()
	out, err := ns.Output(ctx, "iperf3", args...)
	mbps, perr := parseIperf(out)
	if perr != nil {
		if err != nil {
			return 0, fmt.Errorf("iperf3 -c %v: %w (%v)", dst, perr, err)
		}
		return 0, fmt.Errorf("iperf3 -c %v: %w", dst, perr)
	}
	return mbps, nil
}

// errNoFigure means a tool's output lacked the figure the bench reads.
var errNoFigure = errors.New("no figure in the output")

// parseIperf reads end.sum_received.bits_per_second (in Mbit/s) from iperf3
// -J output, or the error iperf3 reported.
func parseIperf(out string) (float64, error) {
	i := strings.Index(out, "{")
	if i < 0 {
		return 0, fmt.Errorf("%w: not JSON: %q", errNoFigure, short(out))
	}
	var doc struct {
		Error string `json:"error"`
		End   struct {
			SumReceived *struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out[i:]), &doc); err != nil {
		return 0, fmt.Errorf("%w: bad JSON: %v", errNoFigure, err)
	}
	if doc.Error != "" {
		return 0, fmt.Errorf("iperf3 error: %s", doc.Error)
	}
	if doc.End.SumReceived == nil || doc.End.SumReceived.BitsPerSecond <= 0 {
		return 0, fmt.Errorf("%w: no end.sum_received", errNoFigure)
	}
	return doc.End.SumReceived.BitsPerSecond / 1e6, nil
}

// pingResult is the echoes of one path: one ping run, or the runs of
// all rounds merged.
type pingResult struct {
	sent, received int             // echoes sent and answered (duplicates aside)
	dups           int             // duplicate replies, not in rtts
	rtts           []time.Duration // one per answered echo, in order
	pipe           int             // most echoes in flight at once (ping's "pipe N"); 1 if it printed none
}

// merge adds the echoes of another run.
func (r *pingResult) merge(o pingResult) {
	r.sent += o.sent
	r.received += o.received
	r.dups += o.dups
	r.rtts = append(r.rtts, o.rtts...)
	r.pipe = max(r.pipe, o.pipe)
}

// avg is the mean RTT of the answered echoes (duplicates aside, unlike
// ping's own summary), or 0 for none.
func (r pingResult) avg() time.Duration {
	if len(r.rtts) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range r.rtts {
		sum += d
	}
	return sum / time.Duration(len(r.rtts))
}

// pct is the p-th percentile (0 < p <= 100) of the RTTs by nearest rank:
// the smallest RTT that at least p% of the echoes did not exceed; 0 for
// none.
func (r pingResult) pct(p float64) time.Duration {
	if len(r.rtts) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), r.rtts...)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// pingRTT runs `ping -n -c 200 -i interval dst` in ns and reads every reply.
func pingRTT(ns *lab.Namespace, dst netip.Addr, interval string) (pingResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Run, not Output: ping's summary goes to stdout even when some
	// echoes are lost (exit status 1), and the replies are what count.
	out, err := ns.Run(ctx, "ping", "-n", "-c", strconv.Itoa(pingCount), "-i", interval, dst.String())
	r, perr := parsePing(out)
	if perr != nil {
		if err != nil {
			return r, fmt.Errorf("ping %v: %w (%v)", dst, perr, err)
		}
		return r, fmt.Errorf("ping %v: %w", dst, perr)
	}
	return r, nil
}

var (
	pingCounts = regexp.MustCompile(`(?m)^(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?`)
	pingPipe   = regexp.MustCompile(`(?m)^(?:rtt|round-trip) min/avg/max/mdev = .* ms, pipe (\d+)`)
	// A reply line; iputils prints time= with 3 decimals below 1 ms, 2
	// below 10 ms, 1 below 100 ms and none above.
	pingReply = regexp.MustCompile(`(?m)^(?:\[[\d.]+\] )?\d+ bytes from .* time=(\d+(?:\.\d+)?) ms( \(DUP!\))?`)
)

// maxPingReplies bounds the reply lines parsePing reads: the most a bench
// round asks for, with room for duplicates.
const maxPingReplies = 4 * pingCount

// parsePing reads the RTT of every reply line of ping output (duplicates
// counted apart, not as RTTs) and the counts of its summary, which must
// agree with the lines.
func parsePing(out string) (pingResult, error) {
	r := pingResult{pipe: 1}
	m := pingCounts.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("%w: no packet counts in %q", errNoFigure, short(out))
	}
	var err error
	if r.sent, err = strconv.Atoi(m[1]); err != nil {
		return r, fmt.Errorf("bad count %q: %w", m[1], err)
	}
	if r.received, err = strconv.Atoi(m[2]); err != nil {
		return r, fmt.Errorf("bad count %q: %w", m[2], err)
	}
	if m[3] != "" {
		if r.dups, err = strconv.Atoi(m[3]); err != nil {
			return r, fmt.Errorf("bad count %q: %w", m[3], err)
		}
	}
	if r.received == 0 {
		return r, fmt.Errorf("no reply to %d echoes", r.sent)
	}
	if r.received > r.sent || r.received+r.dups > maxPingReplies {
		return r, fmt.Errorf("%d replies to %d echoes (+%d duplicates): not a bench round", r.received, r.sent, r.dups)
	}
	if p := pingPipe.FindStringSubmatch(out); p != nil {
		if r.pipe, err = strconv.Atoi(p[1]); err != nil {
			return r, fmt.Errorf("bad pipe %q: %w", p[1], err)
		}
	}
	r.rtts = make([]time.Duration, 0, r.received)
	dups := 0
	for _, m := range pingReply.FindAllStringSubmatch(out, r.received+r.dups+1) {
		if m[2] != "" {
			dups++
			continue
		}
		d, err := msDuration(m[1])
		if err != nil {
			return r, err
		}
		r.rtts = append(r.rtts, d)
	}
	if len(r.rtts) != r.received || dups != r.dups {
		return r, fmt.Errorf("%w: %d reply lines and %d duplicates, but the summary says %d received, +%d duplicates",
			errNoFigure, len(r.rtts), dups, r.received, r.dups)
	}
	return r, nil
}

// msDuration reads ping's milliseconds ("0.512", "12.3", "123").
func msDuration(s string) (time.Duration, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f > 3.6e6 {
		return 0, fmt.Errorf("bad RTT %q ms", s)
	}
	return time.Duration(math.Round(f * float64(time.Millisecond))), nil
}

// pingStamp matches a reply line of `ping -D`: "[1732462000.123456] 64
// bytes from ...".
var pingStamp = regexp.MustCompile(`(?m)^\[(\d+)\.(\d+)\] \d+ bytes from `)

// firstReply returns the time of the first echo reply in `ping -D` output.
func firstReply(out string) (time.Time, error) {
	m := pingStamp.FindStringSubmatch(out)
	if m == nil {
		return time.Time{}, fmt.Errorf("%w: no timestamped reply in %q", errNoFigure, short(out))
	}
	sec, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad ping timestamp %q: %w", m[0], err)
	}
	frac := (m[2] + "000000000")[:9] // to nanoseconds
	ns, _ := strconv.ParseInt(frac, 10, 64)
	return time.Unix(sec, ns), nil
}

// median returns the median of vs (the mean of the middle two for an even
// count), or 0 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// short trims tool output for an error message.
func short(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// lastLine returns the last non-empty line of s (a tool's error), trimmed.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			if len(l) > 200 {
				l = l[:200] + "..."
			}
			return l
		}
	}
	return ""
}
