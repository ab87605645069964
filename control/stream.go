package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Streams (ping, events) are newline-delimited JSON over a chunked HTTP
// response: one document per line, each with schema_version, flushed as it is
// written. A stream that fails after it started ends with one line
// {"schema_version":1,"stream_error":"...","code":"..."}; a stream that ends
// normally just ends (the chunked encoding's terminator tells the client it
// was not cut).

// streamWriter writes NDJSON lines. It is safe for concurrent use; after the
// first failed write every later one fails with the same error.
type streamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController

	mu       sync.Mutex // guards the following and serialises writes
	started  bool
	finished bool // the handler is returning: the ResponseWriter is off limits
	err      error
}

// errStreamFinished is what a write after finish gets.
var errStreamFinished = errors.New("control: stream already finished")

// finish makes every later send fail instead of touching a ResponseWriter
// whose handler has returned (a Backend calling fn after Ping returned would
// otherwise write into a recycled response).
func (sw *streamWriter) finish() {
	sw.mu.Lock()
	sw.finished = true
	sw.mu.Unlock()
}

func newStreamWriter(w http.ResponseWriter) *streamWriter {
	return &streamWriter{w: w, rc: http.NewResponseController(w)}
}

// start sends the headers so the client knows the stream is open.
func (sw *streamWriter) start() error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.startLocked()
}

func (sw *streamWriter) startLocked() error {
	if sw.finished {
		return errStreamFinished
	}
	if sw.started {
		return sw.err
	}
	sw.started = true
	h := sw.w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	_ = sw.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	sw.w.WriteHeader(http.StatusOK)
	sw.err = sw.rc.Flush()
	return sw.err
}

func (sw *streamWriter) isStarted() bool {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.started
}

// send writes v as one line and flushes it.
func (sw *streamWriter) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("control: encode stream line: %w", err)
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if err := sw.startLocked(); err != nil {
		return err
	}
	if sw.finished {
		return errStreamFinished
	}
	_ = sw.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := sw.w.Write(append(b, '\n')); err != nil {
		sw.err = err
		return err
	}
	sw.err = sw.rc.Flush()
	return sw.err
}

func (s *Server) servePing(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, codeTooLarge, err.Error())
		} else {
			writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		}
		return
	}
	var req PingRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, "malformed ping request: "+err.Error())
		return
	}
	if req.SchemaVersion != SchemaVersion {
		writeError(w, http.StatusBadRequest, codeSchema,
			fmt.Sprintf("ping request has schema_version %d; this meshd speaks %d", req.SchemaVersion, SchemaVersion))
		return
	}
	if err := checkPing(&req); err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sw := newStreamWriter(w)
	defer sw.finish()
	err = s.opts.Backend.Ping(ctx, req.Peer, req.Count, req.Interval, req.UntilDirect, func(rep PingReply) {
		if ctx.Err() != nil {
			return // stopped: the client left, or untilDirect was met
		}
		rep.SchemaVersion = SchemaVersion
		if err := sw.send(rep); err != nil {
			cancel()
			return
		}
		if req.UntilDirect && rep.Error == "" && rep.Path == PathDirect {
			cancel()
		}
	})
	failed := err != nil && ctx.Err() == nil
	switch {
	case failed && !sw.isStarted():
		s.writeBackendError(w, r, err, req.Peer)
	case failed:
		_, code, msg := s.classify(r, err, req.Peer)
		_ = sw.send(&streamError{SchemaVersion: SchemaVersion, StreamError: msg, Code: code})
	default:
		// Zero replies is still a (short) stream.
		_ = sw.start()
	}
}

// checkPing validates req and fills its defaults.
func checkPing(req *PingRequest) error {
	if err := checkPeerName(req.Peer); err != nil {
		return err
	}
	if req.Count == 0 {
		req.Count = DefaultPingCount
	}
	if req.Interval == 0 {
		req.Interval = DefaultPingInterval
	}
	if req.Count < 1 || req.Count > MaxPingCount {
		return fmt.Errorf("ping count %d out of range 1..%d", req.Count, MaxPingCount)
	}
	if req.Interval < MinPingInterval || req.Interval > MaxPingInterval {
		return fmt.Errorf("ping interval %v out of range %v..%v", req.Interval, MinPingInterval, MaxPingInterval)
	}
	return nil
}

func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	discardBody(r)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sw := newStreamWriter(w)
	defer sw.finish()
	if err := sw.start(); err != nil {
		return
	}

	// The Backend's fn must never block, so events go through a buffer and
	// are counted, not queued without bound, when this reader lags.
	ch := make(chan Event, eventBuffer)
	var dropped atomic.Uint64
	errc := make(chan error, 1) // buffered: the goroutine never blocks on it
	go func() {
		errc <- s.opts.Backend.Events(ctx, func(e Event) {
			select {
			case ch <- e:
			default:
				dropped.Add(1)
			}
		})
	}()

	send := func(e Event) error {
		e.SchemaVersion = SchemaVersion
		if err := sw.send(&e); err != nil {
			return err
		}
		// Report drops once the backlog that preceded them is written, so
		// the notice sits where the gap is.
		if len(ch) == 0 {
			if n := dropped.Swap(0); n > 0 {
				return sw.send(&Event{SchemaVersion: SchemaVersion, Time: time.Now(), Kind: EventDropped,
					Message: fmt.Sprintf("%d events dropped: this reader fell behind", n)})
			}
		}
		return nil
	}
	for {
		select {
		case e := <-ch:
			if err := send(e); err != nil {
				cancel()
				<-errc
				return
			}
		case err := <-errc:
			// The Backend stopped on its own: write what it queued, then
			// say why if it was a failure.
			for len(ch) > 0 {
				if send(<-ch) != nil {
					return
				}
			}
			if err != nil && ctx.Err() == nil {
				_, code, msg := s.classify(r, err, "")
				_ = sw.send(&streamError{SchemaVersion: SchemaVersion, StreamError: msg, Code: code})
			}
			return
		case <-ctx.Done():
			<-errc
			return
		}
	}
}
