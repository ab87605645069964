package main

// meshctl events: follow the daemon's events (peers up and down, path
// changes, certificate warnings, coordinator failover, reloads) until Ctrl-C.

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/control"
)

func init() { register(newEventsCmd) }

func newEventsCmd() *cobra.Command {
	var f onlineFlags
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Follow meshd's events until interrupted (--json: one document per line)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := interruptible(cmd)
			defer stop()
			w := cmd.OutOrStdout()
			return f.client().Events(ctx, func(e control.Event) error {
				if f.json {
					return printJSONLine(w, &e)
				}
				_, err := fmt.Fprintln(w, eventLine(e))
				return err
			})
		},
	}
	addOnlineFlags(cmd, &f)
	return cmd
}

// eventLine is one event for a person, in columns wide enough for the usual
// values (a stream cannot be aligned after the fact):
//
//	2025-03-14 15:09:26  path_change           nas       relay -> direct  found a direct pair
func eventLine(e control.Event) string {
	ts := "-"
	if !e.Time.IsZero() {
		ts = e.Time.Local().Format(time.DateTime)
	}
	change := ""
	if e.From != "" || e.To != "" {
		change = dash(e.From) + " -> " + dash(e.To)
	}
	return fmt.Sprintf("%s  %-20s  %-12s  %s", ts, e.Kind, dash(e.Peer), joinNonEmpty("  ", change, e.Message))
}
