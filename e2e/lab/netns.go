//go:build e2e

package lab

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cmdTimeout bounds every command the lab runs for itself, so that a wedged
// tool fails the test instead of hanging it.
const cmdTimeout = 30 * time.Second

// Namespace is one network namespace of a lab: a host, a NAT router or the
// backbone. Its methods run programs inside it; they are safe for concurrent
// use.
type Namespace struct {
	lab  *Lab
	name string // full netns name, e.g. "md1234-1-alice"
	// short is the logical name used in artifact file names.
	short string
}

// Netns returns the namespace's name as `ip netns` lists it.
func (n *Namespace) Netns() string { return n.name }

// Command returns an unstarted command that runs name with args inside the
// namespace (`ip netns exec NETNS name args...`). The child is killed if the
// test binary dies. The caller owns it: Run or Start plus Wait it.
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append([]string{"netns", "exec", n.name, name}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := checkProgram(name); err != nil {
		cmd.Err = err // Start returns it
	}
	return cmd
}

// Run runs name with args inside the namespace and returns its combined
// output. A failure is a *CmdError carrying the output.
func (n *Namespace) Run(ctx context.Context, name string, args ...string) (string, error) {
	return n.lab.exec(ctx, n.name, "", append([]string{name}, args...))
}

// Output runs name with args inside the namespace and returns its stdout
// alone (for JSON such as `meshctl status --json`). A failure is a
// *CmdError whose Output is the stderr.
func (n *Namespace) Output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := n.Command(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	n.lab.log.Debug("cmd", "netns", n.name, "argv", name+" "+strings.Join(args, " "), "error", err)
	if err != nil {
		return stdout.String(), &CmdError{Netns: n.name, Argv: append([]string{name}, args...), Output: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.String(), nil
}

// StateDir returns a directory private to this namespace for the state of
// the programs run in it: configs, keys, unix sockets. Namespaces share the
// file system, so two daemons must never share a socket or state path. The
// path is short (under os.TempDir, within the unix socket path limit) and is
// removed when the lab closes; put logs worth keeping in the artifact dir.
func (n *Namespace) StateDir() (string, error) {
	dir := filepath.Join(os.TempDir(), "meshd-lab", n.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("lab: state dir: %w", err)
	}
	return dir, nil
}

// runStdin is Run with stdin and the lab's own timeout.
func (n *Namespace) runStdin(stdin string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return n.lab.exec(ctx, n.name, stdin, argv)
}

// run runs argv inside the namespace with the lab's own timeout.
func (n *Namespace) run(argv ...string) (string, error) { return n.runStdin("", argv...) }

// ipBatch runs ip commands (one per line, without the leading "ip") in the
// namespace with a single `ip -n NETNS -batch -`.
func (n *Namespace) ipBatch(lines ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	_, err := n.lab.exec(ctx, "", strings.Join(lines, "\n")+"\n", []string{"ip", "-n", n.name, "-batch", "-"})
	return err
}

// sysctl sets kernel parameters inside the namespace (they are per netns).
func (n *Namespace) sysctl(kv ...string) error {
	_, err := n.run(append([]string{"sysctl", "-q", "-w"}, kv...)...)
	return err
}

// Pids lists the processes whose network namespace this is, whoever
// started them (`ip netns pids`).
func (n *Namespace) Pids() ([]int, error) {
	out, err := n.lab.rootRun("ip", "netns", "pids", n.name)
	if err != nil {
		return nil, err
	}
	return parsePids(out)
}

// Signal sends sig to every process in the namespace, by PID.
func (n *Namespace) Signal(sig syscall.Signal) error {
	pids, err := n.Pids()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && err != syscall.ESRCH {
			return fmt.Errorf("lab: signal %v to pid %d in %s: %w", sig, pid, n.name, err)
		}
	}
	return nil
}

func parsePids(out string) ([]int, error) {
	var pids []int
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("lab: bad pid %q from ip netns pids", f)
		}
		if pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// exec runs argv, inside netns unless it is empty, logs it to the lab's log,
// and wraps a failure in *CmdError.
func (l *Lab) exec(ctx context.Context, netns, stdin string, argv []string) (string, error) {
	return execCmd(ctx, l.log, netns, stdin, argv)
}

func execCmd(ctx context.Context, log *slog.Logger, netns, stdin string, argv []string) (string, error) {
	if err := checkProgram(argv[0]); err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if netns != "" {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", netns}, argv...)...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	log.Debug("cmd", "netns", netns, "argv", strings.Join(argv, " "), "took", time.Since(start).Round(time.Microsecond), "error", err)
	if stdin != "" {
		log.Debug("cmd stdin", "netns", netns, "stdin", stdin)
	}
	if err != nil {
		return text, &CmdError{Netns: netns, Argv: argv, Output: text, Err: err}
	}
	return text, nil
}

// rootRun runs argv in the root namespace with the lab's own timeout.
func (l *Lab) rootRun(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return l.exec(ctx, "", "", argv)
}

// waitIPv6Ready waits until no IPv6 address in the namespace is tentative
// and fails if one failed duplicate address detection. The lab turns DAD
// off, so this holds at once; the check is what makes that a promise
// rather than an assumption (a tentative address cannot be bound).
func (n *Namespace) waitIPv6Ready() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := n.lab.rootRun("ip", "-n", n.name, "-6", "addr", "show")
		if err != nil {
			return err
		}
		switch {
		case strings.Contains(out, "dadfailed"):
			return fmt.Errorf("lab: %s: an IPv6 address failed duplicate address detection:\n%s", n.name, out)
		case !strings.Contains(out, "tentative"):
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("lab: %s: IPv6 addresses still tentative after 5s:\n%s", n.name, out)
		}
		time.Sleep(20 * time.Millisecond) // polling the kernel's address state
	}
}
