package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/control/controltest"
	"github.com/meshd/meshd/internal/testutil"
)

// harness is a control server with a fake backend for in-process meshctl
// runs.
type harness struct {
	b    *controltest.Backend
	sock string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	testutil.LeakCheck(t)
	b := controltest.New()
	_, sock := controltest.Serve(t, b)
	return &harness{b: b, sock: sock}
}

// run executes meshctl with args (plus --socket) and returns its stdout.
func (h *harness) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runMeshctl(context.Background(), h.sock, args...)
}

func runMeshctl(ctx context.Context, sock string, args ...string) (string, error) {
	var out syncBuffer
	err := runMeshctlTo(ctx, &out, sock, args...)
	return out.String(), err
}

func runMeshctlTo(ctx context.Context, out io.Writer, sock string, args ...string) error {
	return runArgs(ctx, out, append(args, "--socket", sock)...)
}

// runArgs executes meshctl with exactly args.
func runArgs(ctx context.Context, out io.Writer, args ...string) error {
	root := newRootCmd()
	root.SetOut(out)
	root.SetErr(io.Discard)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return 1
	}
	return 0
}

var (
	addr = netip.MustParseAddr
	ap   = netip.MustParseAddrPort
)

// samplePeers is one direct, one relayed and one failed peer, with times
// relative to now.
func samplePeers(now time.Time) []control.Peer {
	return []control.Peer{
		{
			Name: "nas", Address: addr("100.64.0.2"), Online: true, State: control.LinkUp,
			Path: control.PathDirect, LocalCandidate: control.CandidateHost, RemoteCandidate: control.CandidateSrflx,
			Endpoint: ap("203.0.113.5:51820"), RTT: 1234 * time.Microsecond,
			RxBytes: 3 << 30, TxBytes: 5<<20 + 512<<10, RxPackets: 800000, TxPackets: 4000,
			LastHandshake: now.Add(-3*time.Minute - 10*time.Second),
		},
		{
			Name: "vps", Address: addr("100.64.0.3"), Online: true, State: control.LinkUp,
			Path: control.PathRelay, LocalCandidate: control.CandidateRelay, RemoteCandidate: control.CandidateSrflx,
			Endpoint: ap("198.51.100.77:40000"), Relay: "198.51.100.20:3478", RTT: 42 * time.Millisecond,
			RxBytes: 2048, TxBytes: 700, LastHandshake: now.Add(-45 * time.Second),
		},
		{
			Name: "laptop", Address: addr("100.64.0.4"), State: control.LinkFailed,
			LastHandshake: now.Add(-50 * time.Hour), LastError: "ice: no candidate pair succeeded",
		},
	}
}

func TestNotRunning(t *testing.T) {
	testutil.LeakCheck(t)
	sock := controltest.SocketPath(t)
	for _, cmd := range [][]string{{"status"}, {"peers"}, {"ping", "nas"}, {"netcheck"}, {"events"}, {"reload"}} {
		_, err := runMeshctl(context.Background(), sock, cmd...)
		want := "meshd is not running (no socket at " + sock + ")"
		if err == nil || err.Error() != want {
			t.Errorf("meshctl %s: %v, want %q", cmd[0], err, want)
		}
	}
}

func TestPermissionDeniedMessage(t *testing.T) {
	testutil.LeakCheck(t)
	testutil.RequireRoot(t) // chown the socket to another group
	sock := controltest.SocketPath(t)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sock, -1, 4242); err != nil {
		t.Fatal(err)
	}
	// What meshd answers a caller outside its group.
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"schema_version":1,"error":"permission denied","code":"permission_denied"}`)
	})}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	defer func() { hs.Close(); <-done }()

	_, err = runMeshctl(context.Background(), sock, "status")
	if want := "permission denied: run as root or join group " + groupNameOf(4242); err == nil || err.Error() != want {
		t.Errorf("status when denied: %v, want %q", err, want)
	}
}

func groupNameOf(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}

func TestSocketFlagBeforeSubcommand(t *testing.T) {
	h := newHarness(t)
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"--socket", h.sock, "status", "--json"})
	if err := root.Execute(); err != nil {
		t.Fatalf("meshctl --socket PATH status: %v", err)
	}
	var st control.Status
	if err := control.Decode(out.Bytes(), &st); err != nil || st.Name != "test" {
		t.Errorf("status --json: %v, %+v", err, st)
	}
}

func TestCompletion(t *testing.T) {
	h := newHarness(t)
	h.b.SetPeers(samplePeers(time.Now()))
	var script bytes.Buffer
	if err := runArgs(context.Background(), &script, "completion", "bash"); err != nil {
		t.Fatal(err)
	}
	if out := script.String(); !strings.Contains(out, "bash completion") || !strings.Contains(out, "__start_meshctl") {
		t.Errorf("completion bash did not produce a bash completion script:\n%.300s", out)
	}
	for _, shell := range []string{"zsh", "fish", "powershell"} {
		script.Reset()
		if err := runArgs(context.Background(), &script, "completion", shell); err != nil || script.Len() < 100 {
			t.Errorf("completion %s: %v, %d bytes", shell, err, script.Len())
		}
	}
	// Peer names complete from the running daemon.
	var comp bytes.Buffer
	if err := runArgs(context.Background(), &comp, "__complete", "ping", "--socket", h.sock, ""); err != nil {
		t.Fatal(err)
	}
	out := comp.String()
	for _, want := range []string{"laptop\t100.64.0.4", "nas\t100.64.0.2", "vps\t100.64.0.3"} {
		if !strings.Contains(out, want) {
			t.Errorf("ping completion lacks %q:\n%s", want, out)
		}
	}
	comp.Reset()
	err := runArgs(context.Background(), &comp, "__complete", "peers", "--socket", h.sock, "--why", "")
	if err != nil || !strings.Contains(comp.String(), "vps\t100.64.0.3") {
		t.Errorf("peers --why completion: %v\n%s", err, comp.String())
	}
}
