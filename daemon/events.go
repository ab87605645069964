package daemon

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel"
)

// eventQueue is how many events one subscriber may lag behind before the
// hub drops for it; the control server buffers per client on top.
const eventQueue = 256

// eventHub fans events out to the Events subscribers. publish never blocks.
type eventHub struct {
	mu     sync.Mutex // guards the following
	subs   map[*eventSub]struct{}
	closed bool
	done   chan struct{} // closed by close
}

type eventSub struct {
	ch chan control.Event
}

func newEventHub() *eventHub {
	return &eventHub{subs: map[*eventSub]struct{}{}, done: make(chan struct{})}
}

func (h *eventHub) publish(ev control.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- ev:
		default: // the subscriber is far behind; the server reports drops it sees
		}
	}
}

func (h *eventHub) subscribe() (*eventSub, func()) {
	s := &eventSub{ch: make(chan control.Event, eventQueue)}
	h.mu.Lock()
	if !h.closed {
		h.subs[s] = struct{}{}
	}
	h.mu.Unlock()
	return s, func() {
		h.mu.Lock()
		delete(h.subs, s)
		h.mu.Unlock()
	}
}

func (h *eventHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
}

// Events implements control.Backend: it streams events until ctx ends or
// the daemon shuts down.
func (d *Daemon) Events(ctx context.Context, fn func(control.Event)) error {
	sub, unsub := d.events.subscribe()
	defer unsub()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.events.done:
			return nil
		case ev := <-sub.ch:
			fn(ev)
		}
	}
}

// linkWatch turns tunnel link events into control events, log lines,
// handshake counters and recomputations. It runs on the tunnel's notifier
// goroutine (one event at a time, in order), so its map needs no lock
// beyond the counters' own.
type linkWatch struct {
	d        *Daemon
	lastPath map[string]tunnel.Path
}

func (w *linkWatch) onEvent(ev tunnel.Event) {
	d := w.d
	log := d.log.With("peer", ev.Peer)
	switch ev.Kind {
	case tunnel.EventState:
		wasUp := ev.Prev == tunnel.StateConnected || ev.Prev == tunnel.StateDisconnected
		switch ev.State {
		case tunnel.StateConnected:
			if ev.Prev == tunnel.StateDisconnected {
				log.Info("peer link recovered", "path", ev.Path.String())
				break
			}
			d.stats.handshake()
			w.lastPath[ev.Peer] = ev.Path
			log.Info("peer up", "path", ev.Path.String(), "local", ev.Local.String(), "remote", ev.Remote.String())
			d.events.publish(control.Event{Time: ev.Time, Kind: control.EventPeerUp, Peer: ev.Peer, To: string(wirePath(ev.Path))})
			d.kickLoop()
		case tunnel.StateFailed, tunnel.StateClosed:
			if ev.State == tunnel.StateFailed {
				d.stats.failure(failReason(ev.Err))
			}
			if wasUp {
				delete(w.lastPath, ev.Peer)
				msg := ""
				if ev.Err != nil {
					msg = ev.Err.Error()
				}
				log.Info("peer down", "state", ev.State.String(), "error", ev.Err)
				d.events.publish(control.Event{Time: ev.Time, Kind: control.EventPeerDown, Peer: ev.Peer, From: string(control.LinkUp), To: string(linkState(ev.State)), Message: msg})
			} else if ev.State == tunnel.StateFailed {
				log.Debug("link attempt failed", "error", ev.Err)
			}
			if ev.State == tunnel.StateClosed {
				delete(w.lastPath, ev.Peer)
			}
			d.kickLoop()
		case tunnel.StateDisconnected:
			log.Info("peer link quiet; checking other paths")
		}
	case tunnel.EventPath:
		// tunnel logged the change with its reason; count every one (also
		// direct to another direct pair), publish those between kinds.
		d.stats.pathChange(ev.Reason)
		from := w.lastPath[ev.Peer]
		w.lastPath[ev.Peer] = ev.Path
		if from == ev.Path {
			return
		}
		d.events.publish(control.Event{Time: ev.Time, Kind: control.EventPathChange, Peer: ev.Peer,
			From: string(wirePath(from)), To: string(wirePath(ev.Path)), Message: tunnel.PathReasonText(ev.Reason)})
	}
}

// failReason names why a link session failed, for the handshake failure
// counter (a small fixed set, so the metric's label stays bounded).
func failReason(err error) string {
	var ve *pki.VerifyError
	switch {
	case err == nil:
		return "unknown"
	case errors.Is(err, pki.ErrExpired), errors.Is(err, pki.ErrNotYetValid),
		errors.Is(err, pki.ErrCAExpired), errors.Is(err, pki.ErrCANotYetValid):
		return "cert_validity"
	case errors.Is(err, pki.ErrRevoked):
		return "cert_revoked"
	case errors.As(err, &ve):
		return "cert_rejected"
	case errors.Is(err, tunnel.ErrHandshake):
		return "handshake"
	case errors.Is(err, tunnel.ErrTimeout):
		return "timeout"
	case errors.Is(err, tunnel.ErrICEFailed):
		return "ice_failed"
	case errors.Is(err, tunnel.ErrSignaling):
		return "signaling"
	case errors.Is(err, tunnel.ErrPeerRestart):
		return "peer_restart"
	case errors.Is(err, tunnel.ErrPeerClosed):
		return "peer_closed"
	}
	return "other"
}

// wirePath maps a tunnel path onto the control API's.
func wirePath(p tunnel.Path) control.Path {
	switch p {
	case tunnel.PathDirect:
		return control.PathDirect
	case tunnel.PathRelay:
		return control.PathRelay
	}
	return control.PathNone
}

// linkState maps tunnel's states onto the control API's. Disconnected (the
// selected pair went quiet, other pairs are being checked) shows as
// checking: the link is not carrying traffic.
func linkState(s tunnel.State) control.LinkState {
	switch s {
	case tunnel.StateNew:
		return control.LinkNew
	case tunnel.StateChecking, tunnel.StateDisconnected:
		return control.LinkChecking
	case tunnel.StateHandshaking:
		return control.LinkHandshaking
	case tunnel.StateConnected:
		return control.LinkUp
	case tunnel.StateFailed:
		return control.LinkFailed
	}
	return control.LinkClosed
}
