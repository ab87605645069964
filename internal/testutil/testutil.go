// Package testutil holds the helpers every meshd test shares: goroutine leak
// checks, polling waits instead of sleeps, and the root/namespace guard for tests
// that need real kernel devices.
package testutil

import (
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// LeakCheck fails t at cleanup if goroutines started during the test are still
// running. Call it first in a test, before anything that starts goroutines, so
// its cleanup runs last.
func LeakCheck(t testing.TB, extra ...goleak.Option) {
	t.Helper()
	opts := append([]goleak.Option{
		goleak.IgnoreCurrent(),
		// glog-style flush daemons and the race detector's helpers are not ours.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	}, extra...)
	t.Cleanup(func() {
		// Components stop asynchronously after Close returns in a few places
		// (for example net/http keep-alive readers); give them a moment.
		var err error
		for i := 0; i < 50; i++ {
			if err = goleak.Find(opts...); err == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("goroutine leak: %v", err)
	})
}

// WaitFor polls cond every 10ms until it returns true or timeout passes, and
// fails the test with msg if it never does. Use it instead of time.Sleep.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Eventually is WaitFor without failing: it reports whether cond became true
// within timeout.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RequireRoot skips t unless the test runs as root (real TUN devices, network
// namespaces, netlink).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (TUN devices, network namespaces)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
}

// MinAllocsPerRun is testing.AllocsPerRun repeated up to trials times,
// returning the first zero or else the smallest average. AllocsPerRun
// counts every goroutine's allocations, so in a test with live background
// goroutines (ICE agents, TURN servers, timers) one trial can pick up
// theirs; an allocation in f itself shows in every trial.
func MinAllocsPerRun(trials, runs int, f func()) float64 {
	best := -1.0
	for range trials {
		a := testing.AllocsPerRun(runs, f)
		if best < 0 || a < best {
			best = a
		}
		if best == 0 {
			break
		}
	}
	return best
}
