package main

// meshctl status: the node's summary, readable in two seconds, then the peer
// table.

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/control"
)

func init() { register(newStatusCmd) }

func newStatusCmd() *cobra.Command {
	var f onlineFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this node, its coordinator, NAT, certificate and peers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := withRequestTimeout(cmd)
			defer cancel()
			st, err := f.client().Status(ctx)
			if err != nil {
				return err
			}
			if f.json {
				return printJSONDoc(cmd.OutOrStdout(), st)
			}
			return renderStatus(cmd.OutOrStdout(), st, time.Now())
		},
	}
	addOnlineFlags(cmd, &f)
	return cmd
}

// renderStatus writes the summary block, then the peer table.
func renderStatus(w io.Writer, st *control.Status, now time.Time) error {
	if c := st.Coordinator.Conflict; c != "" {
		// First: while it lasts this node is off the mesh's control plane,
		// and only the operator can fix it.
		fmt.Fprintf(w, "WARNING: %s\n         (a cloned machine? each host needs its own key and certificate: meshctl cert request on one of the two, meshctl cert sign on the CA machine)\n\n",
			strings.ToUpper(c[:1])+c[1:])
	}
	if st.Cert.Warning != "" {
		fmt.Fprintf(w, "WARNING: %s\n         (meshctl cert request on this node, meshctl cert sign on the CA machine)\n\n",
			strings.ToUpper(st.Cert.Warning[:1])+st.Cert.Warning[1:])
	}
	tw := newTable(w)
	row(tw, "node", joinNonEmpty("  ", st.Name, joinNonEmpty(", ", addrString(st.Address), addrString(st.Address6))))
	row(tw, "meshd", joinNonEmpty(", ", st.Version, "up "+humanSpan(st.Uptime, true)))
	row(tw, "coordinator", coordinatorLine(st.Coordinator, now))
	nat := natWords(st.NAT)
	if len(st.PublicEndpoints) > 0 {
		eps := make([]string, len(st.PublicEndpoints))
		for i, e := range st.PublicEndpoints {
			eps[i] = e.String()
		}
		nat += "; public " + strings.Join(eps, ", ")
	}
	row(tw, "NAT", nat)
	row(tw, "certificate", certLine(st.Cert, now))
	pc := st.PeerCounts
	row(tw, "peers", fmt.Sprintf("%d online / %d direct / %d relay (%d known)", pc.Online, pc.Direct, pc.Relay, pc.Total))
	if st.DNS != nil {
		row(tw, "names", dnsLine(st.DNS))
	}
	if len(st.Drops) > 0 {
		var drops []string
		for _, reason := range slices.Sorted(maps.Keys(st.Drops)) {
			drops = append(drops, fmt.Sprintf("%s %d", reason, st.Drops[reason]))
		}
		row(tw, "drops", strings.Join(drops, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Peers) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	sortPeers(st.Peers, "name")
	return renderPeerTable(w, st.Peers, now)
}

func coordinatorLine(c control.CoordinatorInfo, now time.Time) string {
	who := c.Name
	if c.Address != "" {
		who = joinNonEmpty(" ", c.Name, "("+c.Address+")")
		if c.Name == "" {
			who = c.Address
		}
	}
	var s string
	if c.Conflict != "" {
		// LastError says the same thing less plainly.
		return "REFUSED: " + c.Conflict
	}
	switch c.State {
	case control.SessionConnected:
		s = joinNonEmpty(" ", "connected to", who)
		if !c.Since.IsZero() {
			s += " for " + humanSpan(now.Sub(c.Since), true)
		}
		return s
	case control.SessionConnecting:
		s = joinNonEmpty(" ", "connecting to", who)
	case control.SessionDisconnected, "":
		s = "DISCONNECTED"
		if !c.Since.IsZero() {
			s += " since " + humanAgo(c.Since, now)
		}
	default:
		s = joinNonEmpty(" ", string(c.State), who)
	}
	if c.LastError != "" {
		s += " (last error: " + c.LastError + ")"
	}
	return s
}

func certLine(c control.CertInfo, now time.Time) string {
	if c.NotAfter.IsZero() {
		return "unknown expiry"
	}
	date := c.NotAfter.UTC().Format(time.DateOnly)
	switch {
	case !now.Before(c.NotAfter):
		return "EXPIRED on " + date
	case c.Warning != "" && c.DaysLeft < 1:
		return fmt.Sprintf("EXPIRES IN %s (%s)", strings.ToUpper(c.NotAfter.Sub(now).Round(time.Minute).String()), date)
	case c.Warning != "":
		return fmt.Sprintf("EXPIRES IN %s (%s)", strings.ToUpper(plural(c.DaysLeft, "day")), date)
	}
	return fmt.Sprintf("valid until %s (%s left)", date, plural(c.DaysLeft, "day"))
}

// plural is "1 day" or "3 days".
func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
