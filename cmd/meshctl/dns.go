package main

// meshctl dns: the mesh's names. status shows the resolver (domain,
// address, systemd-resolved, names served), query asks it one question,
// hosts prints /etc/hosts lines for hosts that use neither resolved nor a
// resolver pointed at meshd.

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/control"
)

func init() { register(newDNSCmd) }

func newDNSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dns",
		Short: "The mesh's names: resolver status, queries, /etc/hosts lines",
		Long: `meshd answers for <node>.<mesh domain> on its overlay address, port 53.
With systemd-resolved it routes only the mesh domain there (split DNS on the
TUN link); it never writes resolv.conf.`,
	}
	cmd.AddCommand(newDNSStatusCmd(), newDNSQueryCmd(), newDNSHostsCmd())
	return cmd
}

func newDNSStatusCmd() *cobra.Command {
	return newDNSViewCmd("status", "Show the domain, the resolver's address, systemd-resolved and the names served", renderDNSStatus)
}

// newDNSViewCmd returns a command that fetches meshd's DNS status and
// prints it with render, or as JSON with --json.
func newDNSViewCmd(use, short string, render func(io.Writer, *control.DNSStatus) error) *cobra.Command {
	var a onlineFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := withRequestTimeout(cmd)
			defer cancel()
			st, err := a.client().DNS(ctx)
			if err != nil {
				return err
			}
			if a.json {
				return printJSONDoc(cmd.OutOrStdout(), st)
			}
			return render(cmd.OutOrStdout(), st)
		},
	}
	addOnlineFlags(cmd, &a)
	return cmd
}

func renderDNSStatus(w io.Writer, st *control.DNSStatus) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "domain:\t%s\n", st.Domain)
	if st.Enabled {
		var ls []string
		for _, l := range st.Listen {
			ls = append(ls, l.String())
		}
		fmt.Fprintf(tw, "resolver:\t%s (UDP and TCP)\n", strings.Join(ls, ", "))
	} else {
		fmt.Fprintf(tw, "resolver:\toff (%s)\n", st.Error)
	}
	switch {
	case st.Resolved.Configured:
		fmt.Fprintf(tw, "systemd-resolved:\tconfigured on %s (~%s)\n", st.Resolved.Link, st.Domain)
	default:
		fmt.Fprintf(tw, "systemd-resolved:\tnot configured (%s)\n", st.Resolved.Error)
	}
	if len(st.Forward) > 0 {
		var fs []string
		for _, f := range st.Forward {
			fs = append(fs, f.String())
		}
		fmt.Fprintf(tw, "forward:\t%s\n", strings.Join(fs, ", "))
	} else {
		fmt.Fprintf(tw, "forward:\tnone (other names are refused)\n")
	}
	fmt.Fprintf(tw, "queries:\t%d (%d NXDOMAIN, %d refused, %d forwarded)\n", st.Queries, st.NXDomain, st.Refused, st.Forwarded)
	if st.Hint != "" {
		fmt.Fprintf(tw, "hint:\t%s\n", st.Hint)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Names) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "NAME\tADDRESSES")
	for _, n := range st.Names {
		fmt.Fprintf(tw, "%s\t%s\n", n.FQDN, joinAddrs(n))
	}
	return tw.Flush()
}

// nodeOfName returns the node name a peer argument stands for: its name
// in the mesh domain ("nas.mesh.internal", any case, trailing dot or not)
// becomes "nas"; anything else is returned as it is. d may be nil (a meshd
// without names).
func nodeOfName(arg string, d *control.DNSSummary) string {
	if d == nil || d.Domain == "" {
		return arg
	}
	s := strings.ToLower(strings.TrimSuffix(arg, "."))
	if node, ok := strings.CutSuffix(s, "."+d.Domain); ok && node != "" {
		return node
	}
	return arg
}

// dnsLine is the "names" row of meshctl status.
func dnsLine(d *control.DNSSummary) string {
	if len(d.Listen) == 0 {
		return joinNonEmpty("; ", "*."+d.Domain, d.Hint)
	}
	s := fmt.Sprintf("*.%s on %s", d.Domain, d.Listen[0])
	if d.ResolvedConfigured {
		return s + ", via systemd-resolved"
	}
	return s + "; not in the host's resolver: " + d.Hint
}

func joinAddrs(n control.DNSName) string {
	var as []string
	for _, a := range n.Addrs {
		as = append(as, a.String())
	}
	return strings.Join(as, " ")
}

type dnsQueryArgs struct {
	onlineFlags
	qtype string
}

func newDNSQueryCmd() *cobra.Command {
	var a dnsQueryArgs
	cmd := &cobra.Command{
		Use:   "query NAME [--type A|AAAA|PTR|...]",
		Short: "Ask meshd's resolver for NAME (a node name, its FQDN, or an address with --type PTR)",
		Long: `Ask meshd's resolver the question a stub resolver would, without
forwarding. Exits 1 when the answer is not NOERROR with records.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := withRequestTimeout(cmd)
			defer cancel()
			ans, err := a.client().DNSQuery(ctx, args[0], a.qtype)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if a.json {
				if err := printJSONDoc(w, ans); err != nil {
					return err
				}
			} else {
				tw := newTable(w)
				for _, r := range ans.Answers {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", r.Name, r.TTL, r.Type, strings.TrimSpace(r.Value))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if ans.Rcode != "NOERROR" || len(ans.Answers) == 0 {
				reason := ans.Rcode
				if reason == "NOERROR" {
					reason = "no " + ans.Type + " record"
				}
				return &exitError{code: 1, err: fmt.Errorf("%s: %s", ans.Name, reason)}
			}
			return nil
		},
	}
	addOnlineFlags(cmd, &a.onlineFlags)
	cmd.Flags().StringVar(&a.qtype, "type", "A", "record type: A, AAAA, PTR, ...")
	return cmd
}

func newDNSHostsCmd() *cobra.Command {
	return newDNSViewCmd("hosts", "Print /etc/hosts lines for the names served now (for hosts without a resolver pointed at meshd)", renderDNSHosts)
}

// renderDNSHosts writes /etc/hosts lines for the names st serves.
func renderDNSHosts(w io.Writer, st *control.DNSStatus) error {
	if len(st.Names) == 0 {
		return errors.New("meshd serves no names now (meshctl dns status says why)")
	}
	fmt.Fprintf(w, "# meshd: the mesh's names under %s; they change with the mesh, so regenerate these lines\n", st.Domain)
	for _, n := range st.Names {
		for _, a := range n.Addrs {
			if _, err := fmt.Fprintf(w, "%s\t%s %s\n", a, n.FQDN, n.Node); err != nil {
				return err
			}
		}
	}
	return nil
}
