//go:build e2e

package lab

import (
	"fmt"
	"net/netip"
	"sync"
)

// Block is a firewall rule that drops every IPv4 packet between two
// addresses, both ways, in a lab bridge (a cable cut for one path only).
type Block struct {
	ns    *Namespace
	table string
	a, b  netip.Addr

	mu      sync.Mutex
	removed bool
}

// BlockPath blocks the direct path between hosts a and b and leaves every
// other path alone (their coordinators, TURN servers, other peers): for two
// hosts of one site it drops their traffic in the site's LAN bridge (by LAN
// address), otherwise in the backbone bridge between their public
// addresses, that is between their sites' WAN addresses. A readdress after
// the block is not followed.
func (l *Lab) BlockPath(a, b *Host) (*Block, error) {
	if a.site != nil && a.site == b.site {
		return l.block(a.site.router.Namespace, a.IP(), b.IP())
	}
	return l.block(l.backbone, a.PublicIP(), b.PublicIP())
}

// BlockAddrs drops every IPv4 packet between backbone addresses a and b in
// the backbone bridge.
func (l *Lab) BlockAddrs(a, b netip.Addr) (*Block, error) {
	return l.block(l.backbone, a, b)
}

func (l *Lab) block(ns *Namespace, a, b netip.Addr) (*Block, error) {
	if !a.Is4() || !b.Is4() {
		return nil, fmt.Errorf("%w: block %v <-> %v: IPv4 addresses only", ErrBadOption, a, b)
	}
	l.mu.Lock()
	l.blockSeq++
	table := fmt.Sprintf("labblock%d", l.blockSeq)
	l.mu.Unlock()
	// A bridge-family table sees the frames the bridge forwards without
	// br_netfilter. ("fwd" is an nft keyword; the chain is called forward_f.)
	script := fmt.Sprintf(`table bridge %[1]s {
	chain forward_f {
		type filter hook forward priority 0; policy accept;
		ip saddr %[2]s ip daddr %[3]s counter drop
		ip saddr %[3]s ip daddr %[2]s counter drop
	}
}
`, table, a, b)
	if _, err := ns.runStdin(script, "nft", "-f", "-"); err != nil {
		return nil, err
	}
	l.log.Info("path blocked", "netns", ns.name, "a", a, "b", b, "table", table)
	return &Block{ns: ns, table: table, a: a, b: b}, nil
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
	b.ns.lab.log.Info("path unblocked", "netns", b.ns.name, "a", b.a, "b", b.b)
	return nil
}
