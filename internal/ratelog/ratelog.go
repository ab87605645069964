// Package ratelog owns meshd's defence against log floods: a slog.Handler
// that lets the first few records of a kind through per time window and
// counts the rest, reporting the count on the next record of that kind. A
// peer or a stranger that makes meshd log once per packet or connection
// (garbage at the session port, a refused handshake in a loop) then costs a
// few lines per window instead of filling the journal.
package ratelog

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Defaults for New: generous enough that a mesh of many peers logging "link
// up" at start is not cut (each peer-scoped logger is its own kind), tight
// enough that a flood of one message is.
const (
	DefaultWindow = 10 * time.Second
	DefaultBurst  = 5
)

// Caps above the per-kind burst, per window. A logger made per connection
// (With("remote", addr)) makes every connection a kind of its own, so one
// message is also capped whatever its attributes, and all records together,
// which also covers third-party messages with addresses in their text.
const (
	messageBurst = 50
	totalBurst   = 500
)

// maxKinds bounds the kinds remembered; beyond it the stale ones are
// forgotten (and a flood of ever-new messages is only as limited as each).
const maxKinds = 4096

// Handler rate-limits records at info level and above by kind: the
// message, its level, and the attributes and groups given with
// WithAttrs/WithGroup (so logger.With("peer", x) makes each peer a kind of
// its own), and also by message and in total (messageBurst, totalBurst).
// Debug records pass untouched: an operator who asked for them wants them
// all. Safe for concurrent use.
type Handler struct {
	next   slog.Handler
	st     *state
	prefix string // the kind's part from WithAttrs/WithGroup
}

type state struct {
	window time.Duration
	burst  int
	now    func() time.Time

	mu    sync.Mutex // guards the following
	kinds map[string]*kind
	msgs  map[string]*kind // by level and message, attributes aside
	total kind             // every record at info and above
}

type kind struct {
	start      time.Time // the current window's start
	n          int       // records let through in this window
	suppressed int       // of them dropped
}

// New wraps next: per kind at most burst records per window pass; the first
// record after a window that dropped some carries suppressed=N and
// suppressed_window.
func New(next slog.Handler, window time.Duration, burst int) *Handler {
	return &Handler{next: next, st: &state{window: window, burst: burst, now: time.Now, kinds: map[string]*kind{}, msgs: map[string]*kind{}}}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo {
		return h.next.Handle(ctx, r)
	}
	msgKey := r.Level.String() + "\x00" + shape(r.Message)
	key := h.prefix + "\x00" + msgKey
	st := h.st
	st.mu.Lock()
	now := st.now()
	k := st.kinds[key]
	carried := 0
	if k == nil || now.Sub(k.start) >= st.window {
		if k != nil {
			carried = k.suppressed
		}
		if k == nil && len(st.kinds) >= maxKinds {
			st.forgetLocked(now)
		}
		k = &kind{start: now}
		st.kinds[key] = k
	}
	m := st.msgs[msgKey]
	if m == nil || now.Sub(m.start) >= st.window {
		if m == nil && len(st.msgs) >= maxKinds {
			clear(st.msgs)
		}
		m = &kind{start: now}
		st.msgs[msgKey] = m
	}
	if now.Sub(st.total.start) >= st.window {
		st.total = kind{start: now}
	}
	// n counts the records let through in the window.
	if k.n >= st.burst || m.n >= messageBurst || st.total.n >= totalBurst {
		k.suppressed++
		st.mu.Unlock()
		return nil
	}
	k.n++
	m.n++
	st.total.n++
	st.mu.Unlock()
	if carried > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", carried), slog.Duration("suppressed_window", st.window))
	}
	return h.next.Handle(ctx, r)
}

// shape is a message with each run of digits folded into one '#', so that third-party messages
// that put addresses, ports or counts in their text ("discarding stream ...
// from=198.51.100.7:40000") are one kind, not one per connection.
func shape(msg string) string {
	if !strings.ContainsAny(msg, "0123456789") {
		return msg
	}
	b := make([]byte, 0, len(msg))
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= '0' && c <= '9' {
			if n := len(b); n == 0 || b[n-1] != '#' {
				b = append(b, '#')
			}
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// forgetLocked drops the kinds whose window is over, or all of them if
// none is. Must hold mu.
func (st *state) forgetLocked(now time.Time) {
	for key, k := range st.kinds {
		if now.Sub(k.start) >= st.window {
			delete(st.kinds, key)
		}
	}
	if len(st.kinds) >= maxKinds {
		clear(st.kinds)
	}
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range attrs {
		b.WriteString("\x00")
		b.WriteString(a.String())
	}
	return &Handler{next: h.next.WithAttrs(attrs), st: h.st, prefix: b.String()}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), st: h.st, prefix: h.prefix + "\x00group=" + name}
}
