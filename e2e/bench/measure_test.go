//go:build e2e && bench

package bench

// The loads: iperf3 TCP and ping, run in a lab namespace, and the parsers of
// their output.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/e2e/lab"
)

// iperfPort is where every destination host's iperf3 server listens.
const iperfPort = 5201

// pingCount and pingInterval are the latency load: ping -q -c 200 -i 0.01.
const (
	pingCount    = 200
	pingInterval = "0.01"
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

// pingResult is one ping run's summary.
type pingResult struct {
	sent, received int
	avg, min, max  time.Duration
}

// pingRTT runs `ping -q -c 200 -i 0.01 dst` in ns.
func pingRTT(ns *lab.Namespace, dst netip.Addr) (pingResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Run, not Output: ping's summary goes to stdout even when some
	// echoes are lost (exit status 1), and the summary is what counts.
	out, err := ns.Run(ctx, "ping", "-q", "-c", strconv.Itoa(pingCount), "-i", pingInterval, dst.String())
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
	pingCounts = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingRTTs   = regexp.MustCompile(`(?:rtt|round-trip) min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms`)
)

// parsePing reads the counts and the min/avg/max RTT of ping's summary.
func parsePing(out string) (pingResult, error) {
	var r pingResult
	m := pingCounts.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("%w: no packet counts in %q", errNoFigure, short(out))
	}
	r.sent, _ = strconv.Atoi(m[1])
	r.received, _ = strconv.Atoi(m[2])
	if r.received == 0 {
		return r, fmt.Errorf("no reply to %d echoes", r.sent)
	}
	m = pingRTTs.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("%w: no rtt line in %q", errNoFigure, short(out))
	}
	r.min, r.avg, r.max = msDuration(m[1]), msDuration(m[2]), msDuration(m[3])
	return r, nil
}

func msDuration(s string) time.Duration {
	f, _ := strconv.ParseFloat(s, 64)
	return time.Duration(f * float64(time.Millisecond))
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
