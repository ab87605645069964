// Command meshctl inspects and manages meshd: the offline CA and certificate
// commands, config checks, and (through the control socket) status, peers and
// ping. It formats what pki, config and control's client return; it never links
// the data plane (deps_test.go enforces that).
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// commands holds the constructors of the top-level subcommands; each
// subcommand's file registers itself in an init function so that the files stay
// independent of one another.
var commands []func() *cobra.Command

func register(newCmd func() *cobra.Command) { commands = append(commands, newCmd) }

// exitError carries a process exit code through cobra; the message is printed
// once by main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "meshctl",
		Short:         "Inspect and manage a meshd mesh",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, c := range commands {
		root.AddCommand(c())
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: err}
	})
	requireSubcommands(root)
	return root
}

// exitUsage is the exit code of a command line meshctl does not understand
// (unknown command or flag), as for meshd.
const exitUsage = 2

// requireSubcommands makes every command that only groups subcommands
// (meshctl itself, ca, cert, config, ...) refuse an unknown subcommand with
// exit code 2 instead of printing help and exiting 0, so a typo in a
// script fails. Without arguments such a command still prints its help.
func requireSubcommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		requireSubcommands(c)
	}
	if !cmd.HasSubCommands() || cmd.Runnable() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if c.SuggestionsMinimumDistance <= 0 {
			c.SuggestionsMinimumDistance = 2
		}
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf("; did you mean %q?", s[0])
		}
		return &exitError{code: exitUsage, err: fmt.Errorf("%s (see %s --help)", msg, c.CommandPath())}
	}
}

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "meshctl:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(1)
}
