package control_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/control/controltest"
	"github.com/meshd/meshd/internal/testutil"
)

func TestPingStopsOnCancel(t *testing.T) {
	testutil.LeakCheck(t)
	b := controltest.New()
	b.SetPingReplies("nas", []control.PingReply{{Peer: "nas", Path: control.PathRelay, RTT: time.Millisecond}})
	_, sock := controltest.Serve(t, b)
	c := control.NewClient(sock)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	err := c.Ping(ctx, control.PingRequest{Peer: "nas", Count: control.MaxPingCount, Interval: control.MinPingInterval},
		func(control.PingReply) error {
			n++
			if n == 2 {
				cancel()
			}
			return nil
		})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Ping after cancel: %v, want context.Canceled", err)
	}
	testutil.WaitFor(t, 5*time.Second, "backend Ping to return after the client canceled",
		func() bool { return b.ActivePings() == 0 })
}

func TestEventsStopOnCancelAndOnClose(t *testing.T) {
	testutil.LeakCheck(t)
	b := controltest.New()
	srv, sock := controltest.Serve(t, b)
	c := control.NewClient(sock)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Events(ctx, func(control.Event) error { return nil }) }()
	testutil.WaitFor(t, 5*time.Second, "subscriber", func() bool { return b.Subscribers() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Events after cancel: %v, want nil", err)
	}
	testutil.WaitFor(t, 5*time.Second, "backend Events to return after cancel", func() bool { return b.Subscribers() == 0 })

	// Closing the server ends open streams instead of waiting for them.
	go func() { done <- c.Events(context.Background(), func(control.Event) error { return nil }) }()
	testutil.WaitFor(t, 5*time.Second, "second subscriber", func() bool { return b.Subscribers() == 1 })
	srv.Close()
	if err := <-done; !errors.Is(err, control.ErrStreamClosed) {
		t.Errorf("Events when the server closed: %v, want ErrStreamClosed", err)
	}
	if b.Subscribers() != 0 {
		t.Error("backend Events still running after Close returned")
	}
}

// TestEventsOutliveRequestTimeout: a stream must not be cut by the read
// timeout that bounds ordinary requests.
func TestEventsOutliveRequestTimeout(t *testing.T) {
	testutil.LeakCheck(t)
	b := controltest.New()
	const timeout = 100 * time.Millisecond
	sock := controltest.SocketPath(t)
	srv, err := control.NewServer(control.ServerOptions{Socket: sock, Backend: b, RequestTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan control.Event, 1)
	done := make(chan error, 1)
	go func() {
		done <- control.NewClient(sock).Events(ctx, func(e control.Event) error { got <- e; return nil })
	}()
	testutil.WaitFor(t, 5*time.Second, "subscriber", func() bool { return b.Subscribers() == 1 })
	<-time.After(4 * timeout) // the point of the test: time passes beyond RequestTimeout
	b.Emit(control.Event{Kind: control.EventReload, Message: "late"})
	select {
	case e := <-got:
		if e.Message != "late" {
			t.Errorf("event %+v, want the late one", e)
		}
	case err := <-done:
		t.Fatalf("stream ended after RequestTimeout: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no event 5s after Emit")
	}
	cancel()
	<-done
}

// TestEventsSlowReaderDrops: a reader that stops reading loses events (and
// is told how many) instead of blocking the daemon.
func TestEventsSlowReaderDrops(t *testing.T) {
	testutil.LeakCheck(t)
	b := controltest.New()
	_, sock := controltest.Serve(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	release := make(chan struct{})
	var once sync.Once
	var received, dropped atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- control.NewClient(sock).Events(ctx, func(e control.Event) error {
			<-release // stall the reader until every event was emitted
			if e.Kind == control.EventDropped {
				var n int64
				if _, err := fmt.Sscanf(e.Message, "%d events dropped", &n); err != nil {
					return fmt.Errorf("dropped notice %q: %v", e.Message, err)
				}
				dropped.Add(n)
				return nil
			}
			received.Add(1)
			return nil
		})
	}()
	testutil.WaitFor(t, 5*time.Second, "subscriber", func() bool { return b.Subscribers() == 1 })
	// Enough to fill the socket buffers and the server's buffer.
	const total = 20000
	for i := 0; i < total; i++ {
		b.Emit(control.Event{Kind: control.EventPathChange, Peer: "nas", Message: fmt.Sprintf("event %d", i)})
	}
	once.Do(func() { close(release) })
	testutil.WaitFor(t, 10*time.Second, "every event delivered or counted as dropped", func() bool {
		return received.Load()+dropped.Load() == total
	})
	if dropped.Load() == 0 {
		t.Errorf("no events dropped for a stalled reader (received %d)", received.Load())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Events: %v", err)
	}
}

// failingPing streams one reply and then fails, like a link that broke.
type failingPing struct{ *controltest.Backend }

func (f failingPing) Ping(ctx context.Context, peer string, _ int, _ time.Duration, _ bool, fn func(control.PingReply)) error {
	fn(control.PingReply{Peer: peer, Path: control.PathRelay})
	return fmt.Errorf("%w: tunnel closed", control.ErrUnavailable)
}

func (f failingPing) Events(ctx context.Context, fn func(control.Event)) error {
	fn(control.Event{Kind: control.EventPeerDown, Peer: "nas"})
	return errors.New("event source broke")
}

func TestStreamErrorAfterStart(t *testing.T) {
	testutil.LeakCheck(t)
	_, sock := controltest.Serve(t, failingPing{controltest.New()})
	c := control.NewClient(sock)
	n := 0
	err := c.Ping(context.Background(), control.PingRequest{Peer: "nas"}, func(control.PingReply) error { n++; return nil })
	if n != 1 || !errors.Is(err, control.ErrUnavailable) {
		t.Errorf("ping that fails mid-stream: %d replies, %v; want 1 reply then ErrUnavailable", n, err)
	}
	n = 0
	err = c.Events(context.Background(), func(control.Event) error { n++; return nil })
	var ae *control.APIError
	if n != 1 || !errors.As(err, &ae) || ae.Code != "internal" {
		t.Errorf("events that fail: %d events, %v; want 1 event then an internal APIError", n, err)
	}
}

// lateBackend breaks the Ping contract: it calls fn after Ping returned.
type lateBackend struct {
	*controltest.Backend
	late chan struct{} // closed when the late call is done
}

func (l lateBackend) Ping(ctx context.Context, peer string, _ int, _ time.Duration, _ bool, fn func(control.PingReply)) error {
	fn(control.PingReply{Peer: peer, Path: control.PathRelay})
	go func() {
		defer close(l.late)
		<-time.After(50 * time.Millisecond) // after the handler has returned
		fn(control.PingReply{Peer: peer, Path: control.PathRelay, Error: "late"})
	}()
	return nil
}

func TestPingCallbackAfterReturnIsIgnored(t *testing.T) {
	testutil.LeakCheck(t)
	b := lateBackend{controltest.New(), make(chan struct{})}
	_, sock := controltest.Serve(t, b)
	n := 0
	err := control.NewClient(sock).Ping(context.Background(), control.PingRequest{Peer: "nas"},
		func(control.PingReply) error { n++; return nil })
	if err != nil || n != 1 {
		t.Errorf("ping: %d replies, %v; want 1", n, err)
	}
	<-b.late // under -race, a write into the finished response would be reported
}
