package relay

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// policyRefresh is how long the vouched and own address lists are trusted.
const policyRefresh = time.Second

// policy decides which peers the relay reaches. Safe for concurrent use:
// pion calls it from its listener goroutine and every relay socket.
type policy struct {
	// Immutable after newPolicy.
	o      *Options
	denied *atomic.Uint64

	// mu guards the following.
	mu      sync.Mutex
	sources map[netip.Addr]int // source IPs of live allocations -> count
	members map[string]int     // allocations per member name
	total   int                // allocations held
	vouched map[netip.Addr]bool
	own     map[netip.Addr]bool
	readAt  time.Time
}

func newPolicy(o *Options, denied *atomic.Uint64) *policy {
	return &policy{o: o, denied: denied, sources: map[netip.Addr]int{}, members: map[string]int{}}
}

// track counts an allocation of member user from src (+1 made, -1 gone).
func (p *policy) track(src net.Addr, user string, d int) {
	ap, ok := addrPortOf(src)
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		if n := p.sources[ap.Addr()] + d; n > 0 {
			p.sources[ap.Addr()] = n
		} else {
			delete(p.sources, ap.Addr())
		}
	}
	p.total = max(p.total+d, 0)
	if n := p.members[user] + d; n > 0 {
		p.members[user] = n
	} else {
		delete(p.members, user)
	}
}

// room reports whether user may make one more allocation: fewer than
// total held in all and fewer than perMember by user. pion may admit two
// racing requests past a full count by one; the cap is a guard against
// swamping, not an exact count.
func (p *policy) room(user string, total, perMember int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total < total && p.members[user] < perMember
}

func (p *policy) allocations() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// special reports addresses that are never a peer.
func special(a netip.Addr) bool {
	return !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsLinkLocalMulticast() || (a.Is4() && a.As4()[0] >= 240) || (a.Is4() && a.As4()[0] == 0)
}

// refreshLocked reloads the vouched and own address lists when stale.
func (p *policy) refreshLocked(now time.Time) {
	if !p.readAt.IsZero() && now.Sub(p.readAt) < policyRefresh {
		return
	}
	p.readAt = now
	// The relay's own address: two members both relayed by it (the
	// per-datagram check limits it to relay and mesh ports).
	p.vouched = map[netip.Addr]bool{p.o.RelayAddress.Unmap(): true}
	if p.o.Vouched != nil {
		for _, a := range p.o.Vouched() {
			p.vouched[a.Unmap()] = true
		}
	}
	p.own = map[netip.Addr]bool{p.o.RelayAddress.Unmap(): true}
	if addrs, err := p.o.interfaceAddrs(); err == nil {
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil {
				p.own[pfx.Addr().Unmap()] = true
			}
		}
	}
}

// allowIP is the permission check (no port yet): the mesh vouches for a.
func (p *policy) allowIP(a netip.Addr) bool {
	ok := p.vouchedFor(a)
	if !ok {
		p.denied.Add(1)
	}
	return ok
}

func (p *policy) vouchedFor(a netip.Addr) bool {
	if special(a) && !(p.o.AllowLoopback && a.IsLoopback()) {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshLocked(p.o.Now())
	return p.sources[a] > 0 || p.vouched[a]
}

// allowAddrPort is the per-datagram check: a vouched address, and on the
// host's own addresses the mesh port and the relay ports only (two members
// both relayed by this relay: one allocation sends to the other).
func (p *policy) allowAddrPort(ap netip.AddrPort) bool {
	a := ap.Addr()
	ok := p.vouchedFor(a)
	if ok {
		p.mu.Lock()
		own := p.own[a]
		p.mu.Unlock()
		if own && !(p.o.AllowLoopback && a.IsLoopback()) {
			port := ap.Port()
			ok = (port >= relayPortMin && port <= relayPortMax) || (p.o.MeshPort != nil && port != 0 && port == p.o.MeshPort())
		}
	}
	if !ok {
		p.denied.Add(1)
	}
	return ok
}

// addrPortOf converts a UDP address, IPv4-mapped addresses unmapped.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
	}
	if a == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
