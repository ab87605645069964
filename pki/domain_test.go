package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/netip"
	"testing"
	"time"
)

func TestMeshDomain(t *testing.T) {
	ca, err := NewCAWithDomain("home", time.Hour, KeyEd25519, netip.MustParsePrefix("fd7a:6d65:7368::/48"), "home.internal")
	if err != nil {
		t.Fatal(err)
	}
	if got := MeshDomain(ca.Cert); got != "home.internal" {
		t.Errorf("MeshDomain = %q, want home.internal", got)
	}
	if ca.Prefix6() != netip.MustParsePrefix("fd7a:6d65:7368::/48") {
		t.Errorf("the IPv6 prefix did not survive: %v", ca.Prefix6())
	}
	// A CA from before domains existed keeps working with the default.
	old, err := NewCA("old", time.Hour, KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	if got := MeshDomain(old.Cert); got != DefaultMeshDomain {
		t.Errorf("MeshDomain(old CA) = %q, want %q", got, DefaultMeshDomain)
	}
	if _, err := NewCAWithDomain("home", time.Hour, KeyEd25519, netip.Prefix{}, "Not A Domain"); err == nil {
		t.Error("an invalid domain was accepted")
	}
	// Each node uses the domain of the CA that signed it (a bundle during
	// a rotation lists the new CA first).
	id := testIdentity("node-a", 1)
	id.Addr6 = netip.Prefix{}
	n := mustNode(t, ca, KeyECDSAP256, id, time.Time{}, time.Time{})
	creds := &Credentials{CA: old.Cert, CAs: []*x509.Certificate{old.Cert, ca.Cert}, Cert: n.cert}
	if got := creds.MeshDomain(); got != "home.internal" {
		t.Errorf("Credentials.MeshDomain = %q, want the signer's home.internal", got)
	}
}

func TestValidMeshDomain(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"mesh.internal", true}, {"home-lab.internal", true}, {"a.b.c.internal", true},
		{"internal", false}, {"Mesh.internal", false}, {"mesh.internal.", false}, {"-x.internal", false},
		{"mesh..internal", false}, {"me_sh.internal", false}, {"", false}, {"1.2.3.4", false},
	} {
		if got := ValidMeshDomain(tt.in); got != tt.ok {
			t.Errorf("ValidMeshDomain(%q) = %v, want %v", tt.in, got, tt.ok)
		}
	}
}

// FuzzMeshDomainExtension: whatever the extension holds, MeshDomain returns
// a valid domain and never panics.
func FuzzMeshDomainExtension(f *testing.F) {
	f.Add([]byte{0x16, 0x0d, 'm', 'e', 's', 'h', '.', 'i', 'n', 't', 'e', 'r', 'n', 'a', 'l'})
	f.Add([]byte{0x16, 0x00})
	f.Add([]byte{0x0c, 0x03, 'a', '.', 'b'})
	f.Fuzz(func(t *testing.T, v []byte) {
		cert := &x509.Certificate{Extensions: []pkix.Extension{{Id: OIDMeshDomain, Value: v}}}
		if d := MeshDomain(cert); !ValidMeshDomain(d) {
			t.Fatalf("MeshDomain returned %q", d)
		}
	})
}
