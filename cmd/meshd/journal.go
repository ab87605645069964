package main

// Logs for journald. Started by systemd, meshd's stderr is a stream socket
// to journald (JOURNAL_STREAM names it). journald reads an sd-daemon
// priority prefix ("<3>" for errors, see sd-daemon(3)) at the start of each
// line and stores the line at that priority, so `journalctl -p warning`
// shows meshd's errors and warnings; without it every line is "info".
// journald stamps each line itself, so the handler's own time goes.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// journalStream reports whether w is the stream journald handed meshd:
// JOURNAL_STREAM (value "DEVICE:INODE") names the stderr systemd set up, and
// w must still be that file (a shell redirect in ExecStart, or meshd run by
// hand from a unit's shell, leaves the variable but not the stream).
func journalStream(env string, w io.Writer) bool {
	if env == "" {
		return false
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	devText, inoText, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devText, 10, 64)
	ino, err2 := strconv.ParseUint(inoText, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino // field types differ by GOARCH
}

// priority is the syslog priority of a slog level (sd-daemon(3)).
func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // err
	case l >= slog.LevelWarn:
		return 4 // warning
	case l >= slog.LevelInfo:
		return 6 // info
	}
	return 7 // debug
}

// journalWriter prefixes each line the inner handler writes with the
// priority of the record being handled. mu is held by journalHandler.Handle
// around the inner Handle, which writes a record in one Write call.
type journalWriter struct {
	mu   sync.Mutex
	out  io.Writer
	prio int // of the record being handled; guarded by mu
}

func (w *journalWriter) Write(p []byte) (int, error) {
	if _, err := fmt.Fprintf(w.out, "<%d>", w.prio); err != nil {
		return 0, err
	}
	return w.out.Write(p)
}

// journalHandler is a slog.Handler whose lines carry sd-daemon priority
// prefixes and no timestamp.
type journalHandler struct {
	inner slog.Handler
	w     *journalWriter
}

// newJournalHandler returns a handler writing format (text or JSON) lines
// for journald to out.
func newJournalHandler(out io.Writer, json bool, opts *slog.HandlerOptions) slog.Handler {
	w := &journalWriter{out: out}
	o := *opts
	next := o.ReplaceAttr
	o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{} // journald has the time
		}
		if next != nil {
			return next(groups, a)
		}
		return a
	}
	var inner slog.Handler = slog.NewTextHandler(w, &o)
	if json {
		inner = slog.NewJSONHandler(w, &o)
	}
	return &journalHandler{inner: inner, w: w}
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.prio = priority(r.Level)
	return h.inner.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(attrs), w: h.w}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), w: h.w}
}
