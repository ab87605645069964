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
	return root
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
