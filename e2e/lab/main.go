//go:build e2e

package lab

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// run is the process-wide state of the lab machinery: the namespace prefix of
// this test binary, the labs still open (for the signal and timeout paths) and
// the directory of binaries built with Build. Main sets it up and tears it down.
var run struct {
	mu       sync.Mutex // guards the following
	active   bool
	stopping bool   // a signal arrived or the timeout is near: no new labs
	prefix   string // e.g. "md1234-"; every namespace of this process starts with it
	lock     *os.File
	buildDir string
	labs     map[*Lab]struct{}
	seq      int
}

// discard is the logger of sweeps that run outside any lab.
var discard = slog.New(slog.DiscardHandler)

// Main runs the tests of an e2e package with the lab's cleanup guarantees.
// Every package that uses the lab must call it from TestMain:
//
//	func TestMain(m *testing.M) { lab.Main(m) }
//
// Before the tests it picks this process's namespace prefix ("md<pid%10000>-",
// guarded by a lock file so two live runs never share one) and sweeps
// namespaces left under that prefix by a dead earlier run. While tests run,
// SIGINT, SIGTERM and SIGHUP tear down every open lab before the process
// exits, and a watchdog does the same shortly before -test.timeout would kill
// the binary (a timeout panic skips t.Cleanup). After the tests it closes any
// lab still open, sweeps the prefix again and removes built binaries.
func Main(m *testing.M) {
	os.Exit(mainRun(m))
}

func mainRun(m *testing.M) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	run.mu.Lock()
	run.labs = map[*Lab]struct{}{}
	if os.Geteuid() == 0 {
		if err := acquirePrefix(); err != nil {
			run.mu.Unlock()
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if n, err := sweepPrefix(run.prefix); err != nil {
			fmt.Fprintln(os.Stderr, "lab: sweeping stale namespaces:", err)
		} else if n > 0 {
			fmt.Fprintf(os.Stderr, "lab: removed %d stale namespaces with prefix %s\n", n, run.prefix)
		}
	}
	// Built binaries go to a directory named after the prefix when there is
	// one, so that a run killed before it could clean up (a timeout panic)
	// has its leftovers removed by the next run that gets the prefix.
	var buildDir string
	var err error
	if run.prefix != "" {
		buildDir = filepath.Join(os.TempDir(), "meshd-lab", run.prefix+"bin")
		if err = os.RemoveAll(buildDir); err == nil {
			err = os.MkdirAll(buildDir, 0o755)
		}
	} else {
		buildDir, err = os.MkdirTemp("", "meshd-lab-bin-")
	}
	if err != nil {
		run.mu.Unlock()
		fmt.Fprintln(os.Stderr, "lab: directory for binaries:", err)
		return 1
	}
	defer os.RemoveAll(buildDir)
	run.buildDir = buildDir
	run.active = true
	run.mu.Unlock()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case s := <-sig:
			// A second signal gets the default action: a user who presses
			// Ctrl-C again wants out now.
			signal.Stop(sig)
			fmt.Fprintf(os.Stderr, "lab: %v: tearing down open labs (again to abort)\n", s)
			stopNewLabs()
			teardownAll(os.Stderr)
			_ = os.RemoveAll(buildDir)
			run.mu.Lock()
			releasePrefix()
			run.mu.Unlock()
			code := 1
			if n, ok := s.(syscall.Signal); ok {
				code = 128 + int(n)
			}
			os.Exit(code)
		case <-stop:
		}
	}()

	var watchdog *time.Timer
	if d := testTimeout(); d > 0 {
		margin := min(max(d/10, 2*time.Second), 30*time.Second)
		if d > 2*margin {
			watchdog = time.AfterFunc(d-margin, func() {
				fmt.Fprintf(os.Stderr, "lab: -test.timeout %v is %v away: tearing down open labs now\n", d, margin)
				stopNewLabs()
				teardownAll(os.Stderr)
				// The timeout panic skips deferred calls.
				_ = os.RemoveAll(buildDir)
			})
		}
	}

	code := m.Run()

	if watchdog != nil {
		watchdog.Stop()
	}
	signal.Stop(sig)
	close(stop)
	<-stopped
	if n := teardownAll(os.Stderr); n > 0 {
		fmt.Fprintf(os.Stderr, "lab: %d labs were still open after the tests\n", n)
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	run.active = false
	if run.prefix != "" {
		if n, err := sweepPrefix(run.prefix); err != nil || n > 0 {
			fmt.Fprintf(os.Stderr, "lab: final sweep removed %d namespaces (err %v)\n", n, err)
			if code == 0 {
				code = 1
			}
		}
	}
	releasePrefix()
	return code
}

func testTimeout() time.Duration {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return 0
	}
	if g, ok := f.Value.(flag.Getter); ok {
		if d, ok := g.Get().(time.Duration); ok {
			return d
		}
	}
	return 0
}

// acquirePrefix picks "md<pid%10000>-" or, if a live process holds that
// prefix's lock, a lettered variant. The lock is an flock the kernel drops
// when the process dies, so a held lock means a live owner and an unheld one
// means any namespaces under the prefix are stale. Must hold run.mu.
func acquirePrefix() error {
	dir := filepath.Join(os.TempDir(), "meshd-lab")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lab: lock dir: %w", err)
	}
	base := fmt.Sprintf("md%d", os.Getpid()%10000)
	for _, suffix := range []string{"", "a", "b", "c", "d", "e", "f", "g"} {
		prefix := base + suffix + "-"
		f, err := lockFile(filepath.Join(dir, prefix+"lock"))
		if err != nil {
			return err
		}
		if f == nil {
			continue // held by a live process
		}
		run.lock = f
		run.prefix = prefix
		return nil
	}
	return errors.New("lab: every namespace prefix for this pid is held by a live process")
}

// lockFile takes an exclusive flock on path, or returns nil if another
// process holds it. Since releasePrefix unlinks the file while holding the
// lock, a lock won on an inode that is no longer at path is retried: two
// processes can never both hold "the" lock of one prefix.
func lockFile(path string) (*os.File, error) {
	for attempt := 0; attempt < 10; attempt++ {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, fmt.Errorf("lab: lock file: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			return nil, nil
		}
		var held, onDisk syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &held) == nil && syscall.Stat(path, &onDisk) == nil && held.Ino == onDisk.Ino {
			return f, nil
		}
		f.Close() // unlinked by its releasing owner meanwhile; try again
	}
	return nil, fmt.Errorf("lab: lock file %s keeps changing", path)
}

// releasePrefix removes this process's lock file, still holding the lock,
// then drops it. Must hold run.mu.
func releasePrefix() {
	if run.lock == nil {
		return
	}
	_ = os.Remove(run.lock.Name())
	_ = run.lock.Close()
	run.lock = nil
}

// listNetns returns the names `ip netns list` shows.
func listNetns(log *slog.Logger) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := execCmd(ctx, log, "", "", []string{"ip", "netns", "list"})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// sweepPrefix kills the processes in and deletes every namespace whose name
// starts with prefix, and returns how many it deleted. Only ever called with
// this process's own prefix or a lab's sub-prefix of it.
func sweepPrefix(prefix string) (int, error) {
	names, err := listNetns(discard)
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, name := range names {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		if err := deleteNetns(discard, name); err != nil {
			errs = append(errs, err)
			continue
		}
		// The namespace's StateDir, if it had one.
		_ = os.RemoveAll(filepath.Join(os.TempDir(), "meshd-lab", name))
		n++
	}
	return n, errors.Join(errs...)
}

// deleteNetns SIGKILLs every process in the namespace (by PID, as `ip netns
// pids` lists them), waits for them to leave it, and deletes it. A namespace
// with a process left in it would outlive `ip netns del` with its veths.
func deleteNetns(log *slog.Logger, name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := execCmd(ctx, log, "", "", []string{"ip", "netns", "pids", name})
		if err != nil {
			return err
		}
		pids, err := parsePids(out)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: pids %v still in netns %s", ErrLeftovers, pids, name)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond) // the kernel reaps asynchronously; poll
	}
	_, err := execCmd(ctx, log, "", "", []string{"ip", "netns", "del", name})
	return err
}

// stopNewLabs makes New fail from now on, so that no lab is built after
// the teardown that a signal or the timeout watchdog started.
func stopNewLabs() {
	run.mu.Lock()
	defer run.mu.Unlock()
	run.stopping = true
}

// register adds l to the open labs and names it; it fails if Main is not
// running.
func register(l *Lab) error {
	run.mu.Lock()
	defer run.mu.Unlock()
	if !run.active {
		return ErrNoMain
	}
	if run.stopping {
		return ErrShuttingDown
	}
	run.seq++
	l.prefix = fmt.Sprintf("%s%d-", run.prefix, run.seq)
	run.labs[l] = struct{}{}
	return nil
}

func unregister(l *Lab) {
	run.mu.Lock()
	defer run.mu.Unlock()
	delete(run.labs, l)
}

// teardownAll closes every open lab concurrently and returns how many there
// were.
func teardownAll(w io.Writer) int {
	run.mu.Lock()
	labs := make([]*Lab, 0, len(run.labs))
	for l := range run.labs {
		labs = append(labs, l)
	}
	run.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range labs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Close(); err != nil {
				fmt.Fprintf(w, "lab %s: %v\n", l.prefix, err)
			}
		}()
	}
	wg.Wait()
	return len(labs)
}
