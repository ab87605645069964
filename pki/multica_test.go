package pki

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// rotation is a half-rotated mesh: the old and the new CA (same mesh name, as
// a rotation keeps it), a node of each, and a third CA nobody trusts.
type rotation struct {
	oldCA, newCA, evilCA *CA
	oldNode, newNode     testNode
	evilNode             testNode
}

func newRotation(t *testing.T) rotation {
	r := rotation{
		oldCA:  mustCA(t, "test-mesh", KeyECDSAP256),
		newCA:  mustCA(t, "test-mesh", KeyEd25519),
		evilCA: mustCA(t, "test-mesh", KeyECDSAP256),
	}
	r.oldNode = mustNode(t, r.oldCA, KeyECDSAP256, testIdentity("node-a", 1), time.Time{}, time.Time{})
	r.newNode = mustNode(t, r.newCA, KeyEd25519, testIdentity("node-b", 2), time.Time{}, time.Time{})
	r.evilNode = mustNode(t, r.evilCA, KeyECDSAP256, testIdentity("node-c", 3), time.Time{}, time.Time{})
	return r
}

// crlListing is a CRL of ca that lists serial, whoever issued it.
func crlListing(t *testing.T, ca *CA, number int64, serial *big.Int) *CRL {
	t.Helper()
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: now, NextUpdate: now.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: serial, RevocationTime: now}},
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := ParseCRLDER(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// TestVerifierSeveralCAs: with a two-CA bundle, nodes of either CA verify
// (in both directions: each node's own Verifier holds the bundle), and a
// third CA of the same name is refused as unknown.
func TestVerifierSeveralCAs(t *testing.T) {
	r := newRotation(t)
	bundle := []*x509.Certificate{r.oldCA.Cert, r.newCA.Cert}
	for _, tc := range []struct {
		name string
		self testNode
		peer testNode
		err  error
	}{
		{"old node accepts new node", r.oldNode, r.newNode, nil},
		{"new node accepts old node", r.newNode, r.oldNode, nil},
		{"old node refuses third CA", r.oldNode, r.evilNode, ErrUnknownCA},
		{"new node refuses third CA", r.newNode, r.evilNode, ErrUnknownCA},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewVerifierCAs(bundle, tc.self.cert)
			nc, err := v.Verify(tc.peer.raw(), Expect{})
			if tc.err == nil {
				if err != nil || nc.Fingerprint != tc.peer.cert.Fingerprint {
					t.Fatalf("Verify = %v", err)
				}
				return
			}
			matchesExactly(t, err, tc.err)
		})
	}
	// Dropping the old CA ends the overlap: its nodes are unknown again.
	_, err := NewVerifierCAs([]*x509.Certificate{r.newCA.Cert}, nil).Verify(r.oldNode.raw(), Expect{})
	matchesExactly(t, err, ErrUnknownCA)
}

// TestVerifierCRLPerCA: each CA's CRL is kept and consulted separately.
func TestVerifierCRLPerCA(t *testing.T) {
	r := newRotation(t)
	v := NewVerifierCAs([]*x509.Certificate{r.oldCA.Cert, r.newCA.Cert}, r.oldNode.cert)

	// The old CA's list is at number 5; the new CA's first list (number 1)
	// revokes the new node and, by a serial the new CA never issued, names
	// the old node's serial too.
	oldCRL := crlListing(t, r.oldCA, 5, big.NewInt(12345))
	newCRL := crlListing(t, r.newCA, 1, r.newNode.cert.Cert.SerialNumber)
	newCRL2 := crlListing(t, r.newCA, 2, r.oldNode.cert.Cert.SerialNumber)
	for _, step := range []struct {
		crl     *CRL
		install bool
	}{{oldCRL, true}, {newCRL, true}, {oldCRL, false}, {newCRL, false}} {
		if !v.NewerCRL(step.crl) != !step.install {
			t.Errorf("NewerCRL(number %v) = %v", step.crl.Number(), !step.install)
		}
		if ok, err := v.UpdateCRL(step.crl); ok != step.install || err != nil {
			t.Fatalf("UpdateCRL(number %v) = %v, %v; want %v", step.crl.Number(), ok, err, step.install)
		}
	}
	if _, err := v.Verify(r.newNode.raw(), Expect{}); !errors.Is(err, ErrRevoked) {
		t.Fatalf("new node on the new CA's CRL: %v", err)
	}
	if !v.IsRevokedCert(r.newNode.cert.Cert) || v.IsRevokedCert(r.oldNode.cert.Cert) {
		t.Fatal("IsRevokedCert does not follow the issuer")
	}
	if got := v.CRLs(); len(got) != 2 || got[0] != oldCRL || got[1] != newCRL {
		t.Fatalf("CRLs = %v", got)
	}
	if v.CRL() != oldCRL {
		t.Fatal("CRL() is not the list of this node's own CA")
	}

	// The new CA's list names the old node's serial: the old node is still fine.
	if ok, err := v.UpdateCRL(newCRL2); !ok || err != nil {
		t.Fatalf("UpdateCRL(new CA number 2) = %v, %v", ok, err)
	}
	peer := NewVerifierCAs([]*x509.Certificate{r.oldCA.Cert, r.newCA.Cert}, r.newNode.cert)
	if _, err := peer.UpdateCRL(newCRL2); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Verify(r.oldNode.raw(), Expect{}); err != nil {
		t.Fatalf("a CRL of the new CA revoked a certificate of the old one: %v", err)
	}
	if peer.IsRevokedCert(r.oldNode.cert.Cert) {
		t.Fatal("IsRevokedCert: a CRL of the new CA revoked a certificate of the old one")
	}

	// A CRL of an untrusted CA is refused, whatever its number.
	if ok, err := peer.UpdateCRL(crlListing(t, r.evilCA, 99, r.oldNode.cert.Cert.SerialNumber)); ok || !errors.Is(err, ErrCRLSignature) {
		t.Fatalf("CRL of a third CA: %v, %v", ok, err)
	}
	if _, err := peer.Verify(r.oldNode.raw(), Expect{}); err != nil {
		t.Fatalf("old node after the third CA's CRL: %v", err)
	}
}

// TestLoadCredentialsBundle: pki.ca may hold several CA certificates; the
// node's certificate must come from one of them.
func TestLoadCredentialsBundle(t *testing.T) {
	r := newRotation(t)
	dir := t.TempDir()
	write := func(name string, data ...[]byte) string {
		p := filepath.Join(dir, name)
		var all []byte
		for _, d := range data {
			all = append(all, d...)
		}
		if err := os.WriteFile(p, all, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certPEM := func(c *x509.Certificate) []byte { return (&NodeCert{Cert: c}).PEM() }
	keyPEM := func(n testNode) []byte {
		b, err := MarshalKeyPEM(n.key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bundle := write("bundle.crt", certPEM(r.oldCA.Cert), certPEM(r.newCA.Cert))
	newCrt, newKey := write("new.crt", r.newNode.cert.PEM()), write("new.key", keyPEM(r.newNode))
	evilCrt, evilKey := write("evil.crt", r.evilNode.cert.PEM()), write("evil.key", keyPEM(r.evilNode))

	creds, err := LoadCredentials(bundle, newCrt, newKey)
	if err != nil {
		t.Fatalf("node of the second CA in the bundle: %v", err)
	}
	if len(creds.CAs) != 2 || creds.CA != creds.CAs[0] || !creds.CAs[1].Equal(r.newCA.Cert) {
		t.Fatalf("CAs %d, CA is the first: %v", len(creds.CAs), creds.CA == creds.CAs[0])
	}
	if _, err := creds.Verifier().Verify(r.oldNode.raw(), Expect{}); err != nil {
		t.Fatalf("the credentials' Verifier does not trust the first CA: %v", err)
	}
	if _, err := LoadCredentials(bundle, evilCrt, evilKey); !errors.Is(err, ErrUnknownCA) {
		t.Fatalf("node of a third CA: %v", err)
	}
	for name, data := range map[string][]byte{
		"node cert in bundle": append(certPEM(r.oldCA.Cert), r.newNode.cert.PEM()...),
		"duplicate":           append(certPEM(r.oldCA.Cert), certPEM(r.oldCA.Cert)...),
		"empty":               []byte("nothing here"),
	} {
		if _, err := LoadCredentials(write("bad.crt", data), newCrt, newKey); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
