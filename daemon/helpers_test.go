package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel"
)

// testMesh is a CA in a temporary directory that issues node credentials.
type testMesh struct {
	dir       string
	ca        *pki.CA
	caPath    string
	gossipKey string
}

func newTestMesh(t testing.TB) *testMesh {
	t.Helper()
	ca, err := pki.NewCA("test-mesh", 48*time.Hour, pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.Save(filepath.Join(dir, "ca"), false); err != nil {
		t.Fatal(err)
	}
	var k [32]byte
	_, _ = rand.Read(k[:])
	return &testMesh{dir: dir, ca: ca, caPath: filepath.Join(dir, "ca", pki.CACertFile), gossipKey: base64.StdEncoding.EncodeToString(k[:])}
}

// testNode is one node's files.
type testNode struct {
	name     string
	dir      string
	certPath string
	keyPath  string
	cert     *pki.NodeCert
}

// nodeSpec tweaks the certificate of a test node.
type nodeSpec struct {
	subnets  []string
	groups   []string
	validity time.Duration // zero: a day
	addr6    netip.Prefix  // the certificate's overlay IPv6; zero: none
}

// node issues credentials for name at 100.64.0.n in a directory of its own.
func (m *testMesh) node(t testing.TB, name string, n byte, spec nodeSpec) *testNode {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	// Every test node may run a coordinator (confSpec.coordinator): nodes
	// accept sessions only from certificates with the role.
	id := pki.Identity{Name: name, Addr: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, n}), 10), Addr6: spec.addr6, Groups: spec.groups, Coordinator: true}
	for _, s := range spec.subnets {
		id.Subnets = append(id.Subnets, netip.MustParsePrefix(s))
	}
	validity := spec.validity
	if validity == 0 {
		validity = 24 * time.Hour
	}
	nc, err := m.ca.Sign(key.Public(), id, validity)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(m.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tn := &testNode{name: name, dir: dir, certPath: filepath.Join(dir, "node.crt"), keyPath: filepath.Join(dir, "node.key"), cert: nc}
	if err := pki.WriteFile(tn.certPath, nc.PEM(), 0o644, true); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(tn.keyPath, key, true); err != nil {
		t.Fatal(err)
	}
	return tn
}

// confSpec is what a test node's configuration file says beyond the basics.
type confSpec struct {
	coordinator bool
	join        []string
	crl         string
	logLevel    string // "" = info
	metrics     bool
	lazy        bool
	extra       string // appended verbatim (firewall tables, routes, ...)
	nodeName    string // node.name; "" leaves it out
	cert, key   string // override pki.cert / pki.key
	tunName     string // tun.name; "" leaves it out
	coordPeers  []string
	noTURN      bool // coordinator.turn.enabled = false
	relayOnly   bool // ice.relay_only = true
}

// config writes the node's configuration file and returns its path.
func (m *testMesh) config(t testing.TB, n *testNode, c confSpec) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[node]\nstate_dir = %q\n", filepath.Join(n.dir, "state"))
	if c.nodeName != "" {
		fmt.Fprintf(&b, "name = %q\n", c.nodeName)
	}
	cert, key := n.certPath, n.keyPath
	if c.cert != "" {
		cert = c.cert
	}
	if c.key != "" {
		key = c.key
	}
	fmt.Fprintf(&b, "[pki]\nca = %q\ncert = %q\nkey = %q\n", m.caPath, cert, key)
	if c.crl != "" {
		fmt.Fprintf(&b, "crl = %q\n", c.crl)
	}
	b.WriteString("[tun]\nmode = \"userspace\"\n")
	if c.tunName != "" {
		fmt.Fprintf(&b, "name = %q\n", c.tunName)
	}
	quoted := make([]string, len(c.join))
	for i, j := range c.join {
		quoted[i] = fmt.Sprintf("%q", j)
	}
	fmt.Fprintf(&b, "[join]\ncoordinators = [%s]\n", strings.Join(quoted, ", "))
	if c.coordinator {
		fmt.Fprintf(&b, "[coordinator]\nenabled = true\nsession_listen = \"127.0.0.1:0\"\ngossip_key = %q\n", m.gossipKey)
		if len(c.coordPeers) > 0 {
			fmt.Fprintf(&b, "peers = [%q]\n", strings.Join(c.coordPeers, `", "`))
		}
		// Peers relay to each other on loopback, which the relay refuses
		// unless allowed.
		b.WriteString("[coordinator.turn]\nrelay_address = \"127.0.0.1\"\nallowed_peer_ips = [\"127.0.0.0/8\"]\n")
		if c.noTURN {
			b.WriteString("enabled = false\n")
		}
	}
	fmt.Fprintf(&b, "[ice]\nport = 0\nlazy = %v\nrelay_only = %v\n", c.lazy, c.relayOnly)
	fmt.Fprintf(&b, "[control]\nsocket = %q\ngroup = \"\"\n", filepath.Join(n.dir, "meshd.sock"))
	if c.metrics {
		b.WriteString("[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n")
	}
	level := c.logLevel
	if level == "" {
		level = "info"
	}
	fmt.Fprintf(&b, "[log]\nlevel = %q\n", level)
	b.WriteString(c.extra)
	path := filepath.Join(n.dir, "meshd.toml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustLoad(t testing.TB, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config.Load: %v", err)
	}
	return cfg
}

// testTuning makes nodes fast on loopback.
func testTuning() *Tuning {
	tt := tunnel.DefaultTimers()
	tt.CheckInterval = 50 * time.Millisecond
	tt.KeepaliveInterval = 250 * time.Millisecond
	tt.DisconnectedTimeout = 1500 * time.Millisecond
	tt.FailedTimeout = 3 * time.Second
	tt.PathTimeout = 800 * time.Millisecond
	tt.UpgradeHold = 600 * time.Millisecond
	tt.RelayWait = 400 * time.Millisecond
	tt.ConnectTimeout = 8 * time.Second
	tt.HandshakeTimeout = 5 * time.Second
	tt.FlightInterval = 100 * time.Millisecond
	tt.GatherTimeout = 2 * time.Second
	tt.RetryMin = 100 * time.Millisecond
	tt.RetryMax = time.Second
	tt.SignalTimeout = 2 * time.Second
	return &Tuning{
		ICEListenAddr:          netip.MustParseAddr("127.0.0.1"),
		TunnelTimers:           &tt,
		ClientDialTimeout:      2 * time.Second,
		ClientBackoffMin:       20 * time.Millisecond,
		ClientBackoffMax:       200 * time.Millisecond,
		ClientCacheDelay:       50 * time.Millisecond,
		ClientCRLCheckInterval: 50 * time.Millisecond,
		GossipTimers: discovery.GossipTimers{
			ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
			GossipInterval: 20 * time.Millisecond, PushPullInterval: 400 * time.Millisecond,
			TCPTimeout: 500 * time.Millisecond, SuspicionMult: 2, RetransmitMult: 3,
			GossipToTheDeadTime: time.Second,
		},
		CoordinatorSweep:       50 * time.Millisecond,
		CoordinatorKeepalive:   time.Second,
		CoordinatorRejoin:      200 * time.Millisecond,
		CoordinatorSignalAfter: 2 * time.Second,
		Coalesce:               10 * time.Millisecond,
		StatusInterval:         50 * time.Millisecond,
		RelayAllowLoopback:     true,
	}
}

// logCapture keeps a test's log lines; they are printed only if it fails,
// and tests may look for lines.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logCapture) contains(s string) bool { return strings.Contains(l.String(), s) }

func newLogCapture(t testing.TB, name string) (*slog.Logger, *slog.LevelVar, *logCapture) {
	lc := &logCapture{}
	lv := new(slog.LevelVar)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, lc.String())
		}
	})
	return slog.New(slog.NewTextHandler(lc, &slog.HandlerOptions{Level: lv})).With("node", name), lv, lc
}

// testDaemon is a started daemon with its log.
type testDaemon struct {
	*Daemon
	log    *logCapture
	level  *slog.LevelVar
	path   string
	node   *testNode
	closed bool
}

// startDaemon builds and starts a daemon from the configuration at path;
// it is closed at cleanup.
func startDaemon(t testing.TB, n *testNode, path string) *testDaemon {
	t.Helper()
	logger, lv, lc := newLogCapture(t, n.name)
	d, err := New(mustLoad(t, path), Options{Logger: logger, LogLevel: lv, Version: "test", Tuning: testTuning()})
	if err != nil {
		t.Fatalf("New(%s): %v", n.name, err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatalf("Start(%s): %v", n.name, err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return &testDaemon{Daemon: d, log: lc, level: lv, path: path, node: n}
}

// sessionAddr is the coordinator's session address ("127.0.0.1:port").
func (d *testDaemon) sessionAddr() string { return d.coord.Addr().String() }
