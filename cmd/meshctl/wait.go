package main

// meshctl wait: block until the node, a peer link, or a direct path to a
// peer is up; for scripts and systemd units that need the mesh.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/control"
)

func init() { register(newWaitCmd) }

// waitPoll is how often wait asks the daemon.
const waitPoll = 250 * time.Millisecond

type waitArgs struct {
	onlineFlags
	peer    string
	direct  bool
	timeout time.Duration
}

// waitResult is the --json document of meshctl wait.
type waitResult struct {
	SchemaVersion int           `json:"schema_version"`
	Ready         bool          `json:"ready"`
	Waited        time.Duration `json:"waited_ns"`
	// Reason is why it is not ready (the last thing seen), empty when ready.
	Reason string `json:"reason,omitempty"`
	// Peer is the peer's state when waiting for a peer.
	Peer *control.Peer `json:"peer,omitempty"`
}

func newWaitCmd() *cobra.Command {
	var a waitArgs
	cmd := &cobra.Command{
		Use:   "wait [--peer NAME [--direct]] [--timeout D]",
		Short: "Wait until meshd is up (or a peer link, or a direct path to it); exit 1 on timeout",
		Long: `Wait until meshd answers and holds a coordinator session; with --peer, until
the link to that peer is up; with --direct too, until that link is direct.
Exits 0 when it is, 1 with the reason when --timeout passes first. A daemon
that is not running yet is waited for.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if a.direct && a.peer == "" {
				return onlineUsage("--direct needs --peer NAME")
			}
			if a.timeout < 0 {
				return onlineUsage("--timeout %v: must not be negative", a.timeout)
			}
			return runWait(cmd, a)
		},
	}
	addOnlineFlags(cmd, &a.onlineFlags)
	fl := cmd.Flags()
	fl.StringVar(&a.peer, "peer", "", "wait for the link to this peer")
	fl.BoolVar(&a.direct, "direct", false, "wait for a direct path to --peer")
	durationVar(fl, &a.timeout, "timeout", 30*time.Second, "give up after this long (0: wait forever)")
	_ = cmd.RegisterFlagCompletionFunc("peer", completePeerNames(&a.onlineFlags))
	return cmd
}

func runWait(cmd *cobra.Command, a waitArgs) error {
	ctx, stop := interruptible(cmd)
	defer stop()
	if a.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.timeout)
		defer cancel()
	}
	start := time.Now()
	c := a.client()
	t := time.NewTicker(waitPoll)
	defer t.Stop()
	last := waitResult{SchemaVersion: control.SchemaVersion, Reason: "no answer from meshd yet"}
	for {
		res, done, err := waitCheck(ctx, c, a)
		if err != nil {
			return err
		}
		res.Waited = time.Since(start)
		if done {
			return waitReport(cmd, a, res, nil)
		}
		// A check cut short by the deadline says less than the one before.
		if ctx.Err() == nil || last.Reason == "" {
			last = res
		}
		last.Waited = res.Waited
		select {
		case <-ctx.Done():
			why := fmt.Errorf("timed out after %v: %s", a.timeout, last.Reason)
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				why = fmt.Errorf("interrupted: %s", last.Reason)
			}
			return waitReport(cmd, a, last, &exitError{code: 1, err: why})
		case <-t.C:
		}
	}
}

// waitCheck looks once. It returns done when the condition holds, and an
// error only when waiting longer cannot help (permission denied, an unknown
// schema version).
func waitCheck(ctx context.Context, c *control.Client, a waitArgs) (waitResult, bool, error) {
	res := waitResult{SchemaVersion: control.SchemaVersion}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := c.Status(rctx)
	switch {
	case errors.Is(err, control.ErrPermissionDenied), errors.Is(err, control.ErrSchemaVersion):
		return res, false, err
	case err != nil:
		res.Reason = err.Error()
		return res, false, nil
	}
	if a.peer == "" {
		if st.Coordinator.State != control.SessionConnected {
			res.Reason = "meshd runs but has no coordinator session (" + coordinatorLine(st.Coordinator, time.Now()) + ")"
			return res, false, nil
		}
		res.Ready = true
		return res, true, nil
	}
	var peer *control.Peer
	want := nodeOfName(a.peer, st.DNS)
	for i := range st.Peers {
		if st.Peers[i].Name == want {
			peer = &st.Peers[i]
		}
	}
	res.Peer = peer
	switch {
	case peer == nil:
		res.Reason = fmt.Sprintf("peer %s is not in the mesh (yet)", a.peer)
	case !peer.Online:
		res.Reason = fmt.Sprintf("peer %s is %s", a.peer, peerState(*peer))
		if peer.LastError != "" {
			res.Reason += " (last error: " + peer.LastError + ")"
		}
	case a.direct && peer.Path != control.PathDirect:
		res.Reason = fmt.Sprintf("peer %s is up via %s %s, not direct (meshctl peers --why %s)", a.peer, peerPath(*peer), peerVia(*peer), a.peer)
	default:
		res.Ready = true
		return res, true, nil
	}
	return res, false, nil
}

// waitReport prints the outcome and returns err.
func waitReport(cmd *cobra.Command, a waitArgs, res waitResult, err error) error {
	w := cmd.OutOrStdout()
	if a.json {
		if perr := printJSONDoc(w, &res); perr != nil {
			return perr
		}
		return err
	}
	if err != nil {
		return err
	}
	switch {
	case a.peer == "":
		fmt.Fprintf(w, "meshd is up (after %s)\n", humanSpan(res.Waited, true))
	default:
		fmt.Fprintf(w, "peer %s is up via %s %s (after %s)\n", a.peer, peerPath(*res.Peer), peerVia(*res.Peer), humanSpan(res.Waited, true))
	}
	return nil
}
