package main

// meshctl config: offline checks of meshd configuration files and the
// secrets they need. Nothing here talks to a daemon.

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/preflight"
)

func init() { register(newConfigCmd) }

// defaultConfigPath is where the packages install meshd's configuration.
const defaultConfigPath = "/etc/meshd/meshd.toml"

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check meshd configuration files and make the secrets they need (offline)",
	}
	cmd.AddCommand(newConfigCheckCmd(), newConfigGossipKeyCmd())
	return cmd
}

// configCheckArgs are the flags of "meshctl config check".
type configCheckArgs struct {
	skipFiles bool
}

func newConfigCheckCmd() *cobra.Command {
	var a configCheckArgs
	cmd := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Validate a configuration file and list every problem in it",
		Long: `Check parses and validates FILE (default ` + defaultConfigPath + `) and then runs
exactly the checks meshd runs at start and on reload: the key matches the
certificate, the certificate was issued by the CA in pki.ca, node.name is
the certificate's name, routes.advertise lies inside its subnets, the secret
files and the CRL can be used, the control group exists. It prints every
problem in the file, one per line as FILE:LINE:COL: KEY: MESSAGE, or the first
problem with what it names, in the words meshd would use, and exits 1;
otherwise it prints its warnings (inbound firewall without rules, secrets
others can read, a session_listen address this host does not have, an
expired certificate) and "FILE: ok". The files the configuration names must
be readable by the user running the check (run it as root, like meshd); use
--skip-files to check only the file itself, e.g. one meant for another machine.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := defaultConfigPath
			if len(args) == 1 {
				path = args[0]
			}
			return runConfigCheck(cmd.OutOrStdout(), path, a)
		},
	}
	cmd.Flags().BoolVar(&a.skipFiles, "skip-files", false, "do not check that referenced files exist and are readable")
	return cmd
}

func runConfigCheck(w io.Writer, path string, a configCheckArgs) error {
	cfg, err := config.Load(path, config.WithFileChecks(!a.skipFiles))
	if err == nil {
		var warnings []string
		if !a.skipFiles {
			// The same function meshd runs before it builds anything.
			r, perr := preflight.Run(cfg, preflight.Options{})
			if perr != nil {
				if _, werr := fmt.Fprintf(w, "%s: %v\n", path, perr); werr != nil {
					return werr
				}
				return &exitError{code: 1, err: fmt.Errorf("%s: 1 problem", path)}
			}
			warnings = r.Warnings
		}
		// Warnings (a secret others can read, ...) do not make the file wrong.
		for _, warn := range cfg.Warnings {
			if _, werr := fmt.Fprintf(w, "warning: %v\n", warn); werr != nil {
				return werr
			}
		}
		for _, warn := range warnings {
			if _, werr := fmt.Fprintf(w, "warning: %s: %s\n", path, warn); werr != nil {
				return werr
			}
		}
		_, werr := fmt.Fprintf(w, "%s: ok\n", path)
		return werr
	}
	var errs *config.Errors
	if !errors.As(err, &errs) {
		return &exitError{code: 1, err: err}
	}
	for _, e := range errs.List {
		if _, werr := fmt.Fprintln(w, e); werr != nil {
			return werr
		}
	}
	noun := "problems"
	if len(errs.List) == 1 {
		noun = "problem"
	}
	return &exitError{code: 1, err: fmt.Errorf("%s: %d %s", path, len(errs.List), noun)}
}

func newConfigGossipKeyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "gossip-key",
		Short: "Print a new random coordinator gossip key (base64, 32 bytes)",
		Long: `gossip-key prints a new AES-256 key for coordinator.gossip_key or the file
named by coordinator.gossip_key_file. Every coordinator of a mesh needs the
same key; keep it secret, e.g.:

  meshctl config gossip-key > /etc/meshd/gossip.key && chmod 600 /etc/meshd/gossip.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConfigGossipKey(cmd.OutOrStdout())
		},
	}
}

func runConfigGossipKey(w io.Writer) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("reading random bytes: %w", err)
	}
	_, err := fmt.Fprintln(w, base64.StdEncoding.EncodeToString(key))
	return err
}
