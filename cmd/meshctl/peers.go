package main

// meshctl peers: the peer table with sorting and filters, and --why PEER:
// the candidate pairs and NAT behaviour behind one link's path.

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/control"
)

func init() { register(newPeersCmd) }

// peerSorts are the --sort keys.
var peerSorts = []string{"name", "rtt", "rx", "tx", "state"}

type peersArgs struct {
	onlineFlags
	sort   string
	online bool
	relay  bool
	direct bool
	why    string
}

func newPeersCmd() *cobra.Command {
	var a peersArgs
	cmd := &cobra.Command{
		Use:   "peers [--sort name|rtt|rx|tx|state] [--online] [--direct] [--relay] | --why PEER",
		Short: "List peers and their paths, or explain one peer's path",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(peerSorts, a.sort) {
				return onlineUsage("--sort %q: want one of name, rtt, rx, tx, state", a.sort)
			}
			ctx, cancel := withRequestTimeout(cmd)
			defer cancel()
			w := cmd.OutOrStdout()
			c := a.client()
			if a.why != "" {
				why, err := c.PeerWhy(ctx, a.why)
				if err != nil {
					return err
				}
				if a.json {
					return printJSONDoc(w, why)
				}
				return renderPeerWhy(w, why)
			}
			peers, err := c.Peers(ctx)
			if err != nil {
				return err
			}
			peers = filterPeers(peers, a)
			sortPeers(peers, a.sort)
			if a.json {
				return printJSONDoc(w, &control.PeerList{SchemaVersion: control.SchemaVersion, Peers: peers})
			}
			if len(peers) == 0 {
				if a.online || a.relay || a.direct {
					_, err := fmt.Fprintln(w, "no peers match")
					return err
				}
				_, err := fmt.Fprintln(w, "no peers yet")
				return err
			}
			return renderPeerTable(w, peers, time.Now())
		},
	}
	addOnlineFlags(cmd, &a.onlineFlags)
	fl := cmd.Flags()
	fl.StringVar(&a.sort, "sort", "name", "order by name, rtt, rx, tx (most first) or state (online, direct first)")
	fl.BoolVar(&a.online, "online", false, "only peers that are up")
	fl.BoolVar(&a.direct, "direct", false, "only peers reached directly")
	fl.BoolVar(&a.relay, "relay", false, "only peers reached through a relay")
	fl.StringVar(&a.why, "why", "", "explain the path to `PEER`: candidate pairs and NAT behaviour")
	_ = cmd.RegisterFlagCompletionFunc("sort", cobra.FixedCompletions(peerSorts, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("why", completePeerNames(&a.onlineFlags))
	return cmd
}

// filterPeers keeps the peers the filters ask for. --direct and --relay
// together mean either path.
func filterPeers(peers []control.Peer, a peersArgs) []control.Peer {
	return slices.DeleteFunc(peers, func(p control.Peer) bool {
		if (a.online || a.direct || a.relay) && !p.Online {
			return true
		}
		if a.direct || a.relay {
			ok := (a.direct && p.Path == control.PathDirect) || (a.relay && p.Path == control.PathRelay)
			return !ok
		}
		return false
	})
}

// sortPeers orders peers by key (one of peerSorts), then by name.
func sortPeers(peers []control.Peer, key string) {
	slices.SortStableFunc(peers, func(a, b control.Peer) int {
		var c int
		switch key {
		case "rtt":
			// Unknown RTTs (offline peers) go last.
			c = cmp.Compare(rttKey(a.RTT), rttKey(b.RTT))
		case "rx":
			c = cmp.Compare(b.RxBytes, a.RxBytes)
		case "tx":
			c = cmp.Compare(b.TxBytes, a.TxBytes)
		case "state":
			c = cmp.Compare(stateRank(a), stateRank(b))
		}
		if c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
}

func rttKey(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Duration(1<<63 - 1)
	}
	return d
}

// stateRank orders online direct, online relay, other online, offline.
func stateRank(p control.Peer) int {
	switch {
	case p.Online && p.Path == control.PathDirect:
		return 0
	case p.Online && p.Path == control.PathRelay:
		return 1
	case p.Online:
		return 2
	}
	return 3
}

// renderPeerTable writes the peer table, then the last error of each peer
// that has one.
func renderPeerTable(w io.Writer, peers []control.Peer, now time.Time) error {
	// Subnet routers are worth a column, but only when there are any.
	withSubnets := slices.ContainsFunc(peers, func(p control.Peer) bool { return len(p.Subnets) > 0 })
	// So are IPv6 overlay addresses, when any peer has one.
	with6 := slices.ContainsFunc(peers, func(p control.Peer) bool { return p.Address6.IsValid() })
	tw := newTable(w)
	header := []string{"NAME", "ADDRESS", "STATE", "PATH", "VIA", "RTT", "RX", "TX", "HANDSHAKE"}
	if with6 {
		header = slices.Insert(header, 2, "ADDRESS6")
	}
	if withSubnets {
		header = append(header, "SUBNETS")
	}
	row(tw, header...)
	for _, p := range peers {
		cells := []string{p.Name, dash(addrString(p.Address)), peerState(p), peerPath(p), peerVia(p),
			humanRTT(p.RTT), humanBytes(p.RxBytes), humanBytes(p.TxBytes), humanAgo(p.LastHandshake, now)}
		if with6 {
			cells = slices.Insert(cells, 2, dash(addrString(p.Address6)))
		}
		if withSubnets {
			subnets := make([]string, len(p.Subnets))
			for i, s := range p.Subnets {
				subnets[i] = s.String()
			}
			cells = append(cells, dash(strings.Join(subnets, ",")))
		}
		row(tw, cells...)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var failing []control.Peer
	for _, p := range peers {
		if p.LastError != "" {
			failing = append(failing, p)
		}
	}
	if len(failing) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nlast errors:")
	tw = newTable(w)
	for _, p := range failing {
		row(tw, "  "+p.Name, p.LastError)
	}
	return tw.Flush()
}

// peerState is "up" for a working link, else the link's state ("checking",
// "failed", "idle") or "offline".
func peerState(p control.Peer) string {
	if p.Online {
		if p.State == "" {
			return string(control.LinkUp)
		}
		return string(p.State)
	}
	if p.State == "" || p.State == control.LinkUp {
		return "offline"
	}
	return string(p.State)
}

// peerPath is "direct (host/srflx)", "relay" or "-".
func peerPath(p control.Peer) string {
	if !p.Online || p.Path == control.PathNone {
		return "-"
	}
	s := string(p.Path)
	if p.Path == control.PathDirect && p.LocalCandidate != "" && p.RemoteCandidate != "" {
		s += fmt.Sprintf(" (%s/%s)", p.LocalCandidate, p.RemoteCandidate)
	}
	return s
}

// peerVia is the peer's endpoint for a direct path and the relay server for
// a relayed one, a member relay by its node name: "relay-1 (198.51.100.7:3479/udp)".
func peerVia(p control.Peer) string {
	if !p.Online {
		return "-"
	}
	if p.Path == control.PathRelay && p.RelayNode != "" {
		return p.RelayNode + " (" + dash(p.Relay) + ")"
	}
	if p.Path == control.PathRelay && p.Relay != "" {
		return p.Relay
	}
	return dash(addrPortString(p.Endpoint))
}

// renderPeerWhy writes the explanation of one link: state, NATs, candidate
// pairs, and the daemon's explanation in words.
func renderPeerWhy(w io.Writer, why *control.PeerWhy) error {
	tw := newTable(w)
	name := why.Peer
	if a := addrString(why.Address); a != "" {
		name += " (" + a + ")"
	}
	row(tw, "peer", name)
	path := "no path"
	if why.Path != control.PathNone {
		path = "path " + string(why.Path)
	}
	row(tw, "state", joinNonEmpty(", ", string(why.State), path))
	row(tw, "NAT here", natWords(why.LocalNAT))
	row(tw, "NAT at "+why.Peer, natWords(why.RemoteNAT))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(why.Pairs) == 0 {
		fmt.Fprintln(w, "no candidate pairs (no ICE exchange with this peer yet)")
	} else {
		tw = newTable(w)
		row(tw, "LOCAL", "REMOTE", "STATE", "NOMINATED", "RTT", "ERROR")
		for _, cp := range why.Pairs {
			nominated := "no"
			if cp.Nominated {
				nominated = "yes"
			}
			row(tw, candidateCell(cp.Local), candidateCell(cp.Remote), dash(cp.State), nominated,
				humanRTT(cp.RTT), dash(cp.LastError))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if why.Explanation != "" {
		fmt.Fprintf(w, "\nwhy: %s\n", why.Explanation)
	}
	return nil
}

func candidateCell(c control.Candidate) string {
	return dash(joinNonEmpty(" ", string(c.Type), c.Address))
}
