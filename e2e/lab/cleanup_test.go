//go:build e2e

package lab_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// rootLinks lists the interfaces of the root namespace.
func rootLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
		}
	}
	sort.Strings(names)
	return names
}

// rootRuleset is the root namespace's whole firewall: the nft ruleset,
// which on this machine kind holds the iptables and ip6tables rules too
// (iptables-nft), without counters (-s).
func rootRuleset(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("nft", "-s", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	return string(out)
}

func netnsList(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

func withPrefix(names []string, prefix string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// netnsInode returns the inode that identifies a namespace, as
// /proc/PID/ns/net links name it ("net:[INODE]").
func netnsInode(t *testing.T, name string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// processesIn returns the PIDs of all processes whose network namespace is
// one of inodes.
func processesIn(inodes map[uint64]string) map[int]string {
	found := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			continue
		}
		var ino uint64
		if _, err := fmt.Sscanf(link, "net:[%d]", &ino); err == nil {
			if ns, ok := inodes[ino]; ok {
				found[pid] = ns
			}
		}
	}
	return found
}

// TestTeardownLeavesNothing builds a lab with every kind of element,
// processes started through the lab, one started behind its back, and a
// paused host, then closes it and checks that no namespace, root link or
// process of it is left.
func TestTeardownLeavesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.LeakCheck(t)
	linksBefore := rootLinks(t)
	rulesBefore := rootRuleset(t)

	l := lab.New(t, lab.Options{})
	stun := l.AddNATProbe(t, "stun")
	for _, k := range []lab.NATKind{lab.NATFirewall, lab.NATFullCone, lab.NATAddressRestricted, lab.NATPortRestricted, lab.NATPortRestrictedMasq, lab.NATSymmetric, lab.NATUDPBlocked} {
		l.AddNode(t, strings.ReplaceAll(k.String(), "-", ""), k, lab.HostOptions{})
	}
	// IPv6: a dual-stack firewalled host, an IPv6-only one, an IPv6 site
	// (its firewall is an ip6 table, its prefix a route in the backbone).
	l.AddHost(t, "dual", lab.HostOptions{IPv6: true, Firewall: true})
	l.AddHost(t, "vps", lab.HostOptions{NoIPv4: true})
	l.AddNode(t, "home6", lab.NATPortRestrictedMasq, lab.HostOptions{IPv6: true})
	site := l.AddSite(t, "dbl", lab.SiteOptions{NAT: lab.NATFullCone, Carrier: lab.NATSymmetric})
	a := site.AddHost(t, "a", lab.HostOptions{})
	site.AddHost(t, "b", lab.HostOptions{})
	if _, err := l.BlockPath(a, stun.Host); err != nil {
		t.Fatal(err)
	}
	tracked, err := a.Start("sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	// Started behind the lab's back, and never waited for here: only the
	// namespace sweep of Close can find it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stray := a.Command(ctx, "sleep", "300")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = stray.Wait() }() // reap it once Close kills it
	// `ip netns exec` enters the namespace a moment after Start: wait for
	// both sleeps to be the host's, so that Pause has them to stop.
	testutil.WaitFor(t, 10*time.Second, "both sleeps in the host's namespace", func() bool {
		pids, err := a.Pids()
		return err == nil && slices.Contains(pids, tracked.PID()) && slices.Contains(pids, stray.Process.Pid)
	})
	if err := a.Pause(); err != nil {
		t.Fatal(err)
	}

	names := l.Namespaces()
	if got := withPrefix(netnsList(t), l.Prefix()); len(got) != len(names) {
		t.Fatalf("ip netns lists %d lab namespaces, lab made %d", len(got), len(names))
	}
	inodes := map[uint64]string{}
	for _, n := range names {
		inodes[netnsInode(t, n)] = n
	}
	before := processesIn(inodes)
	if len(before) < 3 { // probe server, tracked sleep, stray sleep
		t.Fatalf("expected lab processes before Close, found %v", before)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	if left := withPrefix(netnsList(t), l.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if after := rootLinks(t); strings.Join(after, " ") != strings.Join(linksBefore, " ") {
		t.Errorf("root namespace links changed:\nbefore %v\nafter  %v", linksBefore, after)
	}
	if after := rootRuleset(t); after != rulesBefore {
		t.Errorf("root namespace firewall rules (nft, iptables and ip6tables) changed:\nbefore:\n%s\nafter:\n%s", rulesBefore, after)
	}
	testutil.WaitFor(t, 5*time.Second, "lab processes to be gone", func() bool {
		return len(processesIn(inodes)) == 0
	})
	for _, pid := range []int{tracked.PID(), stray.Process.Pid} {
		// Signal 0 checks existence; a zombie still awaiting its reaper
		// would answer too, so allow the reaper goroutines a moment.
		testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("pid %d to be gone", pid), func() bool {
			return syscall.Kill(pid, 0) == syscall.ESRCH
		})
	}
	if !tracked.Exited() {
		t.Error("tracked process not reaped after Close")
	}
	if _, err := a.Start("true"); !errors.Is(err, lab.ErrClosed) {
		t.Errorf("Start after Close: err = %v, want ErrClosed", err)
	}
}

// Child-process scenarios for the signal and timeout paths. The test binary
// runs itself with childEnv set; the child builds a lab, prints its prefix
// and then hangs until it is killed.
const childEnv = "MESHD_LAB_TEST_CHILD"

func TestChildLab(t *testing.T) {
	mode := os.Getenv(childEnv)
	if mode == "" {
		t.Skip("helper for TestSignalTeardown and TestTimeoutTeardown")
	}
	l := lab.New(t, lab.Options{})
	h := l.AddNode(t, "kid", lab.NATSymmetric, lab.HostOptions{})
	p, err := h.Start("sleep", "300")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("PREFIX=%s PID=%d\n", l.Prefix(), p.PID())
	time.Sleep(5 * time.Minute) // until the parent's signal or the timeout
}

// runChild starts the child and returns it with the lab prefix and the
// child's sleep PID it reported.
func runChild(t *testing.T, mode string, args ...string) (*exec.Cmd, string, int) {
	t.Helper()
	args = append([]string{"-test.run=^TestChildLab$", "-test.v"}, args...)
	cmd := exec.Command(os.Args[0], args...)
	// The child's artifacts go under this test's, so that two children
	// never share (and wipe) one directory.
	cmd.Env = append(os.Environ(), childEnv+"="+mode, lab.ArtifactsEnv+"="+filepath.Join(lab.ArtifactDir(t), "child"))
	// The child's stderr (its lab messages, the timeout panic) goes to a
	// file; the test shows it only when it fails.
	errPath := filepath.Join(lab.ArtifactDir(t), "child.stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		errFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(errPath)
			t.Logf("child stderr:\n%s", b)
		}
	})
	cmd.Stderr = errFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "PREFIX=") {
				lines <- sc.Text()
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatal("child exited without reporting its lab")
		}
		var prefix string
		var pid int
		if _, err := fmt.Sscanf(line, "PREFIX=%s PID=%d", &prefix, &pid); err != nil {
			t.Fatalf("child said %q: %v", line, err)
		}
		if len(withPrefix(netnsList(t), prefix)) == 0 {
			t.Fatalf("child's lab %s has no namespaces", prefix)
		}
		return cmd, prefix, pid
	case <-time.After(60 * time.Second):
		t.Fatal("child did not report its lab")
	}
	return nil, "", 0
}

func waitChild(t *testing.T, cmd *exec.Cmd, timeout time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		t.Fatalf("child did not exit within %v", timeout)
		return nil
	}
}

func assertChildCleaned(t *testing.T, prefix string, pid int) {
	t.Helper()
	if left := withPrefix(netnsList(t), prefix); len(left) > 0 {
		t.Errorf("child's namespaces left: %v", left)
	}
	testutil.WaitFor(t, 5*time.Second, "child's lab process to be gone", func() bool {
		return syscall.Kill(pid, 0) == syscall.ESRCH
	})
}

// SIGTERM to a test binary in the middle of a test tears its labs down.
func TestSignalTeardown(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	cmd, prefix, pid := runChild(t, "signal")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := waitChild(t, cmd, 30*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Errorf("child exit: %v, want code %d", err, 128+int(syscall.SIGTERM))
	}
	assertChildCleaned(t, prefix, pid)
}

// A test binary about to hit -test.timeout (whose panic skips t.Cleanup)
// tears its labs down first.
func TestTimeoutTeardown(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	cmd, prefix, pid := runChild(t, "timeout", "-test.timeout=8s")
	err := waitChild(t, cmd, 30*time.Second)
	if err == nil {
		t.Error("child passed; it should have timed out")
	}
	assertChildCleaned(t, prefix, pid)

	// The timeout panic skipped the child's release of its prefix lock; the
	// kernel dropped the flock with the process, so the next run may take
	// (and sweep) that prefix. Check that, then remove the file.
	runPrefix := prefix[:strings.IndexByte(prefix, '-')+1] // "md1234-1-" -> "md1234-"
	lockPath := filepath.Join(os.TempDir(), "meshd-lab", runPrefix+"lock")
	f, err := os.OpenFile(lockPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("child's lock file: %v", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("dead child's prefix lock is still held: %v", err)
	}
	_ = os.Remove(lockPath)
}

// TestIsolation checks that the lab is sealed off from the machine: every
// veth's peer sits in a namespace of the same lab (none in the root
// namespace), the backbone, where all default routes end, forwards nothing,
// and no lab link carries IPv6 unless the lab was asked for it: the
// backbone's own IPv6 (gateway and link-local) aside, a lab without IPv6
// hosts has none, and the backbone has no IPv6 default route either, so an
// IPv6 packet for an address outside the lab dies there too.
func TestIsolation(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	l.AddHost(t, "pub", lab.HostOptions{Firewall: true})
	site := l.AddSite(t, "home", lab.SiteOptions{NAT: lab.NATSymmetric, Carrier: lab.NATFullCone})
	site.AddHost(t, "a", lab.HostOptions{})
	site.AddHost(t, "b", lab.HostOptions{})
	ctx := context.Background()
	veths := 0
	for _, ns := range l.Namespaces() {
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-o", "link", "show").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if !strings.Contains(line, "@if") { // lo and bridges have no peer
				continue
			}
			veths++
			i := strings.Index(line, "link-netns ")
			if i < 0 {
				t.Errorf("%s: veth whose peer is not in a named namespace (root?): %s", ns, line)
				continue
			}
			if peer := strings.Fields(line[i:])[1]; !strings.HasPrefix(peer, l.Prefix()) {
				t.Errorf("%s: veth peer in foreign namespace %s", ns, peer)
			}
		}
	}
	if veths == 0 {
		t.Fatal("found no veths to check")
	}
	for _, ns := range l.Namespaces() {
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-6", "-o", "addr", "show").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line == "" || strings.Contains(line, " lo ") {
				continue
			}
			if ns == l.Backbone().Netns() && (strings.Contains(line, " "+lab.BackboneGateway6.String()+"/64 ") || strings.Contains(line, " fe80::1/64 ")) {
				continue
			}
			t.Errorf("%s: IPv6 address on a lab link of an IPv4-only lab: %s", ns, line)
		}
	}
	if out, err := l.Backbone().Run(ctx, "ip", "-6", "route", "show", "default"); err != nil || out != "" {
		t.Errorf("backbone IPv6 default route: %q (%v), want none", out, err)
	}
	fwd, err := l.Backbone().Run(ctx, "sysctl", "-n", "net.ipv4.ip_forward")
	if err != nil || fwd != "0" {
		t.Errorf("backbone ip_forward = %q (%v), want 0", fwd, err)
	}
	for _, r := range []*lab.Router{site.Router(), site.Carrier()} {
		if v, err := r.Run(ctx, "sysctl", "-n", "net.ipv4.ip_forward"); err != nil || v != "1" {
			t.Errorf("%s ip_forward = %q (%v), want 1", r.Netns(), v, err)
		}
	}
	dir, err := site.Hosts()[0].StateDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s survived Close: %v", dir, err)
	}
}
