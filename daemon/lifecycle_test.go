package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/internal/testutil"
)

// TestLifecycle: a lone coordinator node becomes ready on its own session;
// cancelling Start's context closes it cleanly; a fatal error closes it and
// is kept.
func TestLifecycle(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	n := m.node(t, "solo", 1, nodeSpec{})
	path := m.config(t, n, confSpec{coordinator: true})

	t.Run("context cancel", func(t *testing.T) {
		logger, lv, _ := newLogCapture(t, "solo")
		d, err := New(mustLoad(t, path), Options{Logger: logger, LogLevel: lv, Tuning: testTuning()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.Start(ctx); !errors.Is(err, ErrAlreadyStarted) {
			t.Errorf("second Start: %v", err)
		}
		select {
		case <-d.Ready():
		case <-time.After(10 * time.Second):
			t.Fatal("not ready")
		}
		if err := d.Healthy(context.Background()); err != nil {
			t.Errorf("Healthy: %v", err)
		}
		if s := d.Summary(); !strings.HasPrefix(s, "coordinator solo connected; 0/0 peers up") {
			t.Errorf("summary %q", s)
		}
		cancel()
		select {
		case <-d.Wait():
		case <-time.After(10 * time.Second):
			t.Fatal("cancelling the context did not stop the daemon")
		}
		if d.Err() != nil {
			t.Errorf("Err after a cancel: %v", d.Err())
		}
		if _, err := d.Status(context.Background()); !errors.Is(err, control.ErrUnavailable) {
			t.Errorf("Status after close: %v", err)
		}
	})

	t.Run("fatal error", func(t *testing.T) {
		d := startDaemon(t, n, path)
		boom := errors.New("boom")
		d.fatal(boom)
		d.fatal(errors.New("second"))
		select {
		case <-d.Wait():
		case <-time.After(10 * time.Second):
			t.Fatal("a fatal error did not stop the daemon")
		}
		if !errors.Is(d.Err(), boom) {
			t.Errorf("Err = %v, want the first fatal error", d.Err())
		}
	})
}

// TestCoordinatorListReloadAndFailover: beta starts with one coordinator,
// a reload adds a second (a new session client replaces the old one), and
// when the first goes away beta fails over and reports it.
func TestCoordinatorListReloadAndFailover(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	na := m.node(t, "alpha", 1, nodeSpec{})
	nc := m.node(t, "gamma", 3, nodeSpec{})
	nb := m.node(t, "beta", 2, nodeSpec{})
	a := startDaemon(t, na, m.config(t, na, confSpec{coordinator: true}))
	c := startDaemon(t, nc, m.config(t, nc, confSpec{coordinator: true, coordPeers: []string{a.coord.GossipAddr()}}))
	testutil.WaitFor(t, 10*time.Second, "coordinators joined", func() bool { return len(a.coord.Members()) == 2 })
	bConf := confSpec{join: []string{a.sessionAddr()}}
	b := startDaemon(t, nb, m.config(t, nb, bConf))
	events := collectEvents(t, b)
	testutil.WaitFor(t, 20*time.Second, "beta linked to alpha and gamma", func() bool { return online(b, "alpha") && online(b, "gamma") })

	oldClient := b.client.Load()
	bConf.join = []string{a.sessionAddr(), c.sessionAddr()}
	m.config(t, nb, bConf)
	res, err := b.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Changed, []string{"join.coordinators"}) {
		t.Errorf("changed %v", res.Changed)
	}
	if b.client.Load() == oldClient {
		t.Fatal("the session client was not replaced")
	}
	testutil.WaitFor(t, 10*time.Second, "beta's new session", func() bool { return b.client.Load().Status().Connected })
	if !online(b, "gamma") {
		t.Error("the link to gamma dropped during the coordinator reload")
	}

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "failover to gamma", func() bool {
		st := b.client.Load().Status()
		return st.Connected && st.Coordinator == "gamma"
	})
	testutil.WaitFor(t, 5*time.Second, "coordinator_failover event", func() bool {
		return events.has(control.EventCoordinatorFailover, "", "gamma")
	})
	testutil.WaitFor(t, 20*time.Second, "alpha down", func() bool { return !online(b, "alpha") })
	if !events.has(control.EventPeerDown, "alpha", "") {
		t.Error("no peer_down for alpha")
	}
	if !online(b, "gamma") {
		t.Error("the link to gamma did not survive the failover")
	}
}

// TestStartFailureCleansUp: a Start that fails half way (the ICE port is
// taken) reports a network setup error and leaves nothing running.
func TestStartFailureCleansUp(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	n := m.node(t, "solo", 1, nodeSpec{})
	busy, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	path := m.config(t, n, confSpec{coordinator: true})
	text, _ := os.ReadFile(path)
	port := busy.LocalAddr().(*net.UDPAddr).Port
	if err := os.WriteFile(path, []byte(strings.Replace(string(text), "port = 0", "port = "+strconv.Itoa(port), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := New(mustLoad(t, path), Options{Tuning: &Tuning{}})
	if err != nil {
		t.Fatal(err)
	}
	err = d.Start(context.Background())
	if !errors.Is(err, ErrNetwork) || !strings.HasPrefix(err.Error(), "ICE port: ") {
		t.Fatalf("Start: %v, want an ICE port network error", err)
	}
	select {
	case <-d.Wait():
	default:
		t.Error("a failed Start left the daemon open")
	}
	if _, err := os.Stat(filepath.Join(n.dir, "meshd.sock")); err == nil {
		t.Error("a failed Start left the control socket")
	}
}

// TestReadyFromCache: a node restarted while no coordinator answers is
// ready from its cached registry and still knows its peers; without a cache
// it is not ready.
func TestReadyFromCache(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	na := m.node(t, "alpha", 1, nodeSpec{})
	nb := m.node(t, "beta", 2, nodeSpec{})
	a := startDaemon(t, na, m.config(t, na, confSpec{coordinator: true}))
	bPath := m.config(t, nb, confSpec{join: []string{a.sessionAddr()}})
	b := startDaemon(t, nb, bPath)
	testutil.WaitFor(t, 20*time.Second, "beta knows alpha", func() bool { return peerOf(t, b, "alpha").Name == "alpha" })
	b.Close() // writes the registry cache
	a.Close()

	again := startDaemon(t, nb, bPath)
	select {
	case <-again.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready from the cached registry")
	}
	if p := peerOf(t, again, "alpha"); p.Name != "alpha" || p.Online {
		t.Errorf("alpha from the cache: %+v", p)
	}

	nc := m.node(t, "gamma", 3, nodeSpec{})
	fresh := startDaemon(t, nc, m.config(t, nc, confSpec{join: []string{a.sessionAddr()}}))
	select {
	case <-fresh.Ready():
		t.Error("ready without a coordinator session or a cache")
	case <-time.After(300 * time.Millisecond):
	}
}
