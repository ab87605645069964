package main

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/meshd/meshd/internal/testutil"
)

// notifySocket is a stand-in for systemd's NOTIFY_SOCKET.
type notifySocket struct {
	path string
	conn *net.UnixConn
	done chan struct{}

	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(t.TempDir(), "notify.sock"), done: make(chan struct{})}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n.conn = c
	go func() {
		defer close(n.done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-n.done })
	return n
}

// waitFor waits for a message after index from that contains line as one
// of its lines, and returns its index.
func (n *notifySocket) waitFor(t *testing.T, from int, line string, timeout time.Duration) int {
	t.Helper()
	at := -1
	testutil.WaitFor(t, timeout, "sd_notify "+line, func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		for i := from; i < len(n.msgs); i++ {
			for _, l := range strings.Split(n.msgs[i], "\n") {
				if l == line {
					at = i
					return true
				}
			}
		}
		return false
	})
	return at
}

func (n *notifySocket) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// child is meshd (this test binary in main mode) running in a subprocess.
type child struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
	err  error
}

func startChild(t *testing.T, cfg string, notify *notifySocket, ownNetns bool) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "--config", cfg)
	cmd.Env = append(os.Environ(), "MESHD_TEST_MAIN=1", "NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=400000")
	if ownNetns {
		cmd.Env = append(cmd.Env, "MESHD_TEST_LO_UP=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	}
	c := &child{cmd: cmd, out: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("meshd output:\n%s", c.out.String())
		}
	})
	return c
}

// exit waits for the child to exit and returns its exit code.
func (c *child) exit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("meshd did not exit within %v", timeout)
	}
	var ee *exec.ExitError
	if errors.As(c.err, &ee) {
		return ee.ExitCode()
	}
	if c.err != nil {
		t.Fatal(c.err)
	}
	return 0
}

// inNetns runs fn with the calling goroutine's thread in ns.
func inNetns(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic("cannot return to the test's network namespace: " + err.Error())
		}
	}()
	fn()
}

// TestSystemdKernelTUN runs meshd with a kernel TUN in a network namespace
// of its own, under a fake systemd: READY=1 comes only once the overlay
// address can be bound, the watchdog is fed, SIGHUP is bracketed by
// RELOADING=1 / READY=1, and SIGTERM exits 0 having removed the device, its
// address and its routes.
func TestSystemdKernelTUN(t *testing.T) {
	testutil.RequireRoot(t)
	f := newFixture(t)
	notify := listenNotify(t)
	c := startChild(t, f.config(t, "kernel", ""), notify, true)
	ns, err := netns.GetFromPid(c.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()

	ready := notify.waitFor(t, 0, "READY=1", 20*time.Second)
	overlayAddr := netip.MustParseAddr("100.64.0.1")
	inNetns(t, ns, func() {
		u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(overlayAddr, 0)))
		if err != nil {
			t.Fatalf("READY=1 was sent but the overlay address is not bindable: %v", err)
		}
		u.Close()
	})
	for _, m := range notify.all()[:ready] {
		if strings.Contains(m, "READY=1") {
			t.Fatalf("READY=1 sent twice before the first: %q", m)
		}
	}
	if msg := notify.all()[ready]; !strings.Contains(msg, "STATUS=coordinator node1 connected") {
		t.Errorf("READY message %q lacks the status line", msg)
	}
	notify.waitFor(t, ready, "WATCHDOG=1", 5*time.Second)

	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.LinkByName("meshd0"); err != nil {
		t.Fatalf("meshd0 missing while running: %v", err)
	}

	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	rel := notify.waitFor(t, ready+1, "RELOADING=1", 5*time.Second)
	if !strings.Contains(notify.all()[rel], "MONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", notify.all()[rel])
	}
	notify.waitFor(t, rel+1, "READY=1", 5*time.Second)

	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notify.waitFor(t, rel+1, "STOPPING=1", 5*time.Second)
	if code := c.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if _, err := h.LinkByName("meshd0"); err == nil {
		t.Error("meshd0 still exists after meshd exited")
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.To4() != nil && r.Dst.IP.To4()[0] == 100 {
			t.Errorf("route %v left behind", r.Dst)
		}
	}
	if _, err := os.Stat(filepath.Join(f.dir, "meshd.sock")); err == nil {
		t.Error("the control socket was left behind")
	}
}

// TestSystemdUserspace is the same life cycle without root: userspace mode
// (the overlay address lives in meshd's netstack, so the test cannot bind
// it from outside; the daemon package tests that readiness checks it).
// SIGINT stops it as SIGTERM does.
func TestSystemdUserspace(t *testing.T) {
	f := newFixture(t)
	notify := listenNotify(t)
	c := startChild(t, f.config(t, "userspace", ""), notify, false)
	ready := notify.waitFor(t, 0, "READY=1", 20*time.Second)
	notify.waitFor(t, ready, "WATCHDOG=1", 5*time.Second)
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	notify.waitFor(t, ready, "STOPPING=1", 5*time.Second)
	if code := c.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0", code)
	}
}
