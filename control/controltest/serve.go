package controltest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshd/meshd/control"
)

// maxSocketPath keeps socket paths under the kernel's sun_path limit (108
// bytes, including the terminating NUL).
const maxSocketPath = 100

// SocketPath returns a fresh socket path in a temporary directory removed at
// cleanup: t.TempDir() when its path is short enough, else a shorter one.
func SocketPath(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir)+len("/meshd.sock") > maxSocketPath {
		var err error
		dir, err = os.MkdirTemp("", "ctl")
		if err != nil {
			t.Fatalf("make socket directory: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	return filepath.Join(dir, "meshd.sock")
}

// Serve starts a control.Server for b on a fresh socket (no group: only root
// and the test's own uid may use it) and closes it at cleanup. It returns the
// server and its socket path.
func Serve(t testing.TB, b control.Backend) (*control.Server, string) {
	t.Helper()
	sock := SocketPath(t)
	srv, err := control.NewServer(control.ServerOptions{Socket: sock, Backend: b})
	if err != nil {
		t.Fatalf("control.NewServer: %v", err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("control server Start: %v", err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, sock
}
