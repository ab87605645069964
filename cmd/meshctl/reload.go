package main

// meshctl reload: make meshd re-read its configuration, like SIGHUP, and say
// what changed.

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/control"
)

func init() { register(newReloadCmd) }

func newReloadCmd() *cobra.Command {
	var f onlineFlags
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make meshd re-read its configuration (a bad file changes nothing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := withRequestTimeout(cmd)
			defer cancel()
			res, err := f.client().Reload(ctx)
			if res != nil && f.json {
				if perr := printJSONDoc(cmd.OutOrStdout(), res); perr != nil {
					return perr
				}
			}
			if err != nil {
				if errors.Is(err, control.ErrReloadFailed) {
					return &exitError{code: 1, err: err}
				}
				return err
			}
			if f.json {
				return nil
			}
			return renderReload(cmd.OutOrStdout(), res)
		},
	}
	addOnlineFlags(cmd, &f)
	return cmd
}

func renderReload(w io.Writer, res *control.ReloadResult) error {
	if len(res.Changed) == 0 && len(res.NeedsRestart) == 0 {
		_, err := fmt.Fprintln(w, "reloaded: nothing changed")
		return err
	}
	if len(res.Changed) > 0 {
		fmt.Fprintf(w, "reloaded: applied %s\n", strings.Join(res.Changed, ", "))
	} else {
		fmt.Fprintln(w, "reloaded: nothing could be applied live")
	}
	if len(res.NeedsRestart) > 0 {
		fmt.Fprintf(w, "needs a restart to take effect: %s (systemctl restart meshd)\n", strings.Join(res.NeedsRestart, ", "))
	}
	return nil
}
