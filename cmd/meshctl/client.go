package main

// Plumbing shared by the commands that talk to a running meshd over its
// control socket: the --socket and --json flags, the client, timeouts,
// Ctrl-C, and shell completion of peer names.

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/control"
)

// requestTimeout bounds one request of a non-streaming command. The daemon
// bounds its own answers at control.DefaultRequestTimeout; this is a little
// longer so its timeout error, which says more, arrives first.
const requestTimeout = control.DefaultRequestTimeout + 5*time.Second

// onlineFlags are the flags every online command has.
type onlineFlags struct {
	socket string
	config string
	json   bool
}

// addOnlineFlags adds --socket, --config and --json to cmd. --socket and
// --config are persistent flags of the command, so "meshctl --socket PATH
// status" works too: cobra hands flags before the subcommand name to the
// subcommand. --config reads control.socket from meshd's configuration, so
// an install with a socket of its own needs no --socket on every call (the
// systemd unit's ExecReload uses it).
func addOnlineFlags(cmd *cobra.Command, f *onlineFlags) {
	cmd.PersistentFlags().StringVar(&f.socket, "socket", control.DefaultSocket, "meshd's control socket")
	cmd.PersistentFlags().StringVar(&f.config, "config", "", "meshd's configuration file: use its control.socket (unless --socket is given)")
	cmd.Flags().BoolVar(&f.json, "json", false, `print JSON (each document has "schema_version") instead of text`)
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if f.config != "" && !c.Flags().Changed("socket") {
			cfg, err := config.Load(f.config, config.WithFileChecks(false))
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--config: %w", err)}
			}
			if cfg.Control.Socket != "" {
				f.socket = cfg.Control.Socket
			}
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

func (f *onlineFlags) client() *control.Client { return control.NewClient(f.socket) }

// interruptible returns a context that ends on Ctrl-C or SIGTERM, so that
// streams stop cleanly.
func interruptible(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}

// withRequestTimeout is interruptible with requestTimeout on top.
func withRequestTimeout(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx, stop := interruptible(cmd)
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	return ctx, func() { cancel(); stop() }
}

// onlineUsage is an invalid-invocation error (exit code 2).
func onlineUsage(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// completePeerNames completes a peer name from the running daemon; with no
// daemon it offers nothing (and no file names).
func completePeerNames(f *onlineFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 { // the peer is the only positional argument
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
		defer cancel()
		peers, err := f.client().Peers(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		names := make([]cobra.Completion, 0, len(peers))
		for _, p := range peers {
			names = append(names, cobra.CompletionWithDesc(p.Name, addrString(p.Address)))
		}
		slices.Sort(names)
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
