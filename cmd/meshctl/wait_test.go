package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/control/controltest"
	"github.com/meshd/meshd/internal/testutil"
)

func TestWaitCommand(t *testing.T) {
	h := newHarness(t)
	connected := control.Status{Name: "laptop", Coordinator: control.CoordinatorInfo{
		State: control.SessionConnected, Name: "coord-a", Address: "198.51.100.10:7000"}}
	h.b.SetStatus(connected)
	h.b.SetPeers(samplePeers(time.Now()))

	t.Run("node up", func(t *testing.T) {
		out, err := h.run(t, "wait")
		if err != nil || !strings.HasPrefix(out, "meshd is up") {
			t.Errorf("wait: %q, %v", out, err)
		}
	})
	t.Run("peer up", func(t *testing.T) {
		out, err := h.run(t, "wait", "--peer", "vps")
		if err != nil || !strings.HasPrefix(out, "peer vps is up via relay 198.51.100.20:3478") {
			t.Errorf("wait --peer vps: %q, %v", out, err)
		}
	})
	t.Run("no coordinator times out", func(t *testing.T) {
		st := connected
		st.Coordinator.State, st.Coordinator.LastError = control.SessionConnecting, "connection refused"
		h.b.SetStatus(st)
		defer h.b.SetStatus(connected)
		_, err := h.run(t, "wait", "--timeout", "300ms")
		want := "timed out after 300ms: meshd runs but has no coordinator session (connecting to coord-a (198.51.100.10:7000) (last error: connection refused))"
		if exitCode(err) != 1 || err.Error() != want {
			t.Errorf("wait without coordinator: %v (exit %d), want %q", err, exitCode(err), want)
		}
	})
	t.Run("offline peer times out", func(t *testing.T) {
		_, err := h.run(t, "wait", "--peer", "laptop", "--timeout", "300ms")
		want := "timed out after 300ms: peer laptop is failed (last error: ice: no candidate pair succeeded)"
		if exitCode(err) != 1 || err.Error() != want {
			t.Errorf("wait for offline peer: %v, want %q", err, want)
		}
	})
	t.Run("unknown peer times out", func(t *testing.T) {
		_, err := h.run(t, "wait", "--peer", "ghost", "--timeout", "300ms")
		if exitCode(err) != 1 || err.Error() != "timed out after 300ms: peer ghost is not in the mesh (yet)" {
			t.Errorf("wait for unknown peer: %v", err)
		}
	})
	t.Run("relay until direct", func(t *testing.T) {
		h.b.SetPeers(samplePeers(time.Now()))
		calls := h.b.Calls(controltest.MethodStatus)
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Let wait see the relayed path a few times, then go direct.
			testutil.WaitFor(t, 5*time.Second, "wait to poll", func() bool { return h.b.Calls(controltest.MethodStatus) >= calls+2 })
			peers := samplePeers(time.Now())
			peers[1].Path, peers[1].Endpoint = control.PathDirect, ap("198.51.100.77:51820")
			h.b.SetPeers(peers)
		}()
		out, err := h.run(t, "wait", "--peer", "vps", "--direct", "--timeout", "10s", "--json")
		<-done
		if err != nil {
			t.Fatalf("wait --direct: %v", err)
		}
		var res waitResult
		if err := control.Decode([]byte(out), &res); err != nil || !res.Ready || res.Peer == nil || res.Peer.Path != control.PathDirect {
			t.Errorf("wait --direct --json: %v, %+v\n%s", err, res, out)
		}
	})
	t.Run("relay only times out with json", func(t *testing.T) {
		h.b.SetPeers(samplePeers(time.Now()))
		out, err := h.run(t, "wait", "--peer", "vps", "--direct", "--timeout", "300ms", "--json")
		var res waitResult
		if exitCode(err) != 1 || control.Decode([]byte(out), &res) != nil || res.Ready ||
			!strings.Contains(res.Reason, "is up via relay 198.51.100.20:3478, not direct") {
			t.Errorf("wait --direct over relay: %v, %+v", err, res)
		}
	})
	t.Run("usage", func(t *testing.T) {
		if _, err := h.run(t, "wait", "--direct"); exitCode(err) != 2 {
			t.Errorf("wait --direct without --peer: %v, want exit 2", err)
		}
	})
}

// TestWaitForDaemonToStart: wait keeps polling while meshd is not running.
func TestWaitForDaemonToStart(t *testing.T) {
	testutil.LeakCheck(t)
	sock := controltest.SocketPath(t)
	_, err := runMeshctl(context.Background(), sock, "wait", "--timeout", "200ms")
	if want := "timed out after 200ms: meshd is not running (no socket at " + sock + ")"; exitCode(err) != 1 || err.Error() != want {
		t.Errorf("wait without meshd: %v, want %q", err, want)
	}

	b := controltest.New()
	b.SetStatus(control.Status{Coordinator: control.CoordinatorInfo{State: control.SessionConnected}})
	srv, err := control.NewServer(control.ServerOptions{Socket: sock, Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- runMeshctlTo(context.Background(), &out, sock, "wait", "--timeout", "10s") }()
	// Let meshctl wait poll the missing socket a few times (nothing to
	// observe from outside: it prints only at the end), then start meshd.
	<-time.After(3 * waitPoll)
	if out.String() != "" {
		t.Fatalf("wait finished before meshd started: %q", out.String())
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil || !strings.HasPrefix(out.String(), "meshd is up") {
		t.Errorf("wait while meshd starts: %v, %q", err, out.String())
	}
}
