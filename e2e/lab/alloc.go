//go:build e2e

package lab

import (
	"fmt"
	"net/netip"
)

// allocator hands out addresses of one lab network. Addresses are never
// given back: a readdressed host's old address stays unused, so a stale
// packet or conntrack entry can never reach a different host. Callers hold
// Lab.mu.
type allocator struct {
	prefix netip.Prefix
	next   netip.Addr
	used   map[netip.Addr]bool
}

func newAllocator(prefix netip.Prefix, first netip.Addr) *allocator {
	return &allocator{prefix: prefix, next: first, used: map[netip.Addr]bool{}}
}

// take returns want if it is valid, or the next free address if want is the
// zero Addr.
func (a *allocator) take(want netip.Addr) (netip.Addr, error) {
	if want.IsValid() {
		if !a.prefix.Contains(want) || want == a.prefix.Masked().Addr() || a.used[want] {
			return netip.Addr{}, fmt.Errorf("%w: %v (in %v, taken %v)", ErrNoAddress, want, a.prefix, a.used[want])
		}
		a.used[want] = true
		return want, nil
	}
	for a.prefix.Contains(a.next) {
		ip := a.next
		a.next = ip.Next()
		if !a.used[ip] && !isBroadcast(a.prefix, ip) {
			a.used[ip] = true
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %v is full", ErrNoAddress, a.prefix)
}

func isBroadcast(p netip.Prefix, ip netip.Addr) bool {
	return !p.Contains(ip.Next())
}
