package main

// meshctl ping: ping a peer through the overlay and say which path each reply
// took; by default it stops once a direct path answers, and any working
// path (direct or relayed) is a success unless --until-direct is given.

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/control"
)

func init() { register(newPingCmd) }

type pingArgs struct {
	onlineFlags
	count       int
	interval    time.Duration
	untilDirect bool
	// requireDirect: --until-direct was given explicitly, so replies that
	// all came through a relay are a failure (exit 1).
	requireDirect bool
}

func newPingCmd() *cobra.Command {
	var a pingArgs
	cmd := &cobra.Command{
		Use:   "ping PEER|ADDRESS [-c N] [--interval D] [--until-direct[=false]]",
		Short: "Ping a peer through the mesh and show the path each reply took",
		Long: `Ping a peer, by name or by one of its overlay addresses (IPv4 or IPv6), through
the mesh. Each reply says whether it came directly or through a relay. By
default ping stops as soon as a direct path answers and succeeds if any reply
came back, over whichever path; --until-direct given explicitly also exits 1
when no reply came over a direct path, and --until-direct=false sends all N
pings.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completePeerNames(&a.onlineFlags),
		RunE: func(cmd *cobra.Command, args []string) error {
			if a.count < 1 || a.count > control.MaxPingCount {
				return onlineUsage("-c %d: want 1..%d", a.count, control.MaxPingCount)
			}
			if a.interval < control.MinPingInterval || a.interval > control.MaxPingInterval {
				return onlineUsage("--interval %v: want %v..%v", a.interval, control.MinPingInterval, control.MaxPingInterval)
			}
			a.requireDirect = a.untilDirect && cmd.Flags().Changed("until-direct")
			return runPing(cmd, args[0], a)
		},
	}
	addOnlineFlags(cmd, &a.onlineFlags)
	fl := cmd.Flags()
	fl.IntVarP(&a.count, "count", "c", control.DefaultPingCount, "how many pings to send")
	durationVar(fl, &a.interval, "interval", control.DefaultPingInterval, "time between pings")
	fl.BoolVar(&a.untilDirect, "until-direct", true, "stop at the first reply over a direct path; given explicitly, fail when none came")
	return cmd
}

// pingStats summarises the replies.
type pingStats struct {
	sent, replies, direct int
	min, max, sum         time.Duration
	name                  string
}

func (s *pingStats) add(r control.PingReply) {
	s.sent++
	if r.Error != "" {
		return
	}
	s.replies++
	if r.Path == control.PathDirect {
		s.direct++
	}
	if s.replies == 1 || r.RTT < s.min {
		s.min = r.RTT
	}
	s.max = max(s.max, r.RTT)
	s.sum += r.RTT
}

func runPing(cmd *cobra.Command, peer string, a pingArgs) error {
	ctx, stop := interruptible(cmd)
	defer stop()
	w := cmd.OutOrStdout()
	stats := pingStats{name: peer}
	req := control.PingRequest{Peer: peer, Count: a.count, Interval: a.interval, UntilDirect: a.untilDirect}
	err := a.client().Ping(ctx, req, func(r control.PingReply) error {
		stats.add(r)
		if a.json {
			return printJSONLine(w, &r)
		}
		_, err := fmt.Fprintln(w, pingLine(r))
		return err
	})
	interrupted := err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err())
	if err != nil && !interrupted {
		return err
	}
	if !a.json {
		printPingSummary(w, stats)
	}
	switch {
	case stats.replies == 0:
		return &exitError{code: 1, err: fmt.Errorf("no reply from %s after %d pings", peer, stats.sent)}
	case a.requireDirect && stats.direct == 0 && !interrupted:
		return &exitError{code: 1, err: fmt.Errorf("direct path to %s not established after %d pings: replies came through the relay (meshctl peers --why %s)", peer, stats.sent, peer)}
	}
	return nil
}

// pingLine is one reply for a person:
//
//	pong from nas (100.64.0.2) via relay 198.51.100.20:3478 in 12.3ms
//	pong from nas (100.64.0.2) via 203.0.113.5:51820 (direct) in 1.2ms
//	no reply from nas (100.64.0.2): timeout
func pingLine(r control.PingReply) string {
	who := r.Peer
	if a := addrString(r.Address); a != "" {
		who += " (" + a + ")"
	}
	if r.Error != "" {
		return fmt.Sprintf("no reply from %s: %s", who, r.Error)
	}
	var via string
	switch r.Path {
	case control.PathRelay:
		via = " via relay " + dash(r.Relay)
	case control.PathDirect:
		via = " via " + dash(addrPortString(r.Endpoint)) + " (direct)"
	default:
		if ep := addrPortString(r.Endpoint); ep != "" {
			via = " via " + ep
		}
	}
	return fmt.Sprintf("pong from %s%s in %s", who, via, humanRTT(r.RTT))
}

func printPingSummary(w io.Writer, s pingStats) {
	loss := 0
	if s.sent > 0 {
		loss = (s.sent - s.replies) * 100 / s.sent
	}
	fmt.Fprintf(w, "--- %s: %d sent, %d received (%d direct), %d%% loss", s.name, s.sent, s.replies, s.direct, loss)
	if s.replies > 0 {
		avg := s.sum / time.Duration(s.replies)
		fmt.Fprintf(w, ", rtt min/avg/max %s/%s/%s", humanRTT(s.min), humanRTT(avg), humanRTT(s.max))
	}
	fmt.Fprintln(w)
}
