package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// testNode is a node certificate with its key.
type testNode struct {
	cert *NodeCert
	key  crypto.Signer
}

func (n testNode) creds(ca *CA) *Credentials {
	return &Credentials{CA: ca.Cert, Cert: n.cert, Key: n.key}
}

func (n testNode) raw() [][]byte { return [][]byte{n.cert.Cert.Raw} }

func mustCA(t testing.TB, name string, kt KeyType) *CA {
	t.Helper()
	ca, err := NewCA(name, 10*365*24*time.Hour, kt)
	if err != nil {
		t.Fatalf("NewCA(%q, %v): %v", name, kt, err)
	}
	return ca
}

// testIdentity is node-N at 100.64.0.N/10 and fd7a:115c::N/48, allowed to
// route 10.N.0.0/24.
func testIdentity(name string, n byte) Identity {
	return Identity{
		Name:    name,
		Addr:    netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, n}), 10),
		Addr6:   netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x7a, 0x11, 0x5c, 15: n}), 48),
		Groups:  []string{"lab", "servers"},
		Subnets: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, n, 0, 0}), 24)},
	}
}

// mustNode signs a fresh key of type kt for id, valid from notBefore to
// notAfter (zero: the normal Sign window of a year).
func mustNode(t testing.TB, ca *CA, kt KeyType, id Identity, notBefore, notAfter time.Time) testNode {
	t.Helper()
	key, err := GenerateKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	var nc *NodeCert
	if notBefore.IsZero() {
		nc, err = ca.Sign(key.Public(), id, 365*24*time.Hour)
	} else {
		nc, err = ca.sign(key.Public(), id, notBefore, notAfter)
	}
	if err != nil {
		t.Fatalf("sign %q: %v", id.Name, err)
	}
	return testNode{cert: nc, key: key}
}

// reissueCA returns ca with its self-signed certificate made again, from the
// same key, subject and key id, after edit changed the template (another
// validity window, extra extensions). Certificates signed with ca.Key verify
// against the new certificate too, so a test can tell the CA's own checks
// apart from the chain's.
func reissueCA(t testing.TB, ca *CA, edit func(*x509.Certificate)) *CA {
	t.Helper()
	tmpl := *ca.Cert
	tmpl.ExtraExtensions = nil // parsed extensions are not re-encoded; only these would be
	edit(&tmpl)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, ca.Key.Public(), ca.Key)
	if err != nil {
		t.Fatalf("reissue CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: ca.Key}
}

// caWindow is a reissueCA edit that sets the CA's validity window.
func caWindow(notBefore, notAfter time.Time) func(*x509.Certificate) {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// oidUnknown is an extension no part of meshd or crypto/x509 knows.
var oidUnknown = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7, 99}

// withExtension is a handMade or reissueCA edit that adds an extension
// oidUnknown, critical or not, holding an ASN.1 NULL.
func withExtension(critical bool) func(*x509.Certificate) {
	return func(c *x509.Certificate) {
		c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: oidUnknown, Critical: critical, Value: []byte{0x05, 0x00}})
	}
}

// tamper returns a copy of der with the last byte of the signature flipped.
// The certificate still parses; only the CA signature is broken.
func tamper(t testing.TB, der []byte) []byte {
	t.Helper()
	out := append([]byte(nil), der...)
	out[len(out)-1] ^= 0x01
	if _, err := x509.ParseCertificate(out); err != nil {
		t.Fatalf("tampered certificate no longer parses: %v", err)
	}
	return out
}

// matchesExactly checks that err matches want and no other Verify sentinel.
func matchesExactly(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v does not match %v", err, want)
	}
	for _, other := range verifyReasons {
		if other != want && errors.Is(err, other) {
			t.Fatalf("error %v also matches %v", err, other)
		}
	}
}
