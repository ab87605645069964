// Package controltest holds an in-memory control.Backend for tests of the
// control server and of meshctl, plus a helper that serves it on a unix socket
// in a test's temporary directory.
package controltest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/control"
)

// Method names for SetError and Calls.
const (
	MethodStatus   = "Status"
	MethodPeers    = "Peers"
	MethodPeerWhy  = "PeerWhy"
	MethodPing     = "Ping"
	MethodNetcheck = "Netcheck"
	MethodEvents   = "Events"
	MethodReload   = "Reload"
)

// Backend is a control.Backend that serves canned documents. Configure it
// with the Set methods (safe at any time); it returns copies, so a test may
// keep changing its own values.
type Backend struct {
	pinging atomic.Int32 // Ping calls in progress

	mu       sync.Mutex // guards the following
	status   control.Status
	peers    []control.Peer
	why      map[string]control.PeerWhy
	pings    map[string][]control.PingReply
	netcheck control.Netcheck
	reload   control.ReloadResult
	errs     map[string]error
	calls    map[string]int
	subs     map[*subscriber]struct{}
}

type subscriber struct {
	ch   chan control.Event // unbuffered: Emit hands each event over
	done chan struct{}      // closed when Events returns
}

var _ control.Backend = (*Backend)(nil)

// New returns an empty Backend: a node named "test" with no peers.
func New() *Backend {
	return &Backend{
		status: control.Status{Name: "test"},
		why:    map[string]control.PeerWhy{},
		pings:  map[string][]control.PingReply{},
		errs:   map[string]error{},
		calls:  map[string]int{},
		subs:   map[*subscriber]struct{}{},
	}
}

// SetStatus sets what Status returns.
func (b *Backend) SetStatus(st control.Status) { b.mu.Lock(); b.status = st; b.mu.Unlock() }

// SetPeers sets what Peers returns.
func (b *Backend) SetPeers(peers []control.Peer) {
	b.mu.Lock()
	b.peers = slices.Clone(peers)
	b.mu.Unlock()
}

// SetPeerWhy sets what PeerWhy returns for why.Peer.
func (b *Backend) SetPeerWhy(why control.PeerWhy) { b.mu.Lock(); b.why[why.Peer] = why; b.mu.Unlock() }

// SetPingReplies sets the replies Ping gives for peer: the i-th ping (from
// 0) gets replies[i % len(replies)] with Seq i+1. A peer in the peer list
// with no replies set gets "timeout" replies; any other name is
// ErrPeerNotFound.
func (b *Backend) SetPingReplies(peer string, replies []control.PingReply) {
	b.mu.Lock()
	b.pings[peer] = slices.Clone(replies)
	b.mu.Unlock()
}

// SetNetcheck sets what Netcheck returns.
func (b *Backend) SetNetcheck(nc control.Netcheck) { b.mu.Lock(); b.netcheck = nc; b.mu.Unlock() }

// SetReload sets what Reload returns.
func (b *Backend) SetReload(res control.ReloadResult, err error) {
	b.mu.Lock()
	b.reload = res
	b.errs[MethodReload] = err
	b.mu.Unlock()
}

// SetError makes method (MethodStatus, ...) return err; nil clears it.
func (b *Backend) SetError(method string, err error) {
	b.mu.Lock()
	b.errs[method] = err
	b.mu.Unlock()
}

// Calls returns how many times method was called.
func (b *Backend) Calls(method string) int { b.mu.Lock(); defer b.mu.Unlock(); return b.calls[method] }

// Subscribers returns how many Events calls are in progress.
func (b *Backend) Subscribers() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.subs) }

// ActivePings returns how many Ping calls are in progress.
func (b *Backend) ActivePings() int { return int(b.pinging.Load()) }

// Emit hands e to every current Events call and returns once each has
// taken it (they pass it to their fn right away).
func (b *Backend) Emit(e control.Event) {
	b.mu.Lock()
	subs := make([]*subscriber, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		select {
		case s.ch <- e:
		case <-s.done:
		}
	}
}

func (b *Backend) enter(method string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[method]++
	return b.errs[method]
}

// Status implements control.Backend.
func (b *Backend) Status(ctx context.Context) (*control.Status, error) {
	if err := b.enter(MethodStatus); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.status
	return &st, nil
}

// Peers implements control.Backend.
func (b *Backend) Peers(ctx context.Context) ([]control.Peer, error) {
	if err := b.enter(MethodPeers); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.peers), nil
}

// PeerWhy implements control.Backend.
func (b *Backend) PeerWhy(ctx context.Context, name string) (*control.PeerWhy, error) {
	if err := b.enter(MethodPeerWhy); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	why, ok := b.why[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", control.ErrPeerNotFound, name)
	}
	return &why, nil
}

// Ping implements control.Backend.
func (b *Backend) Ping(ctx context.Context, peer string, count int, interval time.Duration, untilDirect bool, fn func(control.PingReply)) error {
	if err := b.enter(MethodPing); err != nil {
		return err
	}
	b.pinging.Add(1)
	defer b.pinging.Add(-1)
	b.mu.Lock()
	replies := slices.Clone(b.pings[peer])
	known := len(replies) > 0 || slices.ContainsFunc(b.peers, func(p control.Peer) bool { return p.Name == peer })
	b.mu.Unlock()
	if !known {
		return fmt.Errorf("%w: %q", control.ErrPeerNotFound, peer)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; i < count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
			}
		}
		rep := control.PingReply{Peer: peer, Error: "timeout"}
		if len(replies) > 0 {
			rep = replies[i%len(replies)]
		}
		rep.Seq = i + 1
		fn(rep)
		if untilDirect && rep.Error == "" && rep.Path == control.PathDirect {
			return nil
		}
	}
	return nil
}

// Netcheck implements control.Backend.
func (b *Backend) Netcheck(ctx context.Context) (*control.Netcheck, error) {
	if err := b.enter(MethodNetcheck); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	nc := b.netcheck
	return &nc, nil
}

// Events implements control.Backend: it passes on what Emit sends until ctx
// is done.
func (b *Backend) Events(ctx context.Context, fn func(control.Event)) error {
	if err := b.enter(MethodEvents); err != nil {
		return err
	}
	s := &subscriber{ch: make(chan control.Event), done: make(chan struct{})}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
		close(s.done)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-s.ch:
			fn(e)
		}
	}
}

// Reload implements control.Backend.
func (b *Backend) Reload(ctx context.Context) (*control.ReloadResult, error) {
	err := b.enter(MethodReload)
	b.mu.Lock()
	defer b.mu.Unlock()
	res := b.reload
	if err != nil {
		return nil, err
	}
	return &res, nil
}
