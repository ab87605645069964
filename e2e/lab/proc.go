//go:build e2e

package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// defaultStopTimeout is how long Stop waits after SIGTERM before SIGKILL.
const defaultStopTimeout = 3 * time.Second

// ProcOptions configures a process started with StartWith.
type ProcOptions struct {
	// Label names the output files, <netns short name>.<label>.stdout and
	// .stderr in the lab's artifact dir; empty means the program's base name.
	// A number is appended if the files exist.
	Label string
	// Env is added to the test binary's environment.
	Env []string
	// Dir is the working directory; empty means the test's.
	Dir string
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL; zero
	// means 3s.
	StopTimeout time.Duration
}

// Proc is a long-running program started in a lab namespace. Its stdout and
// stderr go to files in the artifact dir. Stop it with Stop; Close of the lab
// stops it too.
type Proc struct {
	// immutable after start
	ns          *Namespace
	label       string
	cmd         *exec.Cmd
	stdoutPath  string
	stderrPath  string
	stopTimeout time.Duration

	done    chan struct{} // closed after waitErr is set
	waitErr error

	stopOnce sync.Once
}

// Start starts name with args inside the namespace; see StartWith.
func (n *Namespace) Start(name string, args ...string) (*Proc, error) {
	return n.StartWith(ProcOptions{}, name, args...)
}

// StartWith starts name with args inside the namespace and returns at once.
// The process leads its own process group (so Stop reaches what it forks)
// and is SIGKILLed if the test binary dies.
func (n *Namespace) StartWith(opts ProcOptions, name string, args ...string) (*Proc, error) {
	l := n.lab
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if err := checkProgram(name); err != nil {
		return nil, err
	}
	label := opts.Label
	if label == "" {
		label = filepath.Base(name)
	}
	label = sanitize(label)
	base := filepath.Join(l.dir, n.short+"."+label)
	stdoutPath, stderrPath := base+".stdout", base+".stderr"
	// O_EXCL on stdout claims the name, also against a concurrent Start
	// with the same label.
	stdout, err := os.OpenFile(stdoutPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	for i := 2; errors.Is(err, os.ErrExist) && i < 1000; i++ {
		stdoutPath = fmt.Sprintf("%s.%d.stdout", base, i)
		stderrPath = fmt.Sprintf("%s.%d.stderr", base, i)
		stdout, err = os.OpenFile(stdoutPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	stderr, err := os.Create(stderrPath)
	if err != nil {
		stdout.Close()
		return nil, fmt.Errorf("lab: %w", err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Dir = opts.Dir
	if len(opts.Env) > 0 {
		cmd.Env = append(os.Environ(), opts.Env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Proc{
		ns: n, label: label, cmd: cmd, stdoutPath: stdoutPath, stderrPath: stderrPath,
		stopTimeout: opts.StopTimeout, done: make(chan struct{}),
	}
	if p.stopTimeout <= 0 {
		p.stopTimeout = defaultStopTimeout
	}
	if err := cmd.Start(); err != nil {
		stdout.Close()
		stderr.Close()
		return nil, fmt.Errorf("lab: start %s in %s: %w", name, n.name, err)
	}
	l.mu.Lock()
	l.procs[p] = struct{}{}
	l.mu.Unlock()
	l.log.Info("process started", "netns", n.name, "pid", cmd.Process.Pid, "argv", name+" "+strings.Join(args, " "), "stdout", stdoutPath)
	// The reaper: ends when the process does; Stop and lab Close make sure
	// that happens.
	go func() {
		err := cmd.Wait()
		stdout.Close()
		stderr.Close()
		p.waitErr = err
		l.log.Info("process exited", "netns", n.name, "pid", cmd.Process.Pid, "label", label, "status", err)
		close(p.done)
	}()
	return p, nil
}

// PID returns the process ID (the program itself: `ip netns exec` execs it).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its status (nil for exit
// code 0, *exec.ExitError otherwise).
func (p *Proc) Wait() error {
	<-p.done
	return p.waitErr
}

// Signal sends sig to the process's group, by PID.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	if err := syscall.Kill(-p.PID(), sig); err != nil && err != syscall.ESRCH {
		return fmt.Errorf("lab: signal %v to pid %d: %w", sig, p.PID(), err)
	}
	return nil
}

// Stop ends the process: SIGTERM (and SIGCONT, in case it is paused) to its
// group, then SIGKILL after the stop timeout. It returns the process's exit
// status as Wait does, so a clean shutdown on SIGTERM returns nil. It is
// idempotent.
func (p *Proc) Stop() error {
	p.stopOnce.Do(func() {
		if p.Exited() {
			return
		}
		_ = p.Signal(syscall.SIGTERM)
		_ = p.Signal(syscall.SIGCONT)
		t := time.NewTimer(p.stopTimeout)
		defer t.Stop()
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		p.ns.lab.log.Info("process ignored SIGTERM; killing", "pid", p.PID(), "label", p.label)
		_ = p.Signal(syscall.SIGKILL)
	})
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(p.stopTimeout + 5*time.Second):
		return fmt.Errorf("%w: pid %d (%s)", ErrStillRunning, p.PID(), p.label)
	}
}

// StdoutPath returns the file the process's stdout goes to.
func (p *Proc) StdoutPath() string { return p.stdoutPath }

// StderrPath returns the file the process's stderr goes to.
func (p *Proc) StderrPath() string { return p.stderrPath }

// Stdout returns what the process has written to stdout so far.
func (p *Proc) Stdout() string { return readFile(p.stdoutPath) }

// Stderr returns what the process has written to stderr so far.
func (p *Proc) Stderr() string { return readFile(p.stderrPath) }

// WaitOutput polls the process's output until match returns true and
// returns the stdout it matched on. It fails t with both outputs if the
// timeout passes or the process exits first.
func (p *Proc) WaitOutput(t testing.TB, timeout time.Duration, what string, match func(stdout, stderr string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		// Read "exited" before the output, so output written just before
		// exiting is still seen.
		exited := p.Exited()
		out, errOut := p.Stdout(), p.Stderr()
		if match(out, errOut) {
			return out
		}
		if exited {
			t.Fatalf("lab: %s exited (%v) before %s\nstdout:\n%s\nstderr:\n%s", p.label, p.waitErr, what, tail(out), tail(errOut))
		}
		if time.Now().After(deadline) {
			t.Fatalf("lab: timed out after %v waiting for %s from %s\nstdout:\n%s\nstderr:\n%s", timeout, what, p.label, tail(out), tail(errOut))
		}
		time.Sleep(pollInterval) // polling a file; there is no event to wait on
	}
}

func readFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// tail returns the last few KB of s, for failure messages.
func tail(s string) string {
	const max = 4000
	if len(s) > max {
		return "..." + s[len(s)-max:]
	}
	return s
}
