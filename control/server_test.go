package control_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/control/controltest"
	"github.com/meshd/meshd/internal/testutil"
)

func newServer(t *testing.T, opts control.ServerOptions) *control.Server {
	t.Helper()
	if opts.Backend == nil {
		opts.Backend = controltest.New()
	}
	srv, err := control.NewServer(opts)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func TestNewServerValidates(t *testing.T) {
	if _, err := control.NewServer(control.ServerOptions{Socket: "/tmp/x.sock"}); err == nil {
		t.Error("NewServer without a Backend succeeded")
	}
	_, err := control.NewServer(control.ServerOptions{Backend: controltest.New(), Group: "no-such-group-meshd-test"})
	if !errors.Is(err, control.ErrUnknownGroup) {
		t.Errorf("NewServer with an unknown group: %v, want ErrUnknownGroup", err)
	}
	srv, err := control.NewServer(control.ServerOptions{Backend: controltest.New()})
	if err != nil || srv.Socket() != control.DefaultSocket {
		t.Errorf("NewServer defaults: %v, socket %q; want %q", err, srv.Socket(), control.DefaultSocket)
	}
}

func TestSocketModeGroupAndDirectory(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.RequireRoot(t) // chown to another group
	dir := filepath.Join(filepath.Dir(controltest.SocketPath(t)), "run", "meshd")
	sock := filepath.Join(dir, "meshd.sock")
	srv := newServer(t, control.ServerOptions{Socket: sock, Group: "4242"})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	di, err := os.Stat(dir)
	if err != nil || di.Mode().Perm() != 0o755 {
		t.Errorf("socket directory: %v, mode %v; want created 0755", err, di.Mode().Perm())
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want a socket with 0660", fi.Mode())
	}
	if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != 4242 {
		t.Errorf("socket group %d, want 4242", gid)
	}
	if _, err := control.NewClient(sock).Status(context.Background()); err != nil {
		t.Errorf("root over the real socket: %v, want allowed", err)
	}
	srv.Close()
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Close: %v, want removed", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	testutil.LeakCheck(t)
	sock := controltest.SocketPath(t)
	// A crashed daemon leaves its socket file behind with nobody accepting.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	c := control.NewClient(sock)
	_, err = c.Status(context.Background())
	var nr *control.NotRunningError
	if !errors.As(err, &nr) || !nr.Refused {
		t.Errorf("client on a stale socket: %v, want NotRunningError{Refused}", err)
	}

	srv := newServer(t, control.ServerOptions{Socket: sock})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("Start over a stale socket: %v", err)
	}
	if _, err := c.Status(context.Background()); err != nil {
		t.Errorf("status after replacing the stale socket: %v", err)
	}
}

func TestLiveSocketIsNotStolen(t *testing.T) {
	testutil.LeakCheck(t)
	sock := controltest.SocketPath(t)
	first := newServer(t, control.ServerOptions{Socket: sock})
	if err := first.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	second := newServer(t, control.ServerOptions{Socket: sock})
	if err := second.Start(context.Background()); !errors.Is(err, control.ErrSocketInUse) {
		t.Fatalf("second Start on a live socket: %v, want ErrSocketInUse", err)
	}
	second.Close()
	if _, err := control.NewClient(sock).Status(context.Background()); err != nil {
		t.Errorf("first server after a refused second one: %v", err)
	}
}

func TestNonSocketFileIsNotRemoved(t *testing.T) {
	sock := controltest.SocketPath(t)
	if err := os.WriteFile(sock, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, control.ServerOptions{Socket: sock})
	if err := srv.Start(context.Background()); !errors.Is(err, control.ErrSocketInUse) {
		t.Errorf("Start over a regular file: %v, want ErrSocketInUse", err)
	}
	if b, err := os.ReadFile(sock); err != nil || string(b) != "precious" {
		t.Errorf("regular file after Start: %q, %v; want untouched", b, err)
	}
}

func TestServerLifecycle(t *testing.T) {
	testutil.LeakCheck(t)
	t.Run("close before start", func(t *testing.T) {
		srv := newServer(t, control.ServerOptions{Socket: controltest.SocketPath(t)})
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		<-srv.Done()
		if err := srv.Start(context.Background()); !errors.Is(err, control.ErrServerClosed) {
			t.Errorf("Start after Close: %v, want ErrServerClosed", err)
		}
	})
	t.Run("close is idempotent", func(t *testing.T) {
		sock := controltest.SocketPath(t)
		srv := newServer(t, control.ServerOptions{Socket: sock})
		if err := srv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(context.Background()); !errors.Is(err, control.ErrServerClosed) {
			t.Errorf("second Start: %v, want ErrServerClosed", err)
		}
		srv.Close()
		srv.Close()
		if err := srv.Wait(); err != nil {
			t.Errorf("Wait after Close: %v, want nil", err)
		}
		_, err := control.NewClient(sock).Status(context.Background())
		var nr *control.NotRunningError
		if !errors.As(err, &nr) || nr.Refused {
			t.Errorf("client after Close: %v, want NotRunningError (no socket)", err)
		}
		if want := "meshd is not running (no socket at " + sock + ")"; err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	})
	t.Run("context ends serving", func(t *testing.T) {
		sock := controltest.SocketPath(t)
		srv := newServer(t, control.ServerOptions{Socket: sock})
		ctx, cancel := context.WithCancel(context.Background())
		if err := srv.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case <-srv.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("server still running 5s after its context ended")
		}
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket after ctx end: %v, want removed", err)
		}
	})
	t.Run("close leaves a replacement socket alone", func(t *testing.T) {
		sock := controltest.SocketPath(t)
		srv := newServer(t, control.ServerOptions{Socket: sock})
		if err := srv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Someone (a newer meshd) replaced the file while this one ran.
		if err := os.Remove(sock); err != nil {
			t.Fatal(err)
		}
		other, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		srv.Close()
		if _, err := os.Lstat(sock); err != nil {
			t.Errorf("Close removed a socket it did not create: %v", err)
		}
	})
}
