package discovery

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// admission.go: how many connections may wait unauthenticated.
//
// A connection costs the coordinator a goroutine, TLS buffers and, once the
// ClientHello arrives, a signature and a key exchange, before anything says
// who is connecting. Until its TLS handshake completes it holds one of
// MaxUnauthenticated slots. Once half of them are taken, a source (an IPv4
// address or an IPv6 /64, what one host can cheaply vary) holding
// MaxUnauthenticatedPerSource gets no more: so many nodes behind one NAT
// reconnecting at once (a coordinator restart) are not refused while the
// coordinator is idle, and one host holding thousands of idle connections
// takes at most half the slots plus its share, leaving the rest to every
// other host. A connection not admitted is closed at accept, before any
// goroutine or TLS state exists, and counted; a slot is held for at most
// HandshakeTimeout.

// admission counts unauthenticated connections. Safe for concurrent use: the
// accept loop admits, connection goroutines release.
type admission struct {
	maxTotal, maxPerSource int

	mu       sync.Mutex // guards the following
	total    int
	bySource map[netip.Addr]int
}

// admitVerdict says why a connection was not admitted.
type admitVerdict uint8

const (
	admitted admitVerdict = iota
	admitSourceFull
	admitTotalFull
)

func newAdmission(maxTotal, maxPerSource int) *admission {
	return &admission{maxTotal: maxTotal, maxPerSource: maxPerSource, bySource: map[netip.Addr]int{}}
}

// sourceKey is the unit of the per-source cap: the IPv4 address, or the
// IPv6 /64 (a host usually owns one and can pick any address in it).
func sourceKey(addr net.Addr) netip.Addr {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return netip.Addr{}
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// admit takes a slot for src, or says which cap is full.
func (a *admission) admit(src netip.Addr) admitVerdict {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.total >= a.maxTotal/2 && a.bySource[src] >= a.maxPerSource {
		return admitSourceFull
	}
	if a.total >= a.maxTotal {
		return admitTotalFull
	}
	a.bySource[src]++
	a.total++
	return admitted
}

// release returns src's slot (once per admitted connection).
func (a *admission) release(src netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if n := a.bySource[src] - 1; n > 0 {
		a.bySource[src] = n
	} else {
		delete(a.bySource, src)
	}
}

// pending is the number of unauthenticated connections held.
func (a *admission) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// refusalLog paces a log line about repeated refusals: at most one a
// second, carrying how many happened since the previous line.
type refusalLog struct {
	mu   sync.Mutex // guards the following
	last time.Time
	n    uint64
}

// note counts one refusal; ok says to log now, with n refusals since the
// last line (this one included).
func (l *refusalLog) note(now time.Time) (n uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if now.Sub(l.last) < time.Second {
		return 0, false
	}
	n, l.n, l.last = l.n, 0, now
	return n, true
}
