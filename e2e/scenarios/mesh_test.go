//go:build e2e

package scenarios

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
)

// The programs every scenario runs.
const (
	meshdPkg   = "github.com/meshd/meshd/cmd/meshd"
	meshctlPkg = "github.com/meshd/meshd/cmd/meshctl"
	labtoolPkg = "github.com/meshd/meshd/e2e/scenarios/internal/labtool"
)

// Ports of the lab's meshd configuration.
const (
	sessionPort = 7443 // coordinator.session_listen
	gossipPort  = 7946 // coordinator.gossip_bind (the default)
	turnPort    = 3478 // STUN and TURN, UDP (and TCP where enabled)
	sinkPort    = 9000 // labtool sink on every node, over the overlay
	metricsPort = 9477 // metrics.listen (loopback of the node's namespace)
)

// logLevelEnv sets the log.level of every meshd but the coordinators
// (default info), e.g. MESHD_E2E_LOG=debug to see why a link did what it
// did. Coordinators stay at info: at debug pion's TURN server logs every
// relayed packet.
const logLevelEnv = "MESHD_E2E_LOG"

// mesh is one meshd network in a lab: its CA, the binaries, and its nodes.
// Build it from the test goroutine; node operations are safe from several
// goroutines.
type mesh struct {
	t         *testing.T
	lab       *lab.Lab
	meshd     string
	meshctl   string
	tool      string
	caDir     string
	gossipKey string

	mu     sync.Mutex
	nextIP int // last overlay host number handed out
	nodes  []*node
}

// newMesh builds the binaries (once per test binary) and creates the mesh
// CA with `meshctl ca init`.
func newMesh(t *testing.T, l *lab.Lab) *mesh {
	t.Helper()
	m := &mesh{
		t:       t,
		lab:     l,
		meshd:   lab.Build(t, meshdPkg),
		meshctl: lab.Build(t, meshctlPkg),
		tool:    lab.Build(t, labtoolPkg),
		caDir:   filepath.Join(t.TempDir(), "ca"),
	}
	m.offline("ca", "init", "--name", "lab-mesh", "--dir", m.caDir)
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	m.gossipKey = base64.StdEncoding.EncodeToString(k[:])
	return m
}

// offline runs an offline meshctl command (ca, cert) in the root
// namespace and fails the test if it fails.
func (m *mesh) offline(args ...string) string {
	m.t.Helper()
	out, err := exec.Command(m.meshctl, args...).CombinedOutput()
	if err != nil {
		m.t.Fatalf("meshctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// overlayIP hands out the next overlay address, 100.64.0.N.
func (m *mesh) overlayIP() netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextIP++
	return netip.AddrFrom4([4]byte{100, 64, byte(m.nextIP / 250), byte(1 + m.nextIP%250)})
}

// nodeOpts says what a node's certificate and configuration hold beyond the
// basics (kernel TUN, one coordinator list, inbound firewall open to every
// peer).
type nodeOpts struct {
	// coordinator runs the coordinator role on the node (a public host):
	// session on IP:7443, gossip on IP:7946, STUN+TURN on IP:3478.
	coordinator bool
	// coordPeers are other coordinators to join by gossip.
	coordPeers []*node
	// turnTCP adds TURN over TCP on IP:3478 (for UDP-blocked nodes).
	turnTCP bool
	// noTURN turns the embedded TURN server off (STUN only).
	noTURN bool
	// join are the coordinators the node dials, in order.
	join []*node
	// addr fixes the overlay address (a duplicate, for the security
	// scenario); zero means the next free one.
	addr netip.Addr
	// subnets go into the certificate (--subnets).
	subnets []string
	// caDir signs the certificate with another CA (and the node trusts that
	// CA); "" means the mesh's.
	caDir string
	// caBundle is pki.ca (a file of several CA certificates, for a CA
	// rotation); "" means the signing CA's ca.crt.
	caBundle string
	// crl is pki.crl.
	crl string
	// ice lines are added under [ice].
	ice []string
	// extra is TOML appended at the end ([routes], [[ice.turn_servers]]).
	extra string
	// metrics serves Prometheus metrics on 127.0.0.1:9477 in the namespace.
	metrics bool
	// logLevel is log.level; "" means "info".
	logLevel string
}

// node is one meshd node on a lab host: its certificate, configuration,
// control socket and process.
type node struct {
	m    *mesh
	name string
	host *lab.Host
	addr netip.Addr // overlay IPv4
	dir  string     // the namespace's state dir: certs, config, socket
	cfg  string     // configuration file
	sock string     // control socket
	cert string
	key  string
	opts nodeOpts

	mu      sync.Mutex
	proc    *lab.Proc
	started time.Time
	events  *lab.Proc
	sink    *lab.Proc
}

// addNode signs a certificate for a node on host h (named after the host)
// with `meshctl cert sign` and writes its configuration. It does not start
// meshd.
func (m *mesh) addNode(h *lab.Host, o nodeOpts) *node {
	m.t.Helper()
	dir, err := h.StateDir()
	if err != nil {
		m.t.Fatal(err)
	}
	n := &node{m: m, name: h.Name(), host: h, dir: dir, opts: o,
		sock: filepath.Join(dir, "meshd.sock")}
	n.addr = o.addr
	if !n.addr.IsValid() {
		n.addr = m.overlayIP()
	}
	caDir := m.caDir
	if o.caDir != "" {
		caDir = o.caDir
	}
	args := []string{"cert", "sign", "--ca-dir", caDir, "--name", n.name,
		"--ip", netip.PrefixFrom(n.addr, 10).String(), "--out", dir, "--duration", "720h", "--force"}
	if len(o.subnets) > 0 {
		args = append(args, "--subnets", strings.Join(o.subnets, ","))
	}
	if o.coordinator {
		args = append(args, "--coordinator")
	}
	m.offline(args...)
	n.cert, n.key = filepath.Join(dir, n.name+".crt"), filepath.Join(dir, n.name+".key")
	n.cfg = filepath.Join(dir, "meshd.toml")
	n.writeConfig()
	m.mu.Lock()
	m.nodes = append(m.nodes, n)
	m.mu.Unlock()
	return n
}

// nodeNamed returns the node called name, or nil.
func (m *mesh) nodeNamed(name string) *node {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// allNodes returns every node of the mesh, in the order they were added.
func (m *mesh) allNodes() []*node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*node(nil), m.nodes...)
}

// sessionAddr is a coordinator's session address, IP:7443.
func (n *node) sessionAddr() string {
	return netip.AddrPortFrom(n.host.IP(), sessionPort).String()
}

// sessionAddrFor is the coordinator's session address as joiner dials it:
// its IPv6 address for an IPv6-only joiner, IP:7443 otherwise.
func (n *node) sessionAddrFor(joiner *node) string {
	if !joiner.host.HasIPv4() {
		return netip.AddrPortFrom(n.host.IP6(), sessionPort).String()
	}
	return n.sessionAddr()
}

// dualStack reports whether the node's host has both families: a
// coordinator there serves both, on the wildcard address.
func (n *node) dualStack() bool { return n.host.HasIPv4() && n.host.IP6().IsValid() }

// config renders the node's configuration file.
func (n *node) config() string {
	o := n.opts
	caDir := n.m.caDir
	if o.caDir != "" {
		caDir = o.caDir
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[node]\nstate_dir = %q\n\n", filepath.Join(n.dir, "state"))
	caFile := filepath.Join(caDir, "ca.crt")
	if o.caBundle != "" {
		caFile = o.caBundle
	}
	fmt.Fprintf(&b, "[pki]\nca = %q\ncert = %q\nkey = %q\n", caFile, n.cert, n.key)
	if o.crl != "" {
		fmt.Fprintf(&b, "crl = %q\n", o.crl)
	}
	b.WriteString("\n[tun]\nmode = \"kernel\"\n\n")
	join := make([]string, len(o.join))
	for i, c := range o.join {
		join[i] = strconv.Quote(c.sessionAddrFor(n))
	}
	fmt.Fprintf(&b, "[join]\ncoordinators = [%s]\n\n", strings.Join(join, ", "))
	if o.coordinator {
		ip, listen := n.host.IP().String(), n.sessionAddr()
		if n.dualStack() {
			// Both families on one socket each ([::] is dual-stack); the
			// relay names its public address of each family.
			ip, listen = "::", netip.AddrPortFrom(netip.IPv6Unspecified(), sessionPort).String()
		}
		fmt.Fprintf(&b, "[coordinator]\nenabled = true\nsession_listen = %q\ngossip_key = %q\n", listen, n.m.gossipKey)
		peers := make([]string, len(o.coordPeers))
		for i, p := range o.coordPeers {
			peers[i] = strconv.Quote(netip.AddrPortFrom(p.host.IP(), gossipPort).String())
		}
		fmt.Fprintf(&b, "peers = [%s]\n\n[coordinator.turn]\n", strings.Join(peers, ", "))
		if n.dualStack() && !o.noTURN {
			fmt.Fprintf(&b, "relay_address = %q\nrelay_address6 = %q\n", n.host.IP(), n.host.IP6())
		}
		if o.noTURN {
			b.WriteString("enabled = false\n")
		} else if o.turnTCP {
			fmt.Fprintf(&b, "tcp_listen = %q\n", netip.AddrPortFrom(netip.MustParseAddr(ip), turnPort))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "[ice]\nport = %d\n", n.host.Port())
	for _, l := range o.ice {
		b.WriteString(l + "\n")
	}
	fmt.Fprintf(&b, "\n[control]\nsocket = %q\ngroup = \"\"\n\n", n.sock)
	if o.metrics {
		fmt.Fprintf(&b, "[metrics]\nenabled = true\nlisten = \"127.0.0.1:%d\"\n\n", metricsPort)
	}
	level := o.logLevel
	if level == "" && !o.coordinator {
		level = os.Getenv(logLevelEnv)
	}
	if level == "" {
		level = "info"
	}
	fmt.Fprintf(&b, "[log]\nlevel = %q\n\n", level)
	// Every peer may reach every port: the scenarios test paths, not the
	// firewall.
	b.WriteString("[[firewall.inbound]]\npeer = \"any\"\n\n")
	b.WriteString(o.extra)
	return b.String()
}

// writeConfig writes the configuration (and a copy into the artifacts).
func (n *node) writeConfig() {
	n.m.t.Helper()
	text := n.config()
	if err := os.WriteFile(n.cfg, []byte(text), 0o600); err != nil {
		n.m.t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(n.m.lab.ArtifactDir(), n.name+".meshd.toml"), []byte(text), 0o644)
}

// start starts meshd on the node and records when.
func (n *node) start() {
	n.m.t.Helper()
	p, err := n.host.StartWith(lab.ProcOptions{Label: "meshd", StopTimeout: 10 * time.Second}, n.m.meshd, "-config", n.cfg)
	if err != nil {
		n.m.t.Fatal(err)
	}
	n.mu.Lock()
	n.proc, n.started = p, time.Now()
	n.mu.Unlock()
}

// process returns the current meshd process and when it started.
func (n *node) process() (*lab.Proc, time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc, n.started
}

// stop stops meshd with SIGTERM and returns its exit status.
func (n *node) stop() error {
	p, _ := n.process()
	if p == nil {
		return nil
	}
	return p.Stop()
}

// kill SIGKILLs meshd and waits for it to be gone.
func (n *node) kill() {
	n.m.t.Helper()
	p, _ := n.process()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		n.m.t.Fatal(err)
	}
	<-p.Done()
}

// stderr returns what the current meshd process logged so far.
func (n *node) stderr() string {
	p, _ := n.process()
	if p == nil {
		return ""
	}
	return p.Stderr()
}

// alive fails the test if meshd has exited.
func (n *node) alive(t *testing.T) {
	t.Helper()
	p, _ := n.process()
	if p != nil && p.Exited() {
		t.Errorf("%s: meshd exited (%v); stderr:\n%s", n.name, p.Wait(), tailLines(p.Stderr(), 20))
	}
}

// ctl runs meshctl against the node's socket, inside its namespace, and
// returns stdout (stderr in the error).
func (n *node) ctl(ctx context.Context, args ...string) (string, error) {
	return n.host.Output(ctx, n.m.meshctl, append([]string{"--socket", n.sock}, args...)...)
}

// ctlJSON runs a meshctl command with --json and decodes its output.
func (n *node) ctlJSON(ctx context.Context, v any, args ...string) error {
	out, err := n.ctl(ctx, append(args, "--json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("%s: meshctl %s --json: %w: %q", n.name, strings.Join(args, " "), err, tailLines(out, 5))
	}
	return nil
}

func (n *node) status(ctx context.Context) (*control.Status, error) {
	var st control.Status
	return &st, n.ctlJSON(ctx, &st, "status")
}

func (n *node) peers(ctx context.Context) ([]control.Peer, error) {
	var pl control.PeerList
	return pl.Peers, n.ctlJSON(ctx, &pl, "peers")
}

// peer returns what the node's peer list says about name (ok false if the
// list lacks it).
func (n *node) peer(ctx context.Context, name string) (control.Peer, bool, error) {
	ps, err := n.peers(ctx)
	if err != nil {
		return control.Peer{}, false, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, true, nil
		}
	}
	return control.Peer{}, false, nil
}

// waitSession waits until the node's control socket answers and it holds a
// coordinator session; it returns the status.
func (n *node) waitSession(t *testing.T, timeout time.Duration) *control.Status {
	t.Helper()
	var st *control.Status
	_, last, ok := waitUntil(timeout, 100*time.Millisecond, func() (bool, string) {
		n.alive(t)
		s, err := n.status(context.Background())
		if err != nil {
			return false, err.Error()
		}
		st = s
		return s.Coordinator.State == control.SessionConnected, fmt.Sprintf("coordinator %+v", s.Coordinator)
	})
	if !ok {
		t.Fatalf("%s: no coordinator session after %v: %s", n.name, timeout, last)
	}
	return st
}

// waitControl waits until the node's control socket answers (the overlay
// address is set by then).
func (n *node) waitControl(t *testing.T, timeout time.Duration) {
	t.Helper()
	if err := n.controlUp(timeout); err != nil {
		t.Fatal(err)
	}
}

// controlUp is waitControl for other goroutines: it returns the failure.
func (n *node) controlUp(timeout time.Duration) error {
	_, last, ok := waitUntil(timeout, 25*time.Millisecond, func() (bool, string) {
		if p, _ := n.process(); p != nil && p.Exited() {
			return false, fmt.Sprintf("meshd exited (%v): %s", p.Wait(), tailLines(p.Stderr(), 5))
		}
		_, err := n.status(context.Background())
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if !ok {
		return fmt.Errorf("%s: control socket silent after %v: %s", n.name, timeout, last)
	}
	return nil
}

// waitPeer waits until the node's link to peer satisfies cond, and returns
// how long that took and the peer as last seen.
func (n *node) waitPeer(timeout time.Duration, peer string, cond func(control.Peer) bool) (time.Duration, control.Peer, bool) {
	var last control.Peer
	took, _, ok := waitUntil(timeout, 100*time.Millisecond, func() (bool, string) {
		p, found, err := n.peer(context.Background(), peer)
		if err != nil || !found {
			return false, ""
		}
		last = p
		return cond(p), ""
	})
	return took, last, ok
}

func isOnline(p control.Peer) bool { return p.Online }
func isDirect(p control.Peer) bool { return p.Online && p.Path == control.PathDirect }
func isRelay(p control.Peer) bool  { return p.Online && p.Path == control.PathRelay }

// describePeer is a one-line summary of a peer for logs.
func describePeer(p control.Peer) string {
	if p.Name == "" {
		return "(not listed)"
	}
	s := fmt.Sprintf("%s state=%s online=%v path=%s", p.Name, p.State, p.Online, p.Path)
	if p.Online {
		s += fmt.Sprintf(" %s/%s endpoint=%v", p.LocalCandidate, p.RemoteCandidate, p.Endpoint)
		if p.Relay != "" {
			s += " relay=" + p.Relay
		}
	}
	if p.LastError != "" {
		s += " last_error=" + strconv.Quote(p.LastError)
	}
	return s
}

// startEvents follows `meshctl events --json` on the node until the lab
// closes; events returns what it printed so far.
func (n *node) startEvents(t *testing.T) {
	t.Helper()
	p, err := n.host.StartWith(lab.ProcOptions{Label: "events"}, n.m.meshctl, "--socket", n.sock, "events", "--json")
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.events = p
	n.mu.Unlock()
}

// eventsSince returns the events the follower printed with Time at or
// after since.
func (n *node) eventsSince(since time.Time) []control.Event {
	n.mu.Lock()
	p := n.events
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	var out []control.Event
	for _, line := range strings.Split(p.Stdout(), "\n") {
		var ev control.Event
		if json.Unmarshal([]byte(line), &ev) != nil || ev.Time.Before(since) {
			continue
		}
		out = append(out, ev)
	}
	return out
}

// startSink runs `labtool sink` on :9000 in the node's namespace (IPv4).
func (n *node) startSink(t *testing.T) *lab.Proc {
	t.Helper()
	return n.startSinkOn(t, netip.IPv4Unspecified())
}

// startSinkOn runs `labtool sink` on addr:9000 in the node's namespace; on
// :: it takes both overlay families.
func (n *node) startSinkOn(t *testing.T, addr netip.Addr) *lab.Proc {
	t.Helper()
	p, err := n.host.StartWith(lab.ProcOptions{Label: "sink"}, n.m.tool, "sink", "-listen", netip.AddrPortFrom(addr, sinkPort).String())
	if err != nil {
		t.Fatal(err)
	}
	p.WaitOutput(t, 10*time.Second, "sink ready", func(out, _ string) bool { return strings.HasPrefix(out, "ready") })
	n.mu.Lock()
	n.sink = p
	n.mu.Unlock()
	return p
}

// sinkProc returns the node's sink, started by startSink.
func (n *node) sinkProc() *lab.Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sink
}

// sendResult is labtool send's output.
type sendResult struct {
	Bytes    int64         `json:"bytes"`
	Acked    int64         `json:"acked"`
	Duration time.Duration `json:"duration_ns"`
	OK       bool          `json:"ok"`
	Error    string        `json:"error,omitempty"`
}

// send moves size bytes over TCP from ns to dst's sink and checks the sink
// got them all, intact. rate 0 means as fast as TCP goes.
func send(ctx context.Context, ns *lab.Namespace, tool string, dst netip.Addr, size, rate int64, timeout time.Duration) (sendResult, error) {
	args := []string{"send", "-to", netip.AddrPortFrom(dst, sinkPort).String(),
		"-bytes", strconv.FormatInt(size, 10), "-timeout", timeout.String()}
	if rate > 0 {
		args = append(args, "-rate", strconv.FormatInt(rate, 10))
	}
	out, err := ns.Output(ctx, tool, args...)
	var r sendResult
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		if err == nil {
			err = jerr
		}
		return r, fmt.Errorf("labtool send to %v: %w (%q)", dst, err, strings.TrimSpace(out))
	}
	if !r.OK {
		return r, fmt.Errorf("labtool send to %v: %s", dst, r.Error)
	}
	return r, nil
}

// sinkLine is one line of labtool sink's output.
type sinkLine struct {
	Conn  int    `json:"conn"`
	Time  int64  `json:"t"`
	Bytes int64  `json:"bytes"`
	Done  bool   `json:"done"`
	Error string `json:"error"`
}

func sinkLines(out string) []sinkLine {
	var ls []sinkLine
	for _, line := range strings.Split(out, "\n") {
		var l sinkLine
		if json.Unmarshal([]byte(line), &l) == nil && l.Time != 0 {
			ls = append(ls, l)
		}
	}
	return ls
}

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)

// ping runs the kernel's ping in ns to dst: count echoes 200ms apart, one
// second per reply. It returns sent and received counts.
func ping(ctx context.Context, ns *lab.Namespace, dst netip.Addr, count int) (sent, recv int, out string, err error) {
	out, err = ns.Run(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "1", dst.String())
	m := pingStats.FindStringSubmatch(out)
	if m == nil {
		if err == nil {
			err = errors.New("no statistics in ping's output")
		}
		return 0, 0, out, err
	}
	sent, _ = strconv.Atoi(m[1])
	recv, _ = strconv.Atoi(m[2])
	return sent, recv, out, nil
}

var firstReplyRE = regexp.MustCompile(`^\[(\d+)\.(\d+)\] \d+ bytes from`)

// firstReply pings dst from ns every 200ms until the first echo reply (or
// deadline) and returns when it arrived, by ping's own clock. ICMP errors
// (meshd answers "unreachable" while it has no link to the peer) do not
// stop it: ping runs without a count or deadline and is ended at the first
// reply.
func firstReply(ctx context.Context, ns *lab.Namespace, dst netip.Addr, deadline time.Duration) (time.Time, error) {
	// No -w: with a deadline, iputils ping stops at the first ICMP error.
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	cmd := ns.Command(ctx, "ping", "-n", "-D", "-i", "0.2", "-W", "1", dst.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		return time.Time{}, err
	}
	if err := cmd.Start(); err != nil {
		return time.Time{}, err
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	var last []string
	for sc.Scan() {
		line := sc.Text()
		if m := firstReplyRE.FindStringSubmatch(line); m != nil {
			s, _ := strconv.ParseInt(m[1], 10, 64)
			us, _ := strconv.ParseInt((m[2] + "000000")[:6], 10, 64)
			return time.Unix(s, us*1000), nil
		}
		if last = append(last, line); len(last) > 3 {
			last = last[1:]
		}
	}
	return time.Time{}, fmt.Errorf("no reply from %v within %v: %s", dst, deadline, strings.Join(last, " / "))
}

// waitUntil polls cond every interval until it reports done or timeout
// passes. It returns how long it took, cond's last detail, and whether it
// succeeded.
func waitUntil(timeout, interval time.Duration, cond func() (bool, string)) (time.Duration, string, bool) {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return time.Since(start), detail, true
		}
		if time.Now().After(deadline) {
			return time.Since(start), detail, false
		}
		time.Sleep(interval)
	}
}

// procStatus reads VmRSS (kB) and Threads of pid from /proc.
func procStatus(pid int) (rssKB, threads int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rssKB, _ = strconv.Atoi(f[1])
		case "Threads:":
			threads, _ = strconv.Atoi(f[1])
		}
	}
	return rssKB, threads, nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ms formats a duration in milliseconds for the logs and tables.
func ms(d time.Duration) string {
	return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
}
