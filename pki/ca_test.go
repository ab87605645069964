package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestNewCA(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) {
			ca, err := NewCA("Home Lab", 24*time.Hour, kt)
			if err != nil {
				t.Fatal(err)
			}
			c := ca.Cert
			if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
				t.Errorf("basic constraints: IsCA=%v valid=%v MaxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
			}
			if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("key usage %v", c.KeyUsage)
			}
			if err := c.CheckSignatureFrom(c); err != nil {
				t.Errorf("not self-signed: %v", err)
			}
			if c.Subject.CommonName != "Home Lab" || len(c.SubjectKeyId) == 0 {
				t.Errorf("subject %q, SKI %x", c.Subject.CommonName, c.SubjectKeyId)
			}
			if got, _ := KeyTypeOf(c.PublicKey); got != kt {
				t.Errorf("key type %v", got)
			}
			if d := time.Until(c.NotAfter); d < 23*time.Hour || d > 24*time.Hour {
				t.Errorf("NotAfter in %v", d)
			}
		})
	}
	if _, err := NewCA("", time.Hour, KeyECDSAP256); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("empty name: %v", err)
	}
	if _, err := NewCA("bad\nname", time.Hour, KeyECDSAP256); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("control character: %v", err)
	}
	if _, err := NewCA("x", 0, KeyECDSAP256); err == nil {
		t.Error("zero validity accepted")
	}
}

func TestCASaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca := mustCA(t, "test-mesh", KeyEd25519)
	if err := ca.Save(dir, false); err != nil {
		t.Fatal(err)
	}
	assertMode(t, filepath.Join(dir, CAKeyFile), 0o600)
	assertMode(t, filepath.Join(dir, CACertFile), 0o644)
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("CA directory mode %o", st.Mode().Perm())
	}
	back, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Cert.Raw, ca.Cert.Raw) || !publicKeysEqual(back.Key.Public(), ca.Key.Public()) {
		t.Fatal("LoadCA returned another CA")
	}

	other := mustCA(t, "test-mesh", KeyEd25519)
	err = other.Save(dir, false)
	var pe *fs.PathError
	if !errors.Is(err, ErrExists) || !errors.As(err, &pe) {
		t.Fatalf("Save over an existing CA: %v", err)
	}
	if again, _ := LoadCA(dir); !bytes.Equal(again.Cert.Raw, ca.Cert.Raw) {
		t.Fatal("refused Save changed the CA")
	}
	// Only the certificate missing: still refused, nothing written.
	if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
		t.Fatal(err)
	}
	if err := other.Save(dir, false); !errors.Is(err, ErrExists) {
		t.Fatalf("Save over an existing key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, CACertFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("refused Save wrote the certificate")
	}
	if err := other.Save(dir, true); err != nil {
		t.Fatal(err)
	}
	if again, _ := LoadCA(dir); !bytes.Equal(again.Cert.Raw, other.Cert.Raw) {
		t.Fatal("forced Save did not replace the CA")
	}

	// Key of one CA with the certificate of another.
	mixed := t.TempDir()
	_ = ca.Save(mixed, false)
	keyPEM, _ := MarshalKeyPEM(other.Key)
	_ = WriteFile(filepath.Join(mixed, CAKeyFile), keyPEM, 0o600, true)
	if _, err := LoadCA(mixed); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("mismatched CA key: %v", err)
	}
	if _, err := LoadCA(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty directory: %v", err)
	}
}

func TestSign(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) {
			ca := mustCA(t, "test-mesh", kt)
			id := testIdentity("node-a", 1)
			id.Groups = []string{"servers", "lab", "servers"} // Sign normalizes
			n := mustNode(t, ca, KeyECDSAP256, id, time.Time{}, time.Time{})
			c := n.cert.Cert
			if c.Subject.CommonName != "node-a" || !reflect.DeepEqual(c.DNSNames, []string{"node-a"}) {
				t.Errorf("CN %q DNS %v", c.Subject.CommonName, c.DNSNames)
			}
			wantIPs := []net.IP{net.ParseIP("100.64.0.1").To4(), net.ParseIP("fd7a:115c::1")}
			if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(wantIPs[0]) || !c.IPAddresses[1].Equal(wantIPs[1]) {
				t.Errorf("IP SANs %v", c.IPAddresses)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("key usage %v", c.KeyUsage)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}) {
				t.Errorf("EKU %v", c.ExtKeyUsage)
			}
			if c.IsCA {
				t.Error("node certificate is a CA")
			}
			if err := c.CheckSignatureFrom(ca.Cert); err != nil {
				t.Error(err)
			}
			if !bytes.Equal(c.AuthorityKeyId, ca.Cert.SubjectKeyId) {
				t.Error("authority key id does not name the CA")
			}
			want := testIdentity("node-a", 1)
			if !reflect.DeepEqual(n.cert.Identity, want) {
				t.Errorf("identity\n got %+v\nwant %+v", n.cert.Identity, want)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %x", c.SerialNumber)
			}
			var critical bool
			for _, e := range c.Extensions {
				if e.Id.Equal(OIDIdentity) {
					critical = e.Critical
				}
			}
			if critical {
				t.Error("identity extension is critical")
			}
			back, err := ParseNodeCertPEM(n.cert.PEM())
			if err != nil || back.Fingerprint != n.cert.Fingerprint || len(back.Fingerprint) != 64 {
				t.Fatalf("PEM round trip: %v", err)
			}
		})
	}
}

func TestSignSerialsAreRandom(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	seen := map[string]bool{}
	var maxBits int
	for i := 0; i < 16; i++ {
		s := mustNode(t, ca, KeyEd25519, testIdentity("node-a", 1), time.Time{}, time.Time{}).cert.Cert.SerialNumber
		if seen[s.String()] {
			t.Fatal("repeated serial")
		}
		seen[s.String()] = true
		maxBits = max(maxBits, s.BitLen())
	}
	// 16 draws of 128 random bits: the largest is below 2^120 with
	// probability 16*2^-8, i.e. practically never.
	if maxBits < 120 {
		t.Fatalf("serials are not 128-bit random (max %d bits)", maxBits)
	}
}

func TestSignRejects(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	key, _ := GenerateKey(KeyECDSAP256)
	bad := testIdentity("Node A", 1)
	if _, err := ca.Sign(key.Public(), bad, time.Hour); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("bad name: %v", err)
	}
	unmasked := testIdentity("node-a", 1)
	unmasked.Subnets = []netip.Prefix{netip.MustParsePrefix("10.1.0.1/24")}
	if _, err := ca.Sign(key.Public(), unmasked, time.Hour); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("unmasked subnet: %v", err)
	}
	if _, err := ca.Sign(key.Public(), testIdentity("node-a", 1), 0); err == nil {
		t.Error("zero validity accepted")
	}
	if _, err := ca.Sign("not a key", testIdentity("node-a", 1), time.Hour); !errors.Is(err, ErrKeyType) {
		t.Errorf("bad key: %v", err)
	}
}

func TestSignClampsToCAExpiry(t *testing.T) {
	ca, err := NewCA("short", 2*time.Hour, KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	n := mustNode(t, ca, KeyECDSAP256, testIdentity("node-a", 1), time.Time{}, time.Time{})
	if !n.cert.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Fatalf("node NotAfter %v, CA NotAfter %v", n.cert.Cert.NotAfter, ca.Cert.NotAfter)
	}
}

func TestSignCSR(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		key, _ := GenerateKey(kt)
		csr, err := CreateCSR(key, "node-b")
		if err != nil {
			t.Fatal(err)
		}
		id := testIdentity("", 2)
		nc, err := ca.SignCSR(csr, id, time.Hour)
		if err != nil {
			t.Fatalf("%v: %v", kt, err)
		}
		if nc.Identity.Name != "node-b" || !publicKeysEqual(nc.Cert.PublicKey, key.Public()) {
			t.Fatalf("%v: signed %q for another key", kt, nc.Identity.Name)
		}
		id.Name = "node-b"
		if _, err := ca.SignCSR(csr, id, time.Hour); err != nil {
			t.Fatalf("matching name: %v", err)
		}
		id.Name = "node-c"
		if _, err := ca.SignCSR(csr, id, time.Hour); !errors.Is(err, ErrBadIdentity) {
			t.Fatalf("name mismatch: %v", err)
		}
	}

	key, _ := GenerateKey(KeyECDSAP256)
	csr, _ := CreateCSR(key, "node-b")
	block, _ := pem.Decode(csr)
	block.Bytes[len(block.Bytes)-1] ^= 1
	if _, err := ca.SignCSR(pem.EncodeToMemory(block), testIdentity("", 2), time.Hour); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered CSR: %v", err)
	}
	if _, err := ca.SignCSR([]byte("junk"), testIdentity("", 2), time.Hour); err == nil {
		t.Fatal("junk CSR accepted")
	}
	if _, err := CreateCSR(key, "Bad Name"); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("CreateCSR bad name: %v", err)
	}
	// A CSR whose CN is not a valid node name is refused at signing.
	bad := &x509.CertificateRequest{}
	bad.Subject.CommonName = "Bad Name"
	der, _ := x509.CreateCertificateRequest(rand.Reader, bad, key)
	if _, err := ca.SignCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), testIdentity("", 2), time.Hour); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("bad CN: %v", err)
	}
}

func TestParseNodeCertRejectsCA(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	if _, err := ParseNodeCert(ca.Cert.Raw); !errors.Is(err, ErrMalformed) {
		t.Fatalf("CA parsed as a node certificate: %v", err)
	}
	if _, err := ParseNodeCertPEM([]byte("x")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("no PEM: %v", err)
	}
	if c, err := ParseCertPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})); err != nil || !c.IsCA {
		t.Fatalf("ParseCertPEM: %v", err)
	}
}
