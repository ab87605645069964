package control_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/control/controltest"
	"github.com/meshd/meshd/internal/testutil"
)

// callerEnv makes the test binary act as a meshctl-like caller: it asks for
// the status on the socket the variable names and prints the outcome.
const callerEnv = "CONTROL_TEST_CALLER_SOCKET"

func TestMain(m *testing.M) {
	if sock := os.Getenv(callerEnv); sock != "" {
		if _, err := control.NewClient(sock).Status(context.Background()); err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Println("ok")
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRealCallerCredentials runs a real non-root caller (this test binary,
// re-executed as nobody) against the server, so SO_PEERCRED, the /proc
// groups and the socket's mode are all the kernel's.
func TestRealCallerCredentials(t *testing.T) {
	testutil.LeakCheck(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a caller as another user")
	}
	const nobody, group = 65534, 4242
	dir := t.TempDir()
	// nobody must reach the binary and the socket.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(dir, "caller.test")
	copyFile(t, exe)
	sock := filepath.Join(dir, "run", "meshd.sock")
	if len(sock) > 100 {
		t.Skipf("temp path too long for a socket: %s", sock)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	srv, err := control.NewServer(control.ServerOptions{Socket: sock, Group: fmt.Sprint(group), Backend: controltest.New(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	denied := fmt.Sprintf("error: permission denied: run as root or join group %s", groupName(group))
	tests := []struct {
		name         string
		mode         os.FileMode
		gid          uint32
		groups       []uint32
		want         string
		serverDenied bool // the server (not the kernel) refused
	}{
		// The kernel refuses connect(2): the socket is 0660 root:4242.
		{"outsider refused by socket mode", 0o660, nobody, nil, denied, false},
		// A loosened socket mode: the server's own check refuses.
		{"outsider refused by the server", 0o666, nobody, nil, denied, true},
		{"member by supplementary group", 0o660, nobody, []uint32{group}, "ok", false},
		{"member by primary group", 0o660, group, nil, "ok", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.Chmod(sock, tt.mode); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(exe, "-test.run=^$")
			// GORACE: a race-enabled binary otherwise sleeps 1s at exit.
			cmd.Env = []string{callerEnv + "=" + sock, "GORACE=atexit_sleep_ms=0"}
			logs.Reset()
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
				Uid: nobody, Gid: tt.gid, Groups: tt.groups, NoSetGroups: false,
			}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("caller: %v\n%s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tt.want {
				t.Errorf("caller said %q, want %q", got, tt.want)
			}
			logged := strings.Contains(logs.String(), "control request denied") && strings.Contains(logs.String(), "uid=65534")
			if logged != tt.serverDenied {
				t.Errorf("server logged a denial of uid 65534: %v, want %v\n%s", logged, tt.serverDenied, logs.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the server's handler goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
func (s *syncBuffer) Reset()         { s.mu.Lock(); defer s.mu.Unlock(); s.b.Reset() }

func groupName(gid int) string {
	out, err := exec.Command("getent", "group", fmt.Sprint(gid)).Output()
	if err != nil {
		return fmt.Sprint(gid)
	}
	name, _, _ := strings.Cut(string(out), ":")
	return name
}

func copyFile(t *testing.T, dst string) {
	t.Helper()
	src, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
