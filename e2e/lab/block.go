//go:build e2e

package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
)

// Block is a firewall rule that drops every packet between two hosts'
// addresses (IPv4, and IPv6 where both have it), both ways, in a lab bridge
// (a cable cut for one path only).
type Block struct {
	ns    *Namespace
	table string
	pairs [][2]netip.Addr

	mu      sync.Mutex
	removed bool
}

// BlockPath blocks the direct path between hosts a and b and leaves every
// other path alone (their coordinators, TURN servers, other peers): for two
// hosts of one site it drops their traffic in the site's LAN bridge (by LAN
// address), otherwise in the backbone bridge between their public
// addresses, that is between their sites' WAN addresses. Where both hosts
// have IPv6, their IPv6 path (global addresses, not translated) is blocked
// too; between an IPv4-only and an IPv6-only host there is no direct path
// to block. A readdress after the block is not followed.
func (l *Lab) BlockPath(a, b *Host) (*Block, error) {
	var pairs [][2]netip.Addr
	ns := l.backbone
	if a.site != nil && a.site == b.site {
		ns = a.site.router.Namespace
		if a.HasIPv4() && b.HasIPv4() {
			pairs = append(pairs, [2]netip.Addr{a.IP(), b.IP()})
		}
	} else if a.HasIPv4() && b.HasIPv4() {
		pairs = append(pairs, [2]netip.Addr{a.PublicIP(), b.PublicIP()})
	}
	if a6, b6 := a.IP6(), b.IP6(); a6.IsValid() && b6.IsValid() {
		pairs = append(pairs, [2]netip.Addr{a6, b6})
	}
	if len(pairs) == 0 {
		return nil, fmt.Errorf("%w: block %s <-> %s: no address family in common", ErrBadOption, a.Name(), b.Name())
	}
	return l.block(ns, pairs)
}

// BlockAddrs drops every packet between backbone addresses a and b (both
// IPv4 or both IPv6) in the backbone bridge.
func (l *Lab) BlockAddrs(a, b netip.Addr) (*Block, error) {
	return l.block(l.backbone, [][2]netip.Addr{{a, b}})
}

func (l *Lab) block(ns *Namespace, pairs [][2]netip.Addr) (*Block, error) {
	var rules4, rules6 strings.Builder
	for _, p := range pairs {
		a, b := p[0], p[1]
		switch {
		case a.Is4() && b.Is4():
			fmt.Fprintf(&rules4, "\t\tip saddr %[1]s ip daddr %[2]s counter drop\n\t\tip saddr %[2]s ip daddr %[1]s counter drop\n", a, b)
		case a.Is6() && !a.Is4In6() && b.Is6() && !b.Is4In6():
			fmt.Fprintf(&rules6, "\t\tip6 saddr %[1]s ip6 daddr %[2]s counter drop\n\t\tip6 saddr %[2]s ip6 daddr %[1]s counter drop\n", a, b)
		default:
			return nil, fmt.Errorf("%w: block %v <-> %v: two addresses of one family", ErrBadOption, a, b)
		}
	}
	l.mu.Lock()
	l.blockSeq++
	table := fmt.Sprintf("labblock%d", l.blockSeq)
	l.mu.Unlock()
	// A bridge-family table sees the frames the bridge handles without
	// br_netfilter. IPv4 is dropped where the bridge forwards it from port
	// to port. IPv6 is dropped as it enters the bridge (prerouting): from a
	// public host to a site's LAN it goes through the backbone's router
	// (BackboneGateway6), so it is addressed to the bridge itself, which a
	// forward hook would miss. ("fwd" is an nft keyword; hence the chain
	// names.)
	script := fmt.Sprintf(`table bridge %s {
	chain forward_f {
		type filter hook forward priority 0; policy accept;
%s	}
	chain prerouting_f {
		type filter hook prerouting priority 0; policy accept;
%s	}
}
`, table, rules4.String(), rules6.String())
	if _, err := ns.runStdin(script, "nft", "-f", "-"); err != nil {
		return nil, err
	}
	l.log.Info("path blocked", "netns", ns.name, "pairs", pairs, "table", table)
	return &Block{ns: ns, table: table, pairs: pairs}, nil
}

// Remove lifts the block; it is idempotent.
func (b *Block) Remove() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.removed {
		return nil
	}
	if _, err := b.ns.run("nft", "delete", "table", "bridge", b.table); err != nil {
		return err
	}
	b.removed = true
	b.ns.lab.log.Info("path unblocked", "netns", b.ns.name, "pairs", b.pairs)
	return nil
}
