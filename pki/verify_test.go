package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// handMade signs a certificate for a fresh key straight from a template the
// test shapes, bypassing Sign's rules, to produce certificates a broken or
// foreign signer could make.
func handMade(t *testing.T, ca *CA, id Identity, edit func(*x509.Certificate)) []byte {
	t.Helper()
	return handMadeNode(t, ca, id, edit).cert.Cert.Raw
}

// handMadeNode is handMade with the key, for handshakes. The certificate
// must still parse as a node certificate.
func handMadeNode(t *testing.T, ca *CA, id Identity, edit func(*x509.Certificate)) testNode {
	t.Helper()
	key, err := GenerateKey(KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := marshalIdentity(id)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         pkix.Name{CommonName: id.Name},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:        []string{id.Name},
		IPAddresses:     id.ipAddresses(),
		ExtraExtensions: []pkix.Extension{{Id: OIDIdentity, Value: ext}},
	}
	edit(tmpl)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	// Not ParseNodeCert: some shapes are meant to be refused as not a
	// node certificate; Verify decides.
	nc := &NodeCert{Cert: cert, Fingerprint: Fingerprint(der)}
	if id, err := identityFromCert(cert); err == nil {
		nc.Identity = id
	}
	return testNode{cert: nc, key: key}
}

func TestVerify(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) { testVerify(t, kt) })
	}
}

func testVerify(t *testing.T, kt KeyType) {
	ca := mustCA(t, "test-mesh", kt)
	otherCA := mustCA(t, "other-mesh", kt)
	twinCA := mustCA(t, "test-mesh", kt) // same name, different key
	now := time.Now()

	self := mustNode(t, ca, kt, testIdentity("node-a", 1), time.Time{}, time.Time{})
	peerID := testIdentity("node-b", 2)
	good := mustNode(t, ca, kt, peerID, time.Time{}, time.Time{})
	foreign := mustNode(t, otherCA, kt, peerID, time.Time{}, time.Time{})
	twin := mustNode(t, twinCA, kt, peerID, time.Time{}, time.Time{})
	future := mustNode(t, ca, kt, peerID, now.Add(time.Hour), now.Add(2*time.Hour))
	expired := mustNode(t, ca, kt, peerID, now.Add(-2*time.Hour), now.Add(-time.Hour))
	revoked := mustNode(t, ca, kt, peerID, time.Time{}, time.Time{})
	revokedExpired := mustNode(t, ca, kt, peerID, now.Add(-2*time.Hour), now.Add(-time.Hour))
	impostor := mustNode(t, ca, kt, testIdentity("node-a", 9), time.Time{}, time.Time{})

	noExt := handMade(t, ca, peerID, func(c *x509.Certificate) { c.ExtraExtensions = nil })
	serverOnly := handMade(t, ca, peerID, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
	noDigSig := handMade(t, ca, peerID, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment })
	sanMismatch := handMade(t, ca, peerID, func(c *x509.Certificate) { c.DNSNames = []string{"node-z"} })
	badVersion := handMade(t, ca, peerID, func(c *x509.Certificate) {
		c.ExtraExtensions[0].Value[4] = 2 // SEQUENCE hdr (2) + INTEGER hdr (2): the version byte
	})
	unknownCritical := handMade(t, ca, peerID, withExtension(true))
	unknownCriticalExpired := handMade(t, ca, peerID, func(c *x509.Certificate) {
		withExtension(true)(c)
		c.NotBefore, c.NotAfter = now.Add(-2*time.Hour), now.Add(-time.Hour)
	})
	unknownCriticalCA := handMade(t, ca, peerID, func(c *x509.Certificate) {
		withExtension(true)(c)
		c.IsCA, c.BasicConstraintsValid = true, true
	})

	crl, err := ca.Revoke(nil, []*x509.Certificate{revoked.cert.Cert, revokedExpired.cert.Cert}, "keyCompromise", 0)
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(ca.Cert, self.cert)
	if ok, err := v.UpdateCRL(crl); !ok || err != nil {
		t.Fatalf("UpdateCRL = %v, %v", ok, err)
	}

	wantB := Expect{Name: "node-b", Addr: netip.MustParseAddr("100.64.0.2"), Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.128/25")}}
	tests := []struct {
		name string
		raw  [][]byte
		want Expect
		err  error // nil = accepted
	}{
		{"good", good.raw(), wantB, nil},
		{"good any peer", good.raw(), Expect{}, nil},
		{"good by IPv6", good.raw(), Expect{Addr: netip.MustParseAddr("fd7a:115c::2")}, nil},
		{"good by v4-mapped", good.raw(), Expect{Addr: netip.MustParseAddr("::ffff:100.64.0.2")}, nil},
		{"good whole subnet", good.raw(), Expect{Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24")}}, nil},
		{"good extra chain ignored", [][]byte{good.cert.Cert.Raw, otherCA.Cert.Raw}, wantB, nil},
		{"no certificate", nil, wantB, ErrNoCertificate},
		{"empty certificate", [][]byte{{}}, wantB, ErrNoCertificate},
		{"malformed", [][]byte{[]byte("not a certificate")}, wantB, ErrMalformed},
		{"truncated", [][]byte{good.cert.Cert.Raw[:len(good.cert.Cert.Raw)-10]}, wantB, ErrMalformed},
		{"other CA", foreign.raw(), wantB, ErrUnknownCA},
		{"CA with the same name", twin.raw(), wantB, ErrUnknownCA},
		{"tampered signature", [][]byte{tamper(t, good.cert.Cert.Raw)}, wantB, ErrUnknownCA},
		{"tampered and expired", [][]byte{tamper(t, expired.cert.Cert.Raw)}, wantB, ErrUnknownCA},
		{"not yet valid", future.raw(), wantB, ErrNotYetValid},
		{"expired", expired.raw(), wantB, ErrExpired},
		{"expired at Expect.Now", good.raw(), Expect{Now: good.cert.Cert.NotAfter.Add(time.Second)}, ErrExpired},
		{"CA as peer", [][]byte{ca.Cert.Raw}, wantB, ErrKeyUsage},
		{"no meshd identity", [][]byte{noExt}, wantB, ErrKeyUsage},
		{"server auth only", [][]byte{serverOnly}, wantB, ErrKeyUsage},
		{"no digitalSignature", [][]byte{noDigSig}, wantB, ErrKeyUsage},
		{"SAN disagrees with identity", [][]byte{sanMismatch}, wantB, ErrKeyUsage},
		{"unknown identity version", [][]byte{badVersion}, wantB, ErrKeyUsage},
		{"unknown critical extension", [][]byte{unknownCritical}, wantB, ErrCriticalExtension},
		{"expired wins over critical extension", [][]byte{unknownCriticalExpired}, wantB, ErrExpired},
		{"critical extension wins over key usage", [][]byte{unknownCriticalCA}, wantB, ErrCriticalExtension},
		{"revoked", revoked.raw(), wantB, ErrRevoked},
		{"expired wins over revoked", revokedExpired.raw(), wantB, ErrExpired},
		{"self", self.raw(), Expect{}, ErrSelf},
		{"same name as self", impostor.raw(), Expect{Name: "node-a"}, ErrSelf},
		{"wrong name", good.raw(), Expect{Name: "node-c"}, ErrNameMismatch},
		{"wrong address", good.raw(), Expect{Name: "node-b", Addr: netip.MustParseAddr("100.64.0.9")}, ErrAddressMismatch},
		{"wrong IPv6 address", good.raw(), Expect{Addr: netip.MustParseAddr("fd7a:115c::9")}, ErrAddressMismatch},
		{"subnet not allowed", good.raw(), Expect{Subnets: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}}, ErrSubnetNotAllowed},
		{"subnet wider than allowed", good.raw(), Expect{Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}}, ErrSubnetNotAllowed},
		{"one of two subnets not allowed", good.raw(), Expect{Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("10.3.0.0/24")}}, ErrSubnetNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := v.Verify(tc.raw, tc.want)
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if nc.Identity.Name != "node-b" || nc.Identity.Addr != peerID.Addr || nc.Fingerprint != good.cert.Fingerprint {
					t.Fatalf("accepted %+v", nc.Identity)
				}
				return
			}
			if nc != nil {
				t.Errorf("Verify returned a certificate with error %v", err)
			}
			matchesExactly(t, err, tc.err)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T is not a *VerifyError", err)
			}
			if ve.Detail == "" {
				t.Errorf("no detail in %v", err)
			}
		})
	}
}

func TestVerifyErrorText(t *testing.T) {
	// A CA valid at the fixed time below, whatever the date of the run: the
	// CA's own window is checked too.
	ca := reissueCA(t, mustCA(t, "test-mesh", KeyECDSAP256), caWindow(
		time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC)))
	notAfter := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	n := mustNode(t, ca, KeyECDSAP256, testIdentity("node-b", 2), notAfter.Add(-time.Hour), notAfter)
	_, err := NewVerifier(ca.Cert, nil).Verify(n.raw(), Expect{Now: time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)})
	want := `pki: certificate "node-b" rejected: expired: not after 2026-01-01T00:00:00Z, now 2026-11-24T08:00:00Z`
	if err == nil || err.Error() != want {
		t.Fatalf("error text\n got %v\nwant %s", err, want)
	}
	_, err = NewVerifier(ca.Cert, nil).Verify(nil, Expect{})
	if got := err.Error(); got != "pki: certificate rejected: no certificate: the peer sent none" {
		t.Fatalf("error text %q", got)
	}
	_, err = NewVerifier(ca.Cert, nil).Verify(n.raw(), Expect{Now: time.Date(2035, 6, 1, 0, 0, 0, 0, time.UTC)})
	want = `pki: certificate "node-b" rejected: CA certificate expired: the mesh CA "test-mesh" expired at 2035-01-01T00:00:00Z, now 2035-06-01T00:00:00Z`
	if err == nil || err.Error() != want {
		t.Fatalf("error text\n got %v\nwant %s", err, want)
	}
}

func TestVerifyNilCA(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	n := mustNode(t, ca, KeyECDSAP256, testIdentity("node-b", 2), time.Time{}, time.Time{})
	_, err := NewVerifier(nil, nil).Verify(n.raw(), Expect{})
	matchesExactly(t, err, ErrUnknownCA)
	if _, err := NewVerifier(nil, nil).UpdateCRL(&CRL{}); !errors.Is(err, ErrCRLSignature) {
		t.Fatalf("UpdateCRL without CA: %v", err)
	}
}

func TestVerifyPeerCertificateStoresPeer(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	n := mustNode(t, ca, KeyECDSAP256, testIdentity("node-b", 2), time.Time{}, time.Time{})
	v := NewVerifier(ca.Cert, nil)
	var got atomic.Pointer[NodeCert]
	if err := v.VerifyPeerCertificate(Expect{Name: "node-c"}, &got)(n.raw(), nil); !errors.Is(err, ErrNameMismatch) {
		t.Fatalf("wrong name: %v", err)
	}
	if got.Load() != nil {
		t.Fatal("a rejected peer was stored")
	}
	if err := v.VerifyPeerCertificate(Expect{Name: "node-b"}, &got)(n.raw(), nil); err != nil {
		t.Fatal(err)
	}
	if p := got.Load(); p == nil || p.Fingerprint != n.cert.Fingerprint {
		t.Fatalf("stored %v", p)
	}
	if err := v.VerifyPeerCertificate(Expect{}, nil)(n.raw(), nil); err != nil {
		t.Fatalf("nil got: %v", err)
	}
}

// TestVerifierConcurrentCRL runs Verify while CRLs are installed, for the race
// detector, and checks the end state: the highest number wins whatever the
// order of installation.
func TestVerifierConcurrentCRL(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	nodes := make([]testNode, 8)
	for i := range nodes {
		nodes[i] = mustNode(t, ca, KeyECDSAP256, testIdentity(fmt.Sprintf("node-%d", i), byte(i+1)), time.Time{}, time.Time{})
	}
	var crls []*CRL
	var prev *CRL
	for _, n := range nodes {
		c, err := ca.Revoke(prev, []*x509.Certificate{n.cert.Cert}, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		crls, prev = append(crls, c), c
	}
	v := NewVerifier(ca.Cert, nil)
	var wg sync.WaitGroup
	for i := len(crls) - 1; i >= 0; i-- {
		wg.Add(2)
		go func(c *CRL) {
			defer wg.Done()
			if _, err := v.UpdateCRL(c); err != nil {
				t.Error(err)
			}
		}(crls[i])
		go func(n testNode) {
			defer wg.Done()
			_, err := v.Verify(n.raw(), Expect{})
			if err != nil && !errors.Is(err, ErrRevoked) {
				t.Error(err)
			}
		}(nodes[i])
	}
	wg.Wait()
	if got := v.CRL().Number().Int64(); got != int64(len(crls)) {
		t.Fatalf("installed CRL number %d, want %d", got, len(crls))
	}
	for _, n := range nodes {
		_, err := v.Verify(n.raw(), Expect{})
		matchesExactly(t, err, ErrRevoked)
		if !regexp.MustCompile(`serial [0-9a-f]+ is on CRL number 8`).MatchString(err.Error()) {
			t.Errorf("detail: %v", err)
		}
	}
	if v.IsRevoked(nil) {
		t.Fatal("nil serial revoked")
	}
}

// TestVerifyCAAndExtensions covers what crypto/x509's own verification
// would refuse and Verify, which replaces it, must refuse too: a mesh CA
// outside its validity window, and critical extensions nobody handles, in
// the certificate or in the CA.
func TestVerifyCAAndExtensions(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) { testVerifyCAAndExtensions(t, kt) })
	}
}

func testVerifyCAAndExtensions(t *testing.T, kt KeyType) {
	now := time.Now()
	ca := mustCA(t, "test-mesh", kt)
	// The same CA (key, subject) with other certificates: everything ca
	// signs chains to each of them.
	expiredCA := reissueCA(t, ca, caWindow(now.Add(-48*time.Hour), now.Add(-time.Hour)))
	futureCA := reissueCA(t, ca, caWindow(now.Add(time.Hour), now.Add(48*time.Hour)))
	criticalCA := reissueCA(t, ca, withExtension(true))
	nonCriticalCA := reissueCA(t, ca, withExtension(false))

	peerID := testIdentity("node-b", 2)
	leaf := mustNode(t, ca, kt, peerID, now.Add(-time.Hour), now.Add(time.Hour))
	nonCritical := handMade(t, ca, peerID, withExtension(false))
	criticalIdentity := handMade(t, ca, peerID, func(c *x509.Certificate) { c.ExtraExtensions[0].Critical = true })

	tests := []struct {
		name   string
		trust  *CA
		raw    [][]byte
		now    time.Time // zero: now
		err    error     // nil = accepted
		detail string    // part of the detail of a refusal
	}{
		{"valid CA", ca, leaf.raw(), time.Time{}, nil, ""},
		{"CA expired", expiredCA, leaf.raw(), time.Time{}, ErrCAExpired, `the mesh CA "test-mesh" expired at ` + rfc3339(expiredCA.Cert.NotAfter)},
		{"CA not yet valid", futureCA, leaf.raw(), time.Time{}, ErrCANotYetValid, `the mesh CA "test-mesh" is not valid before ` + rfc3339(futureCA.Cert.NotBefore)},
		// The leaf is valid then: only the CA is not.
		{"CA not yet valid at Expect.Now", ca, leaf.raw(), ca.Cert.NotBefore.Add(-time.Second), ErrCANotYetValid, "is not valid before"},
		// The leaf expired long before: the CA is the cause reported.
		{"CA expiry wins over the certificate's", ca, leaf.raw(), ca.Cert.NotAfter.Add(time.Second), ErrCAExpired, "expired at"},
		{"CA with an unknown critical extension", criticalCA, leaf.raw(), time.Time{}, ErrCriticalExtension, `the mesh CA "test-mesh" carries critical extensions meshd does not handle: ` + oidUnknown.String()},
		{"CA with an unknown non-critical extension", nonCriticalCA, leaf.raw(), time.Time{}, nil, ""},
		{"unknown critical extension", ca, [][]byte{handMade(t, ca, peerID, withExtension(true))}, time.Time{}, ErrCriticalExtension, "critical extensions meshd does not handle: " + oidUnknown.String()},
		{"unknown non-critical extension", ca, [][]byte{nonCritical}, time.Time{}, nil, ""},
		{"meshd identity marked critical", ca, [][]byte{criticalIdentity}, time.Time{}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := NewVerifier(tt.trust.Cert, nil).Verify(tt.raw, Expect{Name: "node-b", Now: tt.now})
			if tt.err == nil {
				if err != nil || nc == nil || nc.Identity.Name != "node-b" {
					t.Fatalf("Verify = %v, %v; want accepted", nc, err)
				}
				return
			}
			if nc != nil {
				t.Errorf("Verify returned a certificate with error %v", err)
			}
			matchesExactly(t, err, tt.err)
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Subject != "node-b" || !strings.Contains(ve.Detail, tt.detail) {
				t.Errorf("refusal %q does not say %q", err, tt.detail)
			}
		})
	}
}

// TestVerifyCoordinatorRole: Expect.Coordinator accepts only certificates
// signed with the coordinator role; without it any role is accepted.
func TestVerifyCoordinatorRole(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	node := mustNode(t, ca, KeyECDSAP256, testIdentity("node-b", 2), time.Time{}, time.Time{})
	coordID := testIdentity("coord", 3)
	coordID.Coordinator = true
	coord := mustNode(t, ca, KeyECDSAP256, coordID, time.Time{}, time.Time{})
	v := NewVerifier(ca.Cert, nil)
	tests := []struct {
		name string
		peer testNode
		want Expect
		err  error
	}{
		{"coordinator as coordinator", coord, Expect{Coordinator: true}, nil},
		{"coordinator by name", coord, Expect{Coordinator: true, Name: "coord"}, nil},
		{"coordinator as any peer", coord, Expect{}, nil},
		{"node as any peer", node, Expect{}, nil},
		{"node as coordinator", node, Expect{Coordinator: true}, ErrNotCoordinator},
		{"node as coordinator by its name", node, Expect{Coordinator: true, Name: "node-b"}, ErrNotCoordinator},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := v.Verify(tc.peer.raw(), tc.want)
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if nc.Identity.Coordinator != tc.peer.cert.Identity.Coordinator {
					t.Fatalf("accepted with Coordinator=%v", nc.Identity.Coordinator)
				}
				return
			}
			matchesExactly(t, err, tc.err)
			if !strings.Contains(err.Error(), "certificate lacks the coordinator role") {
				t.Errorf("error text %q does not name the missing role", err)
			}
		})
	}
}
