package tunnel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
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

func startLoopbackTURN(t *testing.T) *loopbackTURN {
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

func selfSignedLoopbackCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
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
		name, url, proto string
	}{
		{"udp", "turn:" + srv.udpAddr + "?transport=udp", "udp"},
		{"tcp", "turn:" + srv.tcpAddr + "?transport=tcp", "tcp"},
		{"tls", "turns:" + srv.tlsAddr + "?transport=tcp", "tls"},
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
				if st.RelayServer != tc.url {
					t.Errorf("%s: relay server %q, want %q", st.Peer, st.RelayServer, tc.url)
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
