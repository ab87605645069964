package tunnel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"

	"github.com/meshd/meshd/internal/testutil"
)

// loopbackTURN is a pion TURN server on 127.0.0.1 over UDP, TCP and TLS.
type loopbackTURN struct {
	server                    *turn.Server
	udpAddr, tcpAddr, tlsAddr string
	roots                     *x509.CertPool
}

func startLoopbackTURN(t testing.TB) *loopbackTURN {
	t.Helper()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	relay := func() turn.RelayAddressGenerator {
		return &turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv4(127, 0, 0, 1), Address: "127.0.0.1"}
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cert, roots := selfSignedLoopbackCert(t)
	raw, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	key := turn.GenerateAuthKey("user", "meshd.test", "pass")
	s, err := turn.NewServer(turn.ServerConfig{
		Realm: "meshd.test",
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			return ra.Username, key, ra.Username == "user"
		},
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: pc, RelayAddressGenerator: relay()}},
		ListenerConfigs: []turn.ListenerConfig{
			{Listener: tl, RelayAddressGenerator: relay()},
			{Listener: sl, RelayAddressGenerator: relay()},
		},
		LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &loopbackTURN{server: s, udpAddr: pc.LocalAddr().String(), tcpAddr: tl.Addr().String(), tlsAddr: raw.Addr().String(), roots: roots}
}

func selfSignedLoopbackCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "turn.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// TestTURNTransports: with relay candidates only, links connect through
// TURN over UDP, TCP and TLS, carry traffic, and release their allocations
// when closed.
func TestTURNTransports(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 90*time.Second)
	srv := startLoopbackTURN(t)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	tests := []struct {
		name, url, proto, relay string
	}{
		{"udp", "turn:" + srv.udpAddr + "?transport=udp", "udp", srv.udpAddr + "/udp"},
		{"tcp", "turn:" + srv.tcpAddr + "?transport=tcp", "tcp", srv.tcpAddr + "/tcp"},
		{"tls", "turns:" + srv.tlsAddr + "?transport=tcp", "tls", srv.tlsAddr + "/tls"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			servers := []ICEServer{{URL: tc.url, Username: "user", Password: "pass"}}
			sig := newMemSignals()
			tweak := func(o *Options) {
				o.ForceRelay = true
				o.Servers = func() []ICEServer { return servers }
				o.TURNTLSConfig = &tls.Config{RootCAs: srv.roots}
			}
			ma := startManager(t, sig, a, tweak)
			mb := startManager(t, sig, b, tweak)
			ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
			var atA, atB collector
			ab.SetReceiver(atA.receive)
			ba.SetReceiver(atB.receive)
			testutil.WaitFor(t, 20*time.Second, "links connected", func() bool {
				return ab.State() == StateConnected && ba.State() == StateConnected
			})
			exchange(t, ab, &atB, "a-to-b", 5*time.Second)
			exchange(t, ba, &atA, "b-to-a", 5*time.Second)
			for _, l := range []*Link{ab, ba} {
				st := l.Status()
				if st.Path != PathRelay || st.Local.Type != "relay" || st.Local.RelayProtocol != tc.proto {
					t.Errorf("%s: path %v local %+v; want relay over %s", st.Peer, st.Path, st.Local, tc.proto)
				}
				if st.RelayServer != tc.relay {
					t.Errorf("%s: relay server %q, want %q", st.Peer, st.RelayServer, tc.relay)
				}
			}
			if n := srv.server.AllocationCount(); n < 2 {
				t.Errorf("%d allocations on the TURN server, want at least 2", n)
			}
			_ = ma.Close()
			_ = mb.Close()
			testutil.WaitFor(t, 10*time.Second, "allocations released", func() bool { return srv.server.AllocationCount() == 0 })
		})
	}
}

// TestTURNBadCertificateIsRefused: a turns: server whose certificate the
// configured roots do not trust yields no relay candidate.
func TestTURNBadCertificateIsRefused(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	srv := startLoopbackTURN(t)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	servers := []ICEServer{{URL: fmt.Sprintf("turns:%s?transport=tcp", srv.tlsAddr), Username: "user", Password: "pass"}}
	sig := newMemSignals()
	tweak := func(o *Options) {
		o.ForceRelay = true
		o.Servers = func() []ICEServer { return servers }
		o.TURNTLSConfig = &tls.Config{RootCAs: x509.NewCertPool()} // trusts nothing
		o.Timers.ConnectTimeout = 2 * time.Second
	}
	ma := startManager(t, sig, a, tweak)
	mb := startManager(t, sig, b, tweak)
	ab := mustLink(t, ma, b.peer)
	mustLink(t, mb, a.peer)
	testutil.WaitFor(t, 20*time.Second, "attempt fails", func() bool { return ab.Status().Failures >= 1 })
	if st := ab.Status(); st.State == StateConnected || srv.server.AllocationCount() != 0 {
		t.Fatalf("connected through an untrusted TURN server: %+v, %d allocations", st, srv.server.AllocationCount())
	}
}

// TestTURNRelayIgnoresForeignDatagrams: datagrams from strangers to a TURN
// client's socket (junk, broken or unexpected STUN, ChannelData on an
// unbound channel) are dropped and counted before pion's TURN client sees
// them: any of them would end its read loop and cut the relayed link.
func TestTURNRelayIgnoresForeignDatagrams(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	srv := startLoopbackTURN(t)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	servers := []ICEServer{{URL: "turn:" + srv.udpAddr + "?transport=udp", Username: "user", Password: "pass"}}
	sig := newMemSignals()
	tweak := func(o *Options) {
		o.ForceRelay = true
		o.Servers = func() []ICEServer { return servers }
	}
	ma := startManager(t, sig, a, tweak)
	mb := startManager(t, sig, b, tweak)
	ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "links connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	exchange(t, ab, &atB, "a-to-b", 5*time.Second)
	exchange(t, ba, &atA, "b-to-a", 5*time.Second)

	var targets []net.Addr
	for _, m := range []*Manager{ma, mb} {
		addrs := m.relays.addrs()
		if len(addrs) == 0 {
			t.Fatal("no open TURN client socket")
		}
		for _, ad := range addrs {
			// Bound to Options.ListenAddr, not pion's 0.0.0.0.
			if ua, ok := ad.(*net.UDPAddr); !ok || !ua.IP.Equal(net.IPv4(127, 0, 0, 1)) {
				t.Errorf("TURN client socket on %v, want 127.0.0.1", ad)
			}
		}
		targets = append(targets, addrs...)
	}

	junk := make([]byte, 200)
	_, _ = rand.Read(junk)
	stunHeader := func(typ uint16, length uint16) []byte {
		h := []byte{byte(typ >> 8), byte(typ), byte(length >> 8), byte(length), 0x21, 0x12, 0xa4, 0x42}
		return append(h, junk[:12]...) // transaction ID
	}
	datagrams := map[string][]byte{
		"random":            junk,
		"truncated STUN":    stunHeader(0x0101, 64),                           // success response claiming 64 bytes of attributes, has none
		"STUN request":      stunHeader(0x0001, 0),                            // binding request: a TURN client refuses requests
		"unbound channel":   {0x4f, 0xff, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef}, // ChannelData on channel 0x4fff
		"non-STUN, 1 byte":  {0x17},
		"ChannelData short": {0x40, 0x00, 0x00, 0x40},
	}
	stranger, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	before := ma.Stats().DroppedRelayForeign + mb.Stats().DroppedRelayForeign
	genA, genB := ab.Status().Generation, ba.Status().Generation
	sent := uint64(0)
	for name, d := range datagrams {
		for _, to := range targets {
			if _, err := stranger.WriteTo(d, to); err != nil {
				t.Fatalf("send %s to %v: %v", name, to, err)
			}
			sent++
		}
	}
	testutil.WaitFor(t, 5*time.Second, "foreign datagrams counted", func() bool {
		return ma.Stats().DroppedRelayForeign+mb.Stats().DroppedRelayForeign >= before+sent
	})
	exchange(t, ab, &atB, "after-junk-a-to-b", 5*time.Second)
	exchange(t, ba, &atA, "after-junk-b-to-a", 5*time.Second)
	for l, gen := range map[*Link]uint64{ab: genA, ba: genB} {
		if st := l.Status(); st.State != StateConnected || st.Path != PathRelay || st.Generation != gen {
			t.Errorf("%s after junk: state %v path %v generation %d (was %d); want the same relayed session connected",
				st.Peer, st.State, st.Path, st.Generation, gen)
		}
	}
}

// TestRelayBindAddress: TURN client sockets move from pion's wildcard
// address to the shared socket's address when the families agree.
func TestRelayBindAddress(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("2001:db8::7")
	tests := []struct {
		bind             netip.Addr
		network, in, out string
	}{
		{v4, "udp4", "0.0.0.0:0", "10.0.0.7:0"},
		{v4, "udp", ":0", "10.0.0.7:0"},
		{v6, "udp6", "[::]:0", "[2001:db8::7]:0"},
		{v4, "udp6", "[::]:0", "[::]:0"},
		{v6, "udp4", "0.0.0.0:0", "0.0.0.0:0"},
		{v4, "udp4", "192.0.2.1:0", "192.0.2.1:0"},
		{netip.Addr{}, "udp4", "0.0.0.0:0", "0.0.0.0:0"},
		{v4, "udp4", "garbage", "garbage"},
	}
	for _, tc := range tests {
		n := &relayNet{bind: tc.bind}
		if got := n.bindAddress(tc.network, tc.in); got != tc.out {
			t.Errorf("bind %v: %s %q -> %q, want %q", tc.bind, tc.network, tc.in, got, tc.out)
		}
	}
}

// TestRedundantSrflxDropped: without NAT the STUN server sees the host
// candidate's own address. Offering it again as server-reflexive made the
// host pair's checks count for the srflx twin (same socket, same address)
// and let a relay pair win on public hosts, so the mux drops it.
func TestRedundantSrflxDropped(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 30*time.Second)
	srv := startLoopbackTURN(t) // pion's TURN server answers STUN binding requests
	ca := newTestCA(t, "mesh")
	m := startManager(t, newMemSignals(), ca.node(t, "alpha", 1, 0, nil), nil)
	stunAddr, err := net.ResolveUDPAddr("udp4", srv.udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	// The unfiltered mux does see the host address: the setup is right.
	xor, err := m.mux.UniversalUDPMuxDefault.GetXORMappedAddr(stunAddr, 2*time.Second)
	if err != nil {
		t.Fatalf("STUN through the shared socket: %v", err)
	}
	if got, want := fmt.Sprintf("%s:%d", xor.IP, xor.Port), m.LocalAddr().String(); got != want {
		t.Fatalf("mapped address %s, want the socket's own %s (no NAT on loopback)", got, want)
	}
	if _, err := m.mux.GetXORMappedAddr(stunAddr, 2*time.Second); !errors.Is(err, errRedundantSrflx) {
		t.Fatalf("srflx equal to the host candidate: err %v, want errRedundantSrflx", err)
	}
}
