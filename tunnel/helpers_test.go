package tunnel

import (
	"bytes"
	"context"
	"crypto"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel/tunneltest"
)

// testTimers are fast enough for tests and keep the production ratios.
func testTimers() Timers {
	t := DefaultTimers()
	t.CheckInterval = 50 * time.Millisecond
	t.KeepaliveInterval = 250 * time.Millisecond
	t.DisconnectedTimeout = 1500 * time.Millisecond
	t.FailedTimeout = 3 * time.Second
	t.PathTimeout = 800 * time.Millisecond
	t.UpgradeHold = 600 * time.Millisecond
	t.RelayWait = 400 * time.Millisecond
	t.ConnectTimeout = 8 * time.Second
	t.HandshakeTimeout = 5 * time.Second
	t.FlightInterval = 100 * time.Millisecond
	t.GatherTimeout = 2 * time.Second
	t.RetryMin = 100 * time.Millisecond
	t.RetryMax = time.Second
	t.SignalTimeout = 2 * time.Second
	return t
}

// testCA is a mesh CA for tests.
type testCA struct {
	ca *pki.CA
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	ca, err := pki.NewCA(name, 24*time.Hour, pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca: ca}
}

// testNode is a node identity: credentials, and the Peer others use for it.
type testNode struct {
	name  string
	creds *pki.Credentials
	peer  Peer
}

// node issues a certificate for name at 100.64.0.n, valid for validity
// (0: a day), trusting trust (nil: the issuing CA).
func (c *testCA) node(t testing.TB, name string, n byte, validity time.Duration, trust *testCA) *testNode {
	t.Helper()
	if validity == 0 {
		validity = 24 * time.Hour
	}
	key, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	return c.nodeWithKey(t, name, n, key, validity, trust)
}

func (c *testCA) nodeWithKey(t testing.TB, name string, n byte, key crypto.Signer, validity time.Duration, trust *testCA) *testNode {
	t.Helper()
	addr := netip.AddrFrom4([4]byte{100, 64, 0, n})
	id := pki.Identity{
		Name:    name,
		Addr:    netip.PrefixFrom(addr, 10),
		Subnets: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, n, 0, 0}), 24)},
	}
	nc, err := c.ca.Sign(key.Public(), id, validity)
	if err != nil {
		t.Fatal(err)
	}
	if trust == nil {
		trust = c
	}
	return &testNode{
		name:  name,
		creds: &pki.Credentials{CA: trust.ca.Cert, Cert: nc, Key: key},
		peer:  Peer{Name: name, Addr: addr, Fingerprint: nc.Fingerprint},
	}
}

// memSignals routes signals between managers in memory (tunneltest.Router).
type memSignals struct{ r *tunneltest.Router }

func newMemSignals() *memSignals { return &memSignals{r: tunneltest.NewRouter()} }

func (n *memSignals) add(name string, m *Manager)      { n.r.Register(name, m.HandleSignal) }
func (n *memSignals) setOffline(name string, off bool) { n.r.SetOffline(name, off) }
func (n *memSignals) from(name string) Signaler        { return n.r.Signaler(name) }

var errOffline = tunneltest.ErrOffline

// logSink captures log records for assertions.
type logSink struct {
	mu   sync.Mutex
	recs []slog.Record
	t    testing.TB
	echo bool
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	s.mu.Lock()
	s.recs = append(s.recs, r.Clone())
	s.mu.Unlock()
	return nil
}
func (s *logSink) WithAttrs(as []slog.Attr) slog.Handler { return &attrHandler{s: s, attrs: as} }
func (s *logSink) WithGroup(string) slog.Handler         { return s }

type attrHandler struct {
	s     *logSink
	attrs []slog.Attr
}

func (h *attrHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *attrHandler) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	return h.s.Handle(ctx, r)
}
func (h *attrHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{s: h.s, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}
func (h *attrHandler) WithGroup(string) slog.Handler { return h }

// count returns how many records at level or above have msg and, when
// attrKey is not empty, an attribute attrKey whose value contains attrVal.
func (s *logSink) count(level slog.Level, msg, attrKey, attrVal string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.recs {
		if r.Level < level || r.Message != msg {
			continue
		}
		if attrKey == "" {
			n++
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == attrKey && strings.Contains(a.Value.String(), attrVal) {
				n++
				return false
			}
			return true
		})
	}
	return n
}

func (s *logSink) dump(t testing.TB) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.recs {
		var b strings.Builder
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		t.Logf("%s %s %s%s", r.Time.Format("15:04:05.000"), r.Level, r.Message, b.String())
	}
}

// testLogger returns a logger that prints through t (shown with -v or on
// failure); MESHD_TEST_DEBUG=1 adds debug lines, pion's included.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("MESHD_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startManager creates and starts a manager for node with opts adjusted by
// tweak; it is closed at cleanup.
func startManager(t testing.TB, sig *memSignals, n *testNode, tweak func(*Options)) *Manager {
	t.Helper()
	opts := Options{
		Logger:      testLogger(t),
		Credentials: n.creds,
		Verifier:    pki.NewVerifier(n.creds.CA, n.creds.Cert),
		Signaler:    sig.from(n.name),
		ListenAddr:  netip.MustParseAddr("127.0.0.1"),
		Timers:      testTimers(),
	}
	if tweak != nil {
		tweak(&opts)
	}
	m, err := NewManager(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	sig.add(n.name, m)
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func mustLink(t testing.TB, m *Manager, p Peer) *Link {
	t.Helper()
	l, err := m.Link(p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// collector receives packets from a link.
type collector struct {
	mu      sync.Mutex
	packets [][]byte
}

func (c *collector) receive(bufs [][]byte, offset int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range bufs {
		c.packets = append(c.packets, bytes.Clone(b[offset:]))
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.packets)
}

func (c *collector) has(p []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range c.packets {
		if bytes.Equal(p, q) {
			return true
		}
	}
	return false
}

// packet returns a buffer with HeaderRoom in front of payload.
func packet(payload string) []byte {
	b := make([]byte, HeaderRoom+len(payload))
	copy(b[HeaderRoom:], payload)
	return b
}

// exchange sends packets from a to b (through link ab) until b's collector
// has one, and fails after timeout.
func exchange(t testing.TB, ab *Link, into *collector, tag string, timeout time.Duration) {
	t.Helper()
	i := 0
	testutil.WaitFor(t, timeout, "packet "+tag+" delivered", func() bool {
		i++
		p := fmt.Sprintf("%s-%d", tag, i)
		_, _ = ab.WriteBatch([][]byte{packet(p)}, HeaderRoom)
		return into.count() > 0 && func() bool {
			for j := 1; j <= i; j++ {
				if into.has([]byte(fmt.Sprintf("%s-%d", tag, j))) {
					return true
				}
			}
			return false
		}()
	})
}

// hardTimeout fails the test (with all goroutine stacks) if it runs longer
// than d.
func hardTimeout(t *testing.T, d time.Duration) {
	t.Helper()
	timer := time.AfterFunc(d, func() {
		panic(fmt.Sprintf("test %s exceeded its hard timeout of %v", t.Name(), d))
	})
	t.Cleanup(func() { timer.Stop() })
}
