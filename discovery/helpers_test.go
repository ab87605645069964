package discovery

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshd/meshd/pki"
)

// Client satisfies tunnel's Signaler interface (kept here by signature, since
// discovery must not import tunnel).
var _ interface {
	SendSignal(ctx context.Context, to string, payload []byte) error
} = (*Client)(nil)

// testMesh is a CA plus helpers to mint node credentials.
type testMesh struct {
	ca  *pki.CA
	key []byte // gossip key
}

func newTestMesh(t testing.TB) *testMesh {
	t.Helper()
	ca, err := pki.NewCA("test-ca", 24*time.Hour, pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &testMesh{ca: ca, key: key}
}

// testIdentity: node n at 100.64.(n/250).(n%250+1)/10, routes 10.n.0.0/16.
func testIdentity(name string, n int) pki.Identity {
	return pki.Identity{
		Name:    name,
		Addr:    netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(n / 250), byte(n%250 + 1)}), 10),
		Groups:  []string{"lab"},
		Subnets: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n), 0, 0}), 16)},
	}
}

func (m *testMesh) creds(t testing.TB, name string, n int) *pki.Credentials {
	t.Helper()
	return m.credsFor(t, testIdentity(name, n))
}

// coordCreds mints a certificate with the coordinator role.
func (m *testMesh) coordCreds(t testing.TB, name string, n int) *pki.Credentials {
	t.Helper()
	id := testIdentity(name, n)
	id.Coordinator = true
	return m.credsFor(t, id)
}

func (m *testMesh) credsFor(t testing.TB, id pki.Identity) *pki.Credentials {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := m.ca.Sign(key.Public(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.Credentials{CA: m.ca.Cert, Cert: nc, Key: key}
}

func (m *testMesh) verifier(self *pki.Credentials) *pki.Verifier {
	if self == nil {
		return pki.NewVerifier(m.ca.Cert, nil)
	}
	return pki.NewVerifier(m.ca.Cert, self.Cert)
}

// logBuf collects log output for assertions; with DISCOVERY_TEST_LOG=1 it
// also goes to stderr.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("DISCOVERY_TEST_LOG") != "" {
		_, _ = os.Stderr.Write(p)
	}
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) contains(parts ...string) bool {
	for _, line := range strings.Split(l.String(), "\n") {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fastTimers keep memberlist quick on loopback.
var fastTimers = GossipTimers{
	ProbeInterval:       100 * time.Millisecond,
	ProbeTimeout:        50 * time.Millisecond,
	GossipInterval:      20 * time.Millisecond,
	PushPullInterval:    400 * time.Millisecond,
	TCPTimeout:          500 * time.Millisecond,
	SuspicionMult:       2,
	RetransmitMult:      3,
	GossipToTheDeadTime: time.Second,
}

type testCoord struct {
	*Coordinator
	creds *pki.Credentials
	log   *logBuf
	ft    *faultTransport
}

type coordTweak func(*CoordinatorOptions)

func (m *testMesh) startCoord(t testing.TB, name string, n int, join []string, tweaks ...coordTweak) *testCoord {
	t.Helper()
	creds := m.coordCreds(t, name, n)
	lb := &logBuf{}
	ft := newFaultTransport(t)
	opts := CoordinatorOptions{
		Credentials:       creds,
		Verifier:          m.verifier(nil),
		Logger:            lb.logger(),
		ListenAddr:        "127.0.0.1:0",
		GossipTransport:   ft,
		GossipKey:         m.key,
		Join:              join,
		Timers:            fastTimers,
		KeepaliveInterval: 3 * time.Second, // read timeout 3x: survives -race on a loaded 2-core CI box
		HandshakeTimeout:  5 * time.Second,
		SweepInterval:     50 * time.Millisecond,
		RejoinInterval:    200 * time.Millisecond,
		SignalTimeout:     2 * time.Second,
	}
	for _, tw := range tweaks {
		tw(&opts)
	}
	c, err := NewCoordinator(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &testCoord{Coordinator: c, creds: creds, log: lb, ft: ft}
}

func (c *testCoord) addr() string { return c.Addr().String() }

type testClient struct {
	*Client
	creds   *pki.Credentials
	log     *logBuf
	mu      sync.Mutex
	changes []Change
	sigs    chan signalIn
}

type clientTweak func(*ClientOptions)

func (m *testMesh) startClient(t testing.TB, creds *pki.Credentials, coords []string, tweaks ...clientTweak) *testClient {
	t.Helper()
	lb := &logBuf{}
	tc := &testClient{creds: creds, log: lb, sigs: make(chan signalIn, 64)}
	opts := ClientOptions{
		Credentials:  creds,
		Verifier:     m.verifier(creds),
		Coordinators: coords,
		Logger:       lb.logger().With("test-node", creds.Cert.Identity.Name),
		DialTimeout:  2 * time.Second,
		BackoffMin:   20 * time.Millisecond,
		BackoffMax:   200 * time.Millisecond,
		CacheDelay:   50 * time.Millisecond,
		OnSignal: func(from string, payload []byte) {
			select {
			case tc.sigs <- signalIn{from: from, payload: payload}:
			default:
			}
		},
		CRLCheckInterval: 100 * time.Millisecond,
	}
	for _, tw := range tweaks {
		tw(&opts)
	}
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	c.Subscribe(func(ch Change) {
		tc.mu.Lock()
		tc.changes = append(tc.changes, ch)
		tc.mu.Unlock()
	})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	tc.Client = c
	return tc
}

func (c *testClient) hasChange(kind ChangeKind, peer, reason string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.changes {
		if ch.Kind == kind && (peer == "" || ch.Peer.Name == peer) && (reason == "" || ch.Reason == reason) {
			return true
		}
	}
	return false
}

// peerNames returns the names of the client's peers.
func peerNames(c *Client) map[string]Record {
	out := map[string]Record{}
	for _, p := range c.Peers() {
		out[p.Name] = p
	}
	return out
}

// seesAll reports whether c knows exactly the names in want (other than itself), all online.
func seesAll(c *Client, want []string, online bool) bool {
	got := peerNames(c)
	n := 0
	for _, w := range want {
		if w == c.Name() {
			continue
		}
		p, ok := got[w]
		if !ok || (online && !p.Presence.Online) {
			return false
		}
		n++
	}
	return len(got) == n
}

// coordHas reports whether a coordinator's replica has name in a live
// (non-tombstone) record satisfying cond.
func coordHas(c *Coordinator, name string, cond func(Record) bool) bool {
	for _, r := range c.Records() {
		if r.Name == name && !r.Left {
			return cond == nil || cond(r)
		}
	}
	return false
}

// faultTransport wraps the coordinators' gossip transport and can cut this
// coordinator off from every other (both directions): outgoing packets are
// dropped, dials fail, incoming packets and streams are discarded.
type faultTransport struct {
	inner    *gossipNet
	drop     atomic.Bool
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	quit     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*faultTransport)(nil)

var errPartitioned = errors.New("test: partitioned")

func newFaultTransport(t testing.TB) *faultTransport {
	t.Helper()
	nt, err := listenGossip("127.0.0.1", 0, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f := &faultTransport{inner: nt, packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn), quit: make(chan struct{})}
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		for {
			select {
			case <-f.quit:
				return
			case p := <-nt.PacketCh():
				if f.drop.Load() {
					continue
				}
				select {
				case f.packetCh <- p:
				case <-f.quit:
					return
				}
			}
		}
	}()
	go func() {
		defer f.wg.Done()
		for {
			select {
			case <-f.quit:
				return
			case c := <-nt.StreamCh():
				if f.drop.Load() {
					_ = c.Close()
					continue
				}
				select {
				case f.streamCh <- c:
				case <-f.quit:
					_ = c.Close()
					return
				}
			}
		}
	}()
	return f
}

func (f *faultTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return f.inner.FinalAdvertiseAddr(ip, port)
}

func (f *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if f.drop.Load() {
		return time.Now(), nil
	}
	return f.inner.WriteTo(b, addr)
}

func (f *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if f.drop.Load() {
		return time.Now(), nil
	}
	return f.inner.WriteToAddress(b, a)
}

func (f *faultTransport) PacketCh() <-chan *memberlist.Packet { return f.packetCh }

func (f *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if f.drop.Load() {
		return nil, errPartitioned
	}
	return f.inner.DialTimeout(addr, timeout)
}

func (f *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if f.drop.Load() {
		return nil, errPartitioned
	}
	return f.inner.DialAddressTimeout(a, timeout)
}

func (f *faultTransport) StreamCh() <-chan net.Conn { return f.streamCh }

// Shutdown is idempotent: memberlist calls it, and so may a failed Create.
func (f *faultTransport) Shutdown() error {
	var err error
	f.once.Do(func() {
		err = f.inner.Shutdown()
		close(f.quit)
		f.wg.Wait()
	})
	return err
}
