//go:build e2e

package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// The stale sweep removes namespaces under the given prefix, with the
// processes in them, and nothing else.
func TestSweepPrefix(t *testing.T) {
	testutil.RequireRoot(t)
	run.mu.Lock()
	prefix := run.prefix
	run.mu.Unlock()
	if prefix == "" {
		t.Fatal("Main did not pick a prefix")
	}
	// A sub-prefix of our own, so that labs of tests running in parallel
	// are not swept.
	stale := prefix + "sweeptest-"
	keep := "zz" + strings.TrimSuffix(prefix, "-") + "keep" // not under stale
	for _, n := range []string{stale + "a", stale + "b", keep} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v %s", n, err, out)
		}
	}
	t.Cleanup(func() { _ = deleteNetns(discard, keep) })
	sleeper := exec.Command("ip", "netns", "exec", stale+"a", "sleep", "300")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(reaped) }()
	testutil.WaitFor(t, 5*time.Second, "sleeper inside the stale namespace", func() bool {
		out, _ := exec.Command("ip", "netns", "pids", stale+"a").Output()
		return strings.TrimSpace(string(out)) != ""
	})

	n, err := sweepPrefix(stale)
	if err != nil || n != 2 {
		t.Fatalf("sweepPrefix = %d, %v; want 2, nil", n, err)
	}
	select {
	case <-reaped:
	case <-time.After(5 * time.Second):
		t.Fatal("process in a swept namespace survived")
	}
	names, err := listNetns(discard)
	if err != nil {
		t.Fatal(err)
	}
	var keptOK bool
	for _, name := range names {
		if strings.HasPrefix(name, stale) {
			t.Errorf("swept namespace %s still listed", name)
		}
		keptOK = keptOK || name == keep
	}
	if !keptOK {
		t.Errorf("namespace %s outside the prefix was swept", keep)
	}
}

// The prefix lock is held for as long as the test binary lives, so another
// run cannot take (and sweep) this run's prefix.
func TestPrefixLockHeld(t *testing.T) {
	testutil.RequireRoot(t)
	run.mu.Lock()
	prefix := run.prefix
	run.mu.Unlock()
	f, err := os.Open(filepath.Join(os.TempDir(), "meshd-lab", prefix+"lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err != syscall.EWOULDBLOCK {
		t.Fatalf("second flock on %s: %v, want EWOULDBLOCK", prefix+"lock", err)
	}
}
