package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/meshd/meshd/internal/testutil"
)

// The cipher suites meshd allows: ECDHE key agreement, ECDSA/Ed25519
// certificates, AEAD only.
var meshSuites = []dtls.CipherSuiteID{
	dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
}

// dtlsSide is one endpoint of a test handshake.
type dtlsSide struct {
	creds  *Credentials
	rawOwn [][]byte // certificate chain to present instead of creds' (tampering)
	v      *Verifier
	want   Expect
}

type dtlsResult struct {
	err  error
	peer *NodeCert
	conn *dtls.Conn
}

// handshake runs a DTLS 1.2 handshake between client and server over a
// loopback UDP pair with meshd's settings and returns both results. Both
// connections are closed before it returns unless keep is set, in which case
// the caller closes them.
func handshake(t *testing.T, client, server dtlsSide, keep bool) (cr, sr dtlsResult) {
	t.Helper()
	cu, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	su, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tlsCert := func(s dtlsSide) dtls.Option {
		c := s.creds.TLSCertificate()
		if s.rawOwn != nil {
			c.Certificate, c.Leaf = s.rawOwn, nil
		}
		return dtls.WithCertificates(c)
	}
	var gotC, gotS atomic.Pointer[NodeCert]
	cconn, err := dtls.ClientWithOptions(cu, su.LocalAddr(),
		tlsCert(client),
		dtls.WithCipherSuites(meshSuites...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(client.v.VerifyPeerCertificate(client.want, &gotC)),
	)
	if err != nil {
		t.Fatal(err)
	}
	sconn, err := dtls.ServerWithOptions(su, cu.LocalAddr(),
		tlsCert(server),
		dtls.WithCipherSuites(meshSuites...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithClientAuth(dtls.RequireAnyClientCert),
		dtls.WithVerifyPeerCertificate(server.v.VerifyPeerCertificate(server.want, &gotS)),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serr := make(chan error, 1)
	go func() { serr <- sconn.HandshakeContext(ctx) }()
	cr.err = cconn.HandshakeContext(ctx)
	if cr.err != nil {
		// The client gave up (or was refused): the server has nothing more
		// to wait for. Closing also unblocks a server that missed the alert.
		_ = cconn.Close()
	}
	sr.err = <-serr
	if ctx.Err() != nil {
		t.Fatalf("handshake timed out: client %v, server %v", cr.err, sr.err)
	}
	cr.peer, sr.peer = gotC.Load(), gotS.Load()
	cr.conn, sr.conn = cconn, sconn
	if !keep || cr.err != nil || sr.err != nil {
		_ = cconn.Close()
		_ = sconn.Close()
	}
	return cr, sr
}

func TestDTLSHandshake(t *testing.T) {
	testutil.LeakCheck(t)
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) {
			ca := mustCA(t, "test-mesh", kt)
			a := mustNode(t, ca, kt, testIdentity("node-a", 1), time.Time{}, time.Time{})
			b := mustNode(t, ca, kt, testIdentity("node-b", 2), time.Time{}, time.Time{})
			sideA := dtlsSide{creds: a.creds(ca), v: NewVerifier(ca.Cert, a.cert),
				want: Expect{Name: "node-b", Addr: netip.MustParseAddr("100.64.0.2"), Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}}}
			sideB := dtlsSide{creds: b.creds(ca), v: NewVerifier(ca.Cert, b.cert),
				want: Expect{Name: "node-a", Addr: netip.MustParseAddr("fd7a:115c::1")}}

			cr, sr := handshake(t, sideA, sideB, true)
			if cr.err != nil || sr.err != nil {
				t.Fatalf("good handshake: client %v, server %v", cr.err, sr.err)
			}
			defer cr.conn.Close()
			defer sr.conn.Close()
			if cr.peer == nil || cr.peer.Fingerprint != b.cert.Fingerprint || sr.peer == nil || sr.peer.Fingerprint != a.cert.Fingerprint {
				t.Fatalf("accepted peers not recorded: %v, %v", cr.peer, sr.peer)
			}
			state, ok := cr.conn.ConnectionState()
			if !ok || !slices.Contains(meshSuites, state.CipherSuiteID) {
				t.Fatalf("cipher suite %v", state.CipherSuiteID)
			}
			// Both sides derive the same keying material (what the data
			// path keys its records from) ...
			const label = "EXPORTER-meshd-test"
			ks, ok := sr.conn.ConnectionState()
			if !ok {
				t.Fatal("no server connection state")
			}
			ekc, err := state.ExportKeyingMaterial(label, nil, 32)
			if err != nil {
				t.Fatal(err)
			}
			eks, err := ks.ExportKeyingMaterial(label, nil, 32)
			if err != nil || !bytes.Equal(ekc, eks) {
				t.Fatalf("exported keys differ: %v", err)
			}
			// ... and records flow both ways.
			for _, dir := range []struct{ from, to *dtls.Conn }{{cr.conn, sr.conn}, {sr.conn, cr.conn}} {
				if _, err := dir.from.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				_ = dir.to.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := dir.to.Read(buf)
				if err != nil || string(buf[:n]) != "ping" {
					t.Fatalf("read %q, %v", buf[:n], err)
				}
			}
		})
	}
}

// TestDTLSMixedKeyTypes: one mesh may hold ECDSA and Ed25519 nodes side by
// side, under a CA of either type.
func TestDTLSMixedKeyTypes(t *testing.T) {
	testutil.LeakCheck(t)
	for _, caType := range []KeyType{KeyECDSAP256, KeyEd25519} {
		ca := mustCA(t, "test-mesh", caType)
		a := mustNode(t, ca, KeyEd25519, testIdentity("node-a", 1), time.Time{}, time.Time{})
		b := mustNode(t, ca, KeyECDSAP256, testIdentity("node-b", 2), time.Time{}, time.Time{})
		for _, pair := range [][2]testNode{{a, b}, {b, a}} {
			c := dtlsSide{creds: pair[0].creds(ca), v: NewVerifier(ca.Cert, pair[0].cert), want: Expect{Name: pair[1].cert.Identity.Name}}
			s := dtlsSide{creds: pair[1].creds(ca), v: NewVerifier(ca.Cert, pair[1].cert), want: Expect{Name: pair[0].cert.Identity.Name}}
			cr, sr := handshake(t, c, s, false)
			if cr.err != nil || sr.err != nil {
				t.Fatalf("CA %v, client %s: client %v, server %v", caType, pair[0].cert.Identity.Name, cr.err, sr.err)
			}
		}
	}
}

// TestDTLSRefusals refuses a peer for each reason, once with the server
// refusing the client's certificate and once with the client refusing the
// server's, and checks that the refusing side's handshake error matches the
// sentinel through pion's wrapping (dtls.HandshakeError unwraps to our
// *VerifyError).
func TestDTLSRefusals(t *testing.T) {
	testutil.LeakCheck(t)
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) { testDTLSRefusals(t, kt) })
	}
}

func testDTLSRefusals(t *testing.T, kt KeyType) {
	ca := mustCA(t, "test-mesh", kt)
	otherCA := mustCA(t, "test-mesh", kt) // same name: only the signature tells them apart
	now := time.Now()
	refuser := mustNode(t, ca, kt, testIdentity("node-a", 1), time.Time{}, time.Time{})
	peerID := testIdentity("node-b", 2)
	good := mustNode(t, ca, kt, peerID, time.Time{}, time.Time{})
	revoked := mustNode(t, ca, kt, peerID, time.Time{}, time.Time{})
	crl, err := ca.Revoke(nil, []*x509.Certificate{revoked.cert.Cert}, "keyCompromise", 0)
	if err != nil {
		t.Fatal(err)
	}
	// The refuser's CA certificate outside its window: the same CA (key,
	// subject), so the peer's certificate chains to it.
	expiredCA := reissueCA(t, ca, caWindow(now.Add(-48*time.Hour), now.Add(-time.Hour)))
	futureCA := reissueCA(t, ca, caWindow(now.Add(time.Hour), now.Add(48*time.Hour)))

	tests := []struct {
		name  string
		peer  testNode
		raw   [][]byte // presented instead of peer's certificate
		trust *CA      // the refuser's CA certificate; nil = ca
		want  Expect   // the refuser's expectation
		err   error
	}{
		{name: "CA expired", peer: good, trust: expiredCA, err: ErrCAExpired},
		{name: "CA not yet valid", peer: good, trust: futureCA, err: ErrCANotYetValid},
		{name: "unknown critical extension", peer: handMadeNode(t, ca, peerID, withExtension(true)), err: ErrCriticalExtension},
		{name: "expired", peer: mustNode(t, ca, kt, peerID, now.Add(-2*time.Hour), now.Add(-time.Hour)), err: ErrExpired},
		{name: "not yet valid", peer: mustNode(t, ca, kt, peerID, now.Add(time.Hour), now.Add(2*time.Hour)), err: ErrNotYetValid},
		{name: "other CA", peer: mustNode(t, otherCA, kt, peerID, time.Time{}, time.Time{}), err: ErrUnknownCA},
		{name: "revoked", peer: revoked, err: ErrRevoked},
		{name: "tampered signature", peer: good, raw: [][]byte{tamper(t, good.cert.Cert.Raw)}, err: ErrUnknownCA},
		{name: "not a coordinator", peer: good, want: Expect{Coordinator: true}, err: ErrNotCoordinator},
		{name: "wrong name", peer: good, want: Expect{Name: "node-c"}, err: ErrNameMismatch},
		{name: "wrong address", peer: good, want: Expect{Name: "node-b", Addr: netip.MustParseAddr("100.64.0.3")}, err: ErrAddressMismatch},
		{name: "subnet not allowed", peer: good, want: Expect{Name: "node-b", Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}, err: ErrSubnetNotAllowed},
		{name: "self", peer: refuser, err: ErrSelf},
	}
	for _, tc := range tests {
		for _, serverRefuses := range []bool{true, false} {
			dir := "client refuses server"
			if serverRefuses {
				dir = "server refuses client"
			}
			t.Run(tc.name+"/"+dir, func(t *testing.T) {
				trust := ca
				if tc.trust != nil {
					trust = tc.trust
				}
				rv := NewVerifier(trust.Cert, refuser.cert)
				if _, err := rv.UpdateCRL(crl); err != nil {
					t.Fatal(err)
				}
				r := dtlsSide{creds: refuser.creds(ca), v: rv, want: tc.want}
				// The peer accepts anyone from the CA, so that only the
				// refuser can end the handshake.
				p := dtlsSide{creds: tc.peer.creds(ca), rawOwn: tc.raw, v: NewVerifier(ca.Cert, nil)}
				var refused, other dtlsResult
				if serverRefuses {
					other, refused = handshake(t, p, r, false)
				} else {
					refused, other = handshake(t, r, p, false)
				}
				if refused.err == nil {
					t.Fatal("handshake accepted")
				}
				matchesExactly(t, refused.err, tc.err)
				var he *dtls.HandshakeError
				if !errors.As(refused.err, &he) {
					t.Errorf("refusal %T is not a dtls.HandshakeError", refused.err)
				}
				if other.err == nil {
					t.Error("the refused side completed its handshake")
				}
				if refused.peer != nil {
					t.Error("refused peer was recorded")
				}
			})
		}
	}
}
