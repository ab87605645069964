// Package tunneltest holds in-memory doubles for tests of code that uses
// package tunnel: a signal router standing in for discovery's coordinators.
package tunneltest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// ErrOffline is what a Signaler returns when the destination is not
// registered or is marked offline (what discovery reports for a peer with no
// session).
var ErrOffline = errors.New("tunneltest: peer offline")

// Router delivers signals between named nodes in memory, in order per
// sender, the way a coordinator relays them. Safe for concurrent use.
type Router struct {
	mu      sync.Mutex
	deliver map[string]func(from string, payload []byte) error
	offline map[string]bool

	sent atomic.Uint64
}

// NewRouter returns an empty router.
func NewRouter() *Router {
	return &Router{deliver: map[string]func(string, []byte) error{}, offline: map[string]bool{}}
}

// Register makes name reachable; deliver is typically a tunnel.Manager's
// HandleSignal. Registering a name again replaces its handler (a restarted
// node).
func (r *Router) Register(name string, deliver func(from string, payload []byte) error) {
	r.mu.Lock()
	r.deliver[name] = deliver
	r.mu.Unlock()
}

// SetOffline makes name unreachable (true) or reachable again (false), in
// both directions.
func (r *Router) SetOffline(name string, off bool) {
	r.mu.Lock()
	r.offline[name] = off
	r.mu.Unlock()
}

// Sent counts delivered signals.
func (r *Router) Sent() uint64 { return r.sent.Load() }

// Signaler returns the tunnel.Signaler of the node called from.
func (r *Router) Signaler(from string) *Signaler { return &Signaler{r: r, from: from} }

// Signaler sends signals from one node through a Router.
type Signaler struct {
	r    *Router
	from string
}

// SendSignal delivers payload to the node to, synchronously. Errors from the
// destination's handler (unknown peer, malformed) are swallowed like a
// coordinator would: the sender cannot see them.
func (s *Signaler) SendSignal(ctx context.Context, to string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.r.mu.Lock()
	deliver := s.r.deliver[to]
	off := s.r.offline[to] || s.r.offline[s.from]
	s.r.mu.Unlock()
	if deliver == nil || off {
		return ErrOffline
	}
	s.r.sent.Add(1)
	_ = deliver(s.from, bytes.Clone(payload))
	return nil
}
