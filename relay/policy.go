package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/meshd/meshd/internal/peerpolicy"
)

// policyRefresh is how long the vouched and own address lists are trusted.
const policyRefresh = time.Second

// policy decides which peers the relay reaches: an address must pass the
// default check coordinators' embedded TURN applies too (peerpolicy: no
// special, unroutable or translated-to-internal addresses; private ranges
// only when the relay address is private; the host's own addresses only on
// its relay and mesh ports) and be vouched for by the mesh. Safe for
// concurrent use: pion calls it from its listener goroutine and every relay
// socket.
type policy struct {
	// Immutable after newPolicy.
	o       *Options
	def     peerpolicy.Policy
	refused peerpolicy.Refusals

	// mu guards the following.
	mu      sync.Mutex
	sources map[netip.Addr]int // source IPs of live allocations -> count
	members map[string]int     // allocations per member name
	total   int                // allocations held
	vouched map[netip.Addr]bool
	own     map[netip.Addr]bool
	readAt  time.Time
}

// loopbackPrefixes are allowed whatever the defaults say with
// Options.AllowLoopback.
var loopbackPrefixes = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// newPolicy builds the policy of o. Private peers are allowed only when
// o.RelayAddress is private: such a relay serves a private network (a home
// lab, a site VPN) and its members are there too; a public relay on a LAN
// does not relay into that LAN.
func newPolicy(o *Options) *policy {
	p := &policy{o: o, sources: map[netip.Addr]int{}, members: map[string]int{}}
	p.def = peerpolicy.Policy{
		AllowPrivate: peerpolicy.AllowPrivateFor(o.RelayAddress),
		IsOwn:        p.isOwn,
		OpenPort: func(port uint16) bool {
			return (port >= relayPortMin && port <= relayPortMax) || (o.MeshPort != nil && port != 0 && port == o.MeshPort())
		},
	}
	if o.AllowLoopback {
		p.def.Allowed = loopbackPrefixes
	}
	return p
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

// allowIP is the permission check (no port yet): the default check, and
// the mesh vouches for a.
func (p *policy) allowIP(a netip.Addr) bool {
	return p.verdict(p.def.Check(a), a)
}

// allowAddrPort is the per-datagram check: the default check with the
// port (the host's own addresses only on the mesh port and the relay
// ports: two members both relayed by this relay, one allocation sending to
// the other), and a vouched address.
func (p *policy) allowAddrPort(ap netip.AddrPort) bool {
	return p.verdict(p.def.CheckSend(ap), ap.Addr())
}

// verdict completes the default verdict r on a with the vouched-address
// rule, and counts (and the first time of each reason, logs) a refusal.
func (p *policy) verdict(r peerpolicy.Reason, a netip.Addr) bool {
	if r == peerpolicy.Allowed && !p.vouchedFor(a.Unmap()) {
		r = peerpolicy.NotVouched
	}
	if r == peerpolicy.Allowed {
		return true
	}
	if p.refused.Add(r) {
		p.o.Logger.Info("member relay refused to relay to a peer address; further refusals of this kind are only counted",
			"peer", a, "reason", r.String())
	}
	return false
}

func (p *policy) vouchedFor(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshLocked(p.o.Now())
	return p.sources[a] > 0 || p.vouched[a]
}

// isOwn reports whether a is one of the host's addresses (the relay
// address or an interface's).
func (p *policy) isOwn(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refreshLocked(p.o.Now())
	return p.own[a]
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
