package main

// meshctl netcheck: what the network around this node allows, in words.

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/control"
)

func init() { register(newNetcheckCmd) }

func newNetcheckCmd() *cobra.Command {
	var f onlineFlags
	cmd := &cobra.Command{
		Use:   "netcheck",
		Short: "Probe STUN servers, coordinators and relays and report what the network allows",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := withRequestTimeout(cmd)
			defer cancel()
			nc, err := f.client().Netcheck(ctx)
			if err != nil {
				return err
			}
			if f.json {
				return printJSONDoc(cmd.OutOrStdout(), nc)
			}
			return renderNetcheck(cmd.OutOrStdout(), nc)
		},
	}
	addOnlineFlags(cmd, &f)
	return cmd
}

func renderNetcheck(w io.Writer, nc *control.Netcheck) error {
	tw := newTable(w)
	udp := "blocked: no STUN server answered over UDP"
	if nc.UDP {
		udp = "works"
	}
	row(tw, "UDP", udp)
	label := "public address"
	for _, p := range nc.STUN {
		var s string
		if p.Error != "" {
			s = fmt.Sprintf("%s: %s", p.Server, p.Error)
		} else {
			s = fmt.Sprintf("%s (seen by %s in %s)", dash(addrPortString(p.Reflexive)), p.Server, humanRTT(p.Latency))
		}
		row(tw, label, s)
		label = ""
	}
	if len(nc.STUN) == 0 {
		row(tw, label, "no STUN servers configured")
	}
	mapping := "same for every destination"
	switch {
	case nc.MappingVariesByDest:
		mapping = "varies by destination (hard NAT)"
	case nc.NAT == control.NATUnknown:
		// One destination answered: nothing to compare it with.
		mapping = "unknown (fewer than two STUN destinations answered)"
	}
	if nc.UDP {
		row(tw, "port mapping", mapping)
	}
	row(tw, "NAT", natWords(nc.NAT))
	for _, kind := range []string{control.ServerCoordinator, control.ServerRelay} {
		label := kind + "s"
		for _, l := range nc.Latencies {
			if l.Kind != kind {
				continue
			}
			name := joinNonEmpty(" ", l.Name, l.Address)
			if l.Name != "" && l.Address != "" {
				name = l.Name + " (" + l.Address + ")"
			}
			if l.Error != "" {
				row(tw, label, name+": "+l.Error)
			} else {
				row(tw, label, name+" in "+humanRTT(l.Latency))
			}
			label = ""
		}
	}
	label = "interfaces"
	for _, ifc := range nc.Interfaces {
		use := "used"
		if !ifc.Used {
			use = "skipped"
		}
		row(tw, label, fmt.Sprintf("%s %s: %s", ifc.Name, use, ifc.Reason))
		label = ""
	}
	v6 := ""
	switch {
	case !nc.IPv6.Enabled && nc.IPv6.Reason != "":
		v6 = "off: " + nc.IPv6.Reason
	case !nc.IPv6.Enabled: // a daemon that does not report IPv6
	case nc.IPv6.STUN:
		v6 = "on; a STUN server answered over IPv6"
	default:
		v6 = "on; no STUN server answered over IPv6"
	}
	if v6 != "" {
		row(tw, "ipv6", v6)
	}
	for _, a := range nc.IPv6.Addresses {
		use := "offered"
		if !a.Used {
			use = "skipped: " + a.Reason
		}
		row(tw, "", fmt.Sprintf("%s on %s %s", a.Address, a.Interface, use))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if nc.Verdict != "" {
		_, err := fmt.Fprintf(w, "\n%s\n", nc.Verdict)
		return err
	}
	return nil
}
