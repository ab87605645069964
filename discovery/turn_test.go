package discovery

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/pion/turn/v5"
)

const testTURNSecret = "lab-static-auth-secret"

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func tlsCertForTest(t *testing.T) tls.Certificate {
	_, cs := shared(t)
	return cs[0].TLSCertificate()
}

func turnTweak(o *CoordinatorOptions) {
	o.TURN = TURNOptions{
		Secret:                testTURNSecret,
		UDPAddr:               "127.0.0.1:0",
		TCPAddr:               "127.0.0.1:0",
		TLSAddr:               "127.0.0.1:0",
		RelayAddress:          mustAddr("127.0.0.1"),
		RelayBindAddress:      "127.0.0.1",
		RelayPortMin:          42000,
		RelayPortMax:          42999,
		MaxAllocationsPerUser: 1,
		CredentialTTL:         time.Hour,
		ExternalURLs:          []string{"turn:turn.example.net:3478?transport=udp"},
		// The test's peers are on loopback, which the relay refuses unless
		// allowed (TestTURNRelayRefusesInternalPeers).
		AllowedPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	}
}

// turnAllocate runs a pion TURN client over conn and allocates a relay.
func turnAllocate(t *testing.T, conn net.PacketConn, server, user, pass string) (net.PacketConn, *turn.Client, error) {
	t.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Conn:           conn,
		Username:       user,
		Password:       pass,
		Realm:          "meshd",
		LoggerFactory:  &pionLoggerFactory{l: slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return relay, c, nil
}

func udpConn(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

func TestTURNCredentialsAllocate(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCoord(t, "coord-1", 200, nil, turnTweak)
	a := m.startClient(t, m.creds(t, "node-a", 1), []string{c.addr()})
	creds := waitTURNCredentials(t, a)
	testutil.WaitFor(t, 2*time.Second, "TURNUpdated change delivered", func() bool { return a.hasChange(TURNUpdated, "", "") })
	if !strings.HasSuffix(creds.Username, ":node-a") || time.Until(creds.Expires) < 50*time.Minute {
		t.Fatalf("credentials %+v", creds)
	}
	var udpURL, tcpHost, tlsHost string
	for _, u := range creds.URLs {
		switch {
		case strings.HasPrefix(u, "turns:127.0.0.1:") && strings.HasSuffix(u, "?transport=tcp"):
			tlsHost = strings.TrimSuffix(strings.TrimPrefix(u, "turns:"), "?transport=tcp")
		case strings.HasPrefix(u, "turn:127.0.0.1:") && strings.HasSuffix(u, "?transport=udp"):
			udpURL = strings.TrimSuffix(strings.TrimPrefix(u, "turn:"), "?transport=udp")
		case strings.HasPrefix(u, "turn:127.0.0.1:") && strings.HasSuffix(u, "?transport=tcp"):
			tcpHost = strings.TrimSuffix(strings.TrimPrefix(u, "turn:"), "?transport=tcp")
		}
	}
	if udpURL == "" || tcpHost == "" || tlsHost == "" || creds.URLs[0] != "stun:"+udpURL || creds.URLs[len(creds.URLs)-1] != "turn:turn.example.net:3478?transport=udp" {
		t.Fatalf("URLs %v", creds.URLs)
	}

	// The handed-out credentials allocate a relay that carries traffic.
	peer := udpConn(t)
	relay, tc, err := turnAllocate(t, udpConn(t), udpURL, creds.Username, creds.Password)
	if err != nil {
		t.Fatalf("allocation with handed-out credentials: %v", err)
	}
	if ra := relay.LocalAddr().(*net.UDPAddr); ra.Port < 42000 || ra.Port > 42999 || !ra.IP.IsLoopback() {
		t.Fatalf("relay address %v outside the configured range", ra)
	}
	if _, err := relay.WriteTo([]byte("via relay"), peer.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := peer.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "via relay" || from.String() != relay.LocalAddr().String() {
		t.Fatalf("relayed datagram: %q from %v, %v", buf[:n], from, err)
	}
	// STUN binding on the same port reflects our address.
	mapped, err := tc.SendBindingRequest()
	if err != nil || !strings.HasPrefix(mapped.String(), "127.0.0.1:") {
		t.Fatalf("STUN binding: %v %v", mapped, err)
	}

	// The per-user quota (1) refuses a second allocation for node-a.
	if _, tc2, err := turnAllocate(t, udpConn(t), udpURL, creds.Username, creds.Password); err == nil {
		tc2.Close()
		t.Fatal("second allocation beyond the per-user quota succeeded")
	}
	_ = relay.Close()
	tc.Close()
	// Deallocating frees the quota again.
	testutil.WaitFor(t, 5*time.Second, "quota released after deallocation", func() bool {
		r, c, err := turnAllocate(t, udpConn(t), udpURL, creds.Username, creds.Password)
		if err != nil {
			return false
		}
		_ = r.Close()
		c.Close()
		return true
	})

	// Expired and forged credentials are refused (other user names, so the
	// quota is not what refuses them).
	expU, expP := turnCredentials(testTURNSecret, "node-e", time.Now().Add(-time.Minute))
	if _, tc3, err := turnAllocate(t, udpConn(t), udpURL, expU, expP); err == nil {
		tc3.Close()
		t.Fatal("expired credentials allocated")
	}
	forgedU, forgedP := turnCredentials("not-the-secret", "node-b", time.Now().Add(time.Hour))
	if _, tc4, err := turnAllocate(t, udpConn(t), udpURL, forgedU, forgedP); err == nil {
		tc4.Close()
		t.Fatal("forged credentials allocated")
	}

	// TURN over TCP with credentials from pion's own generator: the scheme is
	// the coturn REST one on both sides.
	pu, pp, err := turn.GenerateLongTermTURNRESTCredentials(testTURNSecret, "node-c", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tcpConn, err := net.Dial("tcp", tcpHost)
	if err != nil {
		t.Fatal(err)
	}
	defer tcpConn.Close()
	relay5, tc5, err := turnAllocate(t, turn.NewSTUNConn(tcpConn), tcpHost, pu, pp)
	if err != nil {
		t.Fatalf("TURN over TCP: %v", err)
	}
	_ = relay5.Close()
	tc5.Close()

	// TURN over TLS, serving the coordinator's node certificate, which a
	// node verifies against the mesh CA.
	tlsConn, err := tls.Dial("tcp", tlsHost, &tls.Config{
		InsecureSkipVerify: true, // checked below with the mesh's own policy
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := verifyCert(m.verifier(nil), raw[0], time.Now())
			return err
		},
	})
	if err != nil {
		t.Fatalf("TURN TLS listener: %v", err)
	}
	defer tlsConn.Close()
	tu, tp := turnCredentials(testTURNSecret, "node-d", time.Now().Add(time.Hour))
	relay6, tc6, err := turnAllocate(t, turn.NewSTUNConn(tlsConn), tlsHost, tu, tp)
	if err != nil {
		t.Fatalf("TURN over TLS: %v", err)
	}
	_ = relay6.Close()
	tc6.Close()
}

func TestTURNCredentialsRefreshed(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCoord(t, "coord-1", 200, nil, func(o *CoordinatorOptions) {
		// External TURN only (a coturn sharing the secret): no listeners.
		o.TURN = TURNOptions{Secret: testTURNSecret, ExternalURLs: []string{"turns:turn.example.net:5349"}, CredentialTTL: 2 * time.Second}
	})
	a := m.startClient(t, m.creds(t, "node-a", 1), []string{c.addr()})
	var first TURNCredentials
	testutil.WaitFor(t, 5*time.Second, "first credentials", func() bool {
		var ok bool
		first, ok = a.TURNCredentials()
		return ok
	})
	if len(first.URLs) != 1 || first.URLs[0] != "turns:turn.example.net:5349" {
		t.Fatalf("URLs %v", first.URLs)
	}
	testutil.WaitFor(t, 5*time.Second, "credentials refreshed before expiry", func() bool {
		cur, _ := a.TURNCredentials()
		return cur.Expires.After(first.Expires) && cur.Username != first.Username && time.Now().Before(first.Expires)
	})
}

func TestTURNCredentialScheme(t *testing.T) {
	// Cross-checked with openssl, as the lab notes do for coturn.
	exp := time.Unix(1600000000, 0)
	u, p := turnCredentials("north", "alice", exp)
	if u != "1600000000:alice" {
		t.Fatalf("username %q", u)
	}
	// printf %s 1600000000:alice | openssl dgst -sha1 -hmac north -binary | base64
	if p != "gq98pTOhhHaAu0we9aV79kOVVv0=" {
		t.Fatalf("password %q", p)
	}
}

func TestTURNOptionsValidation(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if _, err := newTURNService(TURNOptions{UDPAddr: "127.0.0.1:0"}, tlsCertForTest(t), log); err == nil {
		t.Error("listener without relay address accepted")
	}
	if _, err := newTURNService(TURNOptions{ExternalURLs: []string{"http://x"}}, tlsCertForTest(t), log); err == nil {
		t.Error("bad external URL accepted")
	}
	s, err := newTURNService(TURNOptions{Secret: "s", ExternalURLs: []string{"turn:turn.example.net:3478"}}, tlsCertForTest(t), log)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := s.credentials("node-a", time.Now(), nil); !ok || len(c.URLs) != 1 {
		t.Fatalf("external-only credentials %+v %v", c, ok)
	}
	if _, ok := (&turnService{}).credentials("node-a", time.Now(), nil); ok {
		t.Error("credentials without a secret")
	}
}
