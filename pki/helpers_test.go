package pki

import (
	"crypto"
	"crypto/x509"
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
