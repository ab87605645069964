package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"reflect"
	"testing"
	"time"
)

// Fuzz targets for everything that decodes bytes from outside: node
// certificates (DER and PEM, including the identity extension decoder), the
// extension alone, CRLs and the whole Verify path. None may panic; whatever
// decodes must satisfy the invariants the rest of meshd relies on.
//
//	go test -run '^$' -fuzz FuzzParseNodeCert -fuzztime 30s ./pki/

// fuzzSeeds returns real certificates and CRLs to start from.
func fuzzSeeds(f *testing.F) (certs [][]byte, crls [][]byte, exts [][]byte) {
	f.Helper()
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		ca := mustCA(f, "fuzz-mesh", kt)
		id := testIdentity("node-a", 1)
		n := mustNode(f, ca, kt, id, time.Time{}, time.Time{})
		bare := mustNode(f, ca, kt, Identity{Name: "b", Addr: id.Addr}, time.Time{}, time.Time{})
		coordID := Identity{Name: "c", Addr: id.Addr, Coordinator: true}
		coord := mustNode(f, ca, kt, coordID, time.Time{}, time.Time{})
		certs = append(certs, n.cert.Cert.Raw, bare.cert.Cert.Raw, coord.cert.Cert.Raw, ca.Cert.Raw)
		crl, err := ca.Revoke(nil, []*x509.Certificate{n.cert.Cert}, "keyCompromise", 0)
		if err != nil {
			f.Fatal(err)
		}
		crls = append(crls, crl.Raw)
		for _, c := range []*x509.Certificate{n.cert.Cert, bare.cert.Cert, coord.cert.Cert} {
			for _, e := range c.Extensions {
				if e.Id.Equal(OIDIdentity) {
					exts = append(exts, e.Value)
				}
			}
		}
	}
	return certs, crls, exts
}

// checkNodeCert asserts what every successfully parsed node certificate must
// satisfy.
func checkNodeCert(t *testing.T, nc *NodeCert) {
	if err := nc.Identity.Validate(); err != nil {
		t.Fatalf("parsed identity is invalid: %v", err)
	}
	if nc.Fingerprint != Fingerprint(nc.Cert.Raw) {
		t.Fatal("fingerprint does not match")
	}
	again, err := ParseNodeCertPEM(nc.PEM())
	if err != nil || !reflect.DeepEqual(again.Identity, nc.Identity) {
		t.Fatalf("PEM round trip: %v", err)
	}
}

func FuzzParseNodeCert(f *testing.F) {
	certs, _, _ := fuzzSeeds(f)
	for _, c := range certs {
		f.Add(c)
	}
	f.Add([]byte{})
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		nc, err := ParseNodeCert(der)
		if err != nil {
			return
		}
		checkNodeCert(t, nc)
	})
}

func FuzzParseNodeCertPEM(f *testing.F) {
	certs, _, _ := fuzzSeeds(f)
	for _, c := range certs {
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c}))
	}
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := ParseNodeCertPEM(data)
		if err != nil {
			return
		}
		checkNodeCert(t, nc)
	})
}

func FuzzIdentityExtension(f *testing.F) {
	_, _, exts := fuzzSeeds(f)
	for _, e := range exts {
		f.Add(e)
	}
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	f.Fuzz(func(t *testing.T, der []byte) {
		id, err := unmarshalIdentity(der)
		if err != nil {
			return
		}
		id.Name = "n"
		if id.Validate() != nil {
			// The decoder leaves the semantic checks to identityFromCert.
			return
		}
		back, err := marshalIdentity(id)
		if err != nil {
			t.Fatalf("valid identity does not encode: %v", err)
		}
		id2, err := unmarshalIdentity(back)
		if err != nil {
			t.Fatalf("re-encoded identity does not decode: %v", err)
		}
		id2.Name = "n"
		if !reflect.DeepEqual(id, id2) {
			t.Fatalf("round trip\n got %+v\nwant %+v", id2, id)
		}
	})
}

func FuzzParseCRLPEM(f *testing.F) {
	_, crls, _ := fuzzSeeds(f)
	for _, c := range crls {
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: c}))
	}
	f.Add([]byte("-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		crl, err := ParseCRLPEM(data)
		if err != nil {
			return
		}
		_ = crl.Number()
		_ = crl.Entries()
		if again, err := ParseCRLPEM(crl.PEM()); err != nil || !bytes.Equal(again.Raw, crl.Raw) {
			t.Fatalf("PEM round trip: %v", err)
		}
	})
}

// FuzzVerify feeds arbitrary bytes through the whole policy: never a panic,
// never an accepted certificate the CA did not sign.
func FuzzVerify(f *testing.F) {
	certs, _, _ := fuzzSeeds(f)
	for _, c := range certs {
		f.Add(c)
	}
	ca := mustCA(f, "fuzz-mesh", KeyECDSAP256)
	v := NewVerifier(ca.Cert, nil)
	f.Fuzz(func(t *testing.T, der []byte) {
		if nc, err := v.Verify([][]byte{der}, Expect{}); err == nil {
			t.Fatalf("accepted a certificate for %q from fuzz input", nc.Identity.Name)
		}
	})
}

// FuzzNodeCertExtension puts arbitrary extension bytes into a certificate the
// CA really signs, so that ParseNodeCert and Verify run the decoder and the
// SAN cross-checks behind a valid signature. Whatever Verify accepts must be
// a valid identity.
func FuzzNodeCertExtension(f *testing.F) {
	_, _, exts := fuzzSeeds(f)
	for _, e := range exts {
		f.Add(e)
	}
	ca := mustCA(f, "fuzz-mesh", KeyEd25519)
	key, err := GenerateKey(KeyEd25519)
	if err != nil {
		f.Fatal(err)
	}
	id := testIdentity("node-a", 1)
	v := NewVerifier(ca.Cert, nil)
	f.Fuzz(func(t *testing.T, ext []byte) {
		tmpl := &x509.Certificate{
			SerialNumber:    big.NewInt(1),
			Subject:         pkix.Name{CommonName: id.Name},
			NotBefore:       time.Now().Add(-time.Hour),
			NotAfter:        time.Now().Add(time.Hour),
			KeyUsage:        x509.KeyUsageDigitalSignature,
			ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
			DNSNames:        []string{id.Name},
			IPAddresses:     id.ipAddresses(),
			ExtraExtensions: []pkix.Extension{{Id: OIDIdentity, Value: ext}},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
		if err != nil {
			return
		}
		nc, perr := ParseNodeCert(der)
		if perr == nil {
			checkNodeCert(t, nc)
		}
		vc, verr := v.Verify([][]byte{der}, Expect{})
		if (perr == nil) != (verr == nil) {
			t.Fatalf("ParseNodeCert says %v but Verify says %v", perr, verr)
		}
		if verr == nil && vc.Identity.Addr != id.Addr {
			t.Fatalf("accepted address %v, the SAN says %v", vc.Identity.Addr, id.Addr)
		}
	})
}

// FuzzParseCAsPEM: a CA bundle (pki.ca) parses to 1-16 distinct CA
// certificates or fails; it never panics.
func FuzzParseCAsPEM(f *testing.F) {
	certs, _, _ := fuzzSeeds(f)
	var bundle []byte
	for _, c := range certs {
		block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})
		f.Add(block)
		bundle = append(bundle, block...)
	}
	f.Add(bundle)
	f.Fuzz(func(t *testing.T, data []byte) {
		cas, err := ParseCAsPEM(data)
		if err != nil {
			return
		}
		if len(cas) == 0 || len(cas) > maxCABundle {
			t.Fatalf("%d CAs", len(cas))
		}
		for i, ca := range cas {
			if !ca.IsCA {
				t.Fatal("a non-CA certificate in the bundle")
			}
			for _, prev := range cas[:i] {
				if bytes.Equal(prev.Raw, ca.Raw) {
					t.Fatal("a duplicate in the bundle")
				}
			}
		}
	})
}
