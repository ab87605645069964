//go:build e2e && bench

package bench

// Is a tunnel's bulk data on the wire as UDP GSO super-datagrams? A GSO
// datagram crosses a veth and a bridge unsegmented, so the backbone bridge
// sees it as one frame far above the 1500-byte MTU. Two named nft counters
// per path, in a bridge-family table of the backbone, count what the path's
// sender puts on the wire: everything, and frames above gsoThreshold.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshd/meshd/e2e/lab"
)

// gsoTable is the bench's nft table in the backbone (the lab's own tables
// are called natlab, labfw and labblock<N>).
const gsoTable = "meshdbench"

// gsoThreshold is the frame length above which a frame cannot be one
// datagram of a 1500-byte link: it is a GSO (or, for TCP, TSO) batch.
const gsoThreshold = 1600

// wireLeg is traffic from one host to another, as an nft match.
type wireLeg struct {
	what  string // for the report: "wga → wgb, UDP"
	match string // nft match, e.g. "ip saddr A ip daddr B ip protocol udp"
}

// legMatch is the nft match of traffic of proto from a to b (one family).
func legMatch(a, b netip.Addr, proto string) string {
	if a.Is4() {
		return fmt.Sprintf("ip saddr %v ip daddr %v ip protocol %s", a, b, proto)
	}
	return fmt.Sprintf("ip6 saddr %v ip6 daddr %v meta l4proto %s", a, b, proto)
}

// legKey names leg i of column c in the counter names ([a-z0-9]: the
// names split at the one underscore).
func legKey(c *column, i int) string { return fmt.Sprintf("%s%d", c.key, i) }

// wireCount is one leg's traffic: all of it, and the part in frames above
// gsoThreshold.
type wireCount struct {
	packets, bytes       uint64
	bigPackets, bigBytes uint64
}

// installCounters adds the counter table for every leg of every column.
func installCounters(l *lab.Lab, cols []*column, dir string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "table bridge %s {\n", gsoTable)
	for _, c := range cols {
		for i := range c.legs {
			fmt.Fprintf(&b, "\tcounter %[1]s_all {}\n\tcounter %[1]s_big {}\n", legKey(c, i))
		}
	}
	// Priority -10: before the lab's path blocks (priority 0) drop anything.
	b.WriteString("\tchain forward_f {\n\t\ttype filter hook forward priority -10; policy accept;\n")
	for _, c := range cols {
		for i, leg := range c.legs {
			fmt.Fprintf(&b, "\t\t%s counter name %q\n", leg.match, legKey(c, i)+"_all")
			fmt.Fprintf(&b, "\t\t%s meta length > %d counter name %q\n", leg.match, gsoThreshold, legKey(c, i)+"_big")
		}
	}
	b.WriteString("\t}\n}\n")
	return nftBackbone(l, filepath.Join(dir, "gso.nft"), b.String())
}

// nftBackbone loads an nft script into the backbone bridge's namespace.
// The script goes through a file: Namespace.Run has no stdin.
func nftBackbone(l *lab.Lab, file, script string) error {
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := l.Backbone().Run(ctx, "nft", "-f", file)
	return err
}

// blockUDP drops all UDP to and from c's two hosts in the backbone bridge
// (to each other, to the coordinator and its relay ports), as a network
// that passes only TCP does.
func blockUDP(l *lab.Lab, c *column, dir string) error {
	var drops []string
	for _, h := range []*lab.Host{c.src, c.dst} {
		for _, a := range h.IPs() {
			fam := map[bool]string{true: "ip", false: "ip6"}[a.Is4()]
			drops = append(drops, fmt.Sprintf("%s saddr %v meta l4proto udp", fam, a), fmt.Sprintf("%s daddr %v meta l4proto udp", fam, a))
		}
	}
	return dropInBackbone(l, c, dir, drops)
}

// blockTURNTCP drops TCP from c's two hosts (IPv4) to the TURN-over-TCP
// port at turn, so that the pair's only allocations are over UDP.
func blockTURNTCP(l *lab.Lab, c *column, dir string, turn netip.AddrPort) error {
	var drops []string
	for _, h := range []*lab.Host{c.src, c.dst} {
		drops = append(drops, fmt.Sprintf("ip saddr %v ip daddr %v tcp dport %d", h.IP(), turn.Addr(), turn.Port()))
	}
	return dropInBackbone(l, c, dir, drops)
}

// dropInBackbone drops what each nft match selects in the backbone bridge,
// in a table of c's own that goes with the column's cleanup.
func dropInBackbone(l *lab.Lab, c *column, dir string, matches []string) error {
	table := gsoTable + c.key
	var b strings.Builder
	fmt.Fprintf(&b, "table bridge %s {\n\tchain forward_f {\n\t\ttype filter hook forward priority 0; policy accept;\n", table)
	for _, m := range matches {
		fmt.Fprintf(&b, "\t\t%s counter drop\n", m)
	}
	b.WriteString("\t}\n}\n")
	if err := nftBackbone(l, filepath.Join(dir, table+".nft"), b.String()); err != nil {
		return err
	}
	c.cleanup = append(c.cleanup, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = l.Backbone().Run(ctx, "nft", "delete", "table", "bridge", table)
	})
	return nil
}

// readCounters returns every path's counts, by column key.
func readCounters(l *lab.Lab) (map[string]wireCount, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := l.Backbone().Output(ctx, "nft", "-j", "list", "counters", "table", "bridge", gsoTable)
	if err != nil {
		return nil, err
	}
	return parseCounters(out)
}

// parseCounters reads `nft -j list counters` output.
func parseCounters(out string) (map[string]wireCount, error) {
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
				Bytes   uint64 `json:"bytes"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("nft -j list counters: %w", err)
	}
	counts := map[string]wireCount{}
	for _, e := range doc.Nftables {
		if e.Counter == nil {
			continue
		}
		key, kind, ok := strings.Cut(e.Counter.Name, "_")
		if !ok {
			continue
		}
		w := counts[key]
		switch kind {
		case "all":
			w.packets, w.bytes = e.Counter.Packets, e.Counter.Bytes
		case "big":
			w.bigPackets, w.bigBytes = e.Counter.Packets, e.Counter.Bytes
		default:
			continue
		}
		counts[key] = w
	}
	return counts, nil
}
