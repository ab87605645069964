package pki

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"
)

func TestRevoke(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) {
			ca := mustCA(t, "test-mesh", kt)
			a := mustNode(t, ca, kt, testIdentity("node-a", 1), time.Time{}, time.Time{})
			b := mustNode(t, ca, kt, testIdentity("node-b", 2), time.Time{}, time.Time{})

			first, err := ca.Revoke(nil, []*x509.Certificate{a.cert.Cert}, "key-compromise", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if first.Number().Int64() != 1 {
				t.Fatalf("first number %v", first.Number())
			}
			if d := first.List.NextUpdate.Sub(first.List.ThisUpdate); d != time.Hour {
				t.Fatalf("validity %v", d)
			}
			// Through PEM, as the CLI stores it.
			prev, err := ParseCRLPEM(first.PEM())
			if err != nil {
				t.Fatal(err)
			}
			second, err := ca.Revoke(prev, []*x509.Certificate{b.cert.Cert, a.cert.Cert}, "decommissioned", 0)
			if err != nil {
				t.Fatal(err)
			}
			if second.Number().Int64() != 2 {
				t.Fatalf("second number %v", second.Number())
			}
			if d := second.List.NextUpdate.Sub(second.List.ThisUpdate); d != DefaultCRLValidity {
				t.Fatalf("default validity %v", d)
			}
			es := second.Entries()
			if len(es) != 2 {
				t.Fatalf("%d entries, want 2 (no duplicate of node-a)", len(es))
			}
			if es[0].Serial.Cmp(a.cert.Cert.SerialNumber) != 0 || es[0].ReasonCode != 1 || es[0].Comment != "key-compromise" {
				t.Errorf("first entry not kept: %+v", es[0])
			}
			if !es[0].Time.Equal(first.Entries()[0].Time) {
				t.Errorf("first entry's time changed")
			}
			if es[1].Serial.Cmp(b.cert.Cert.SerialNumber) != 0 || es[1].ReasonCode != 0 || es[1].Comment != "decommissioned" {
				t.Errorf("second entry: %+v", es[1])
			}
			if err := checkCRLSignature(second, ca.Cert); err != nil {
				t.Fatal(err)
			}
			// Empty revocation re-signs with a higher number.
			third, err := ca.Revoke(second, nil, "", 0)
			if err != nil || third.Number().Int64() != 3 || len(third.Entries()) != 2 {
				t.Fatalf("re-sign: %v", err)
			}
		})
	}
}

func TestRevokeRejects(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	other := mustCA(t, "test-mesh", KeyECDSAP256)
	foreign := mustNode(t, other, KeyECDSAP256, testIdentity("node-a", 1), time.Time{}, time.Time{})
	if _, err := ca.Revoke(nil, []*x509.Certificate{foreign.cert.Cert}, "", 0); !errors.Is(err, ErrUnknownCA) {
		t.Errorf("foreign certificate: %v", err)
	}
	otherCRL, _ := other.Revoke(nil, nil, "", 0)
	if _, err := ca.Revoke(otherCRL, nil, "", 0); !errors.Is(err, ErrCRLSignature) {
		t.Errorf("foreign previous CRL: %v", err)
	}
	if _, err := ca.Revoke(nil, nil, "bad\x00reason", 0); err == nil {
		t.Error("control character in reason accepted")
	}
	if _, err := ca.Revoke(nil, nil, "", -time.Hour); err == nil {
		t.Error("negative validity accepted")
	}
}

func TestUpdateCRL(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	other := mustCA(t, "test-mesh", KeyECDSAP256)
	a := mustNode(t, ca, KeyECDSAP256, testIdentity("node-a", 1), time.Time{}, time.Time{})
	b := mustNode(t, ca, KeyECDSAP256, testIdentity("node-b", 2), time.Time{}, time.Time{})
	c1, _ := ca.Revoke(nil, []*x509.Certificate{a.cert.Cert}, "", 0)
	c2, _ := ca.Revoke(c1, []*x509.Certificate{b.cert.Cert}, "", 0)

	v := NewVerifier(ca.Cert, nil)
	if v.CRL() != nil || v.IsRevoked(a.cert.Cert.SerialNumber) {
		t.Fatal("fresh verifier has a CRL")
	}
	steps := []struct {
		name      string
		crl       *CRL
		installed bool
		err       error
		number    int64
	}{
		{"first", c1, true, nil, 1},
		{"same again", c1, false, nil, 1},
		{"newer", c2, true, nil, 2},
		{"older", c1, false, nil, 2},
		{"other CA", mustRevoke(t, other, 9), false, ErrCRLSignature, 2},
		{"tampered", tamperCRL(t, mustRevoke(t, ca, 10)), false, ErrCRLSignature, 2},
		{"nil", nil, false, ErrCRLSignature, 2},
	}
	for _, s := range steps {
		ok, err := v.UpdateCRL(s.crl)
		if ok != s.installed || !errors.Is(err, s.err) || (s.err == nil && err != nil) {
			t.Fatalf("%s: UpdateCRL = %v, %v; want %v, %v", s.name, ok, err, s.installed, s.err)
		}
		if got := v.CRL().Number().Int64(); got != s.number {
			t.Fatalf("%s: installed number %d, want %d", s.name, got, s.number)
		}
	}
	if !v.IsRevoked(a.cert.Cert.SerialNumber) || !v.IsRevoked(b.cert.Cert.SerialNumber) {
		t.Fatal("revoked serials not found")
	}
}

// mustRevoke makes a CRL numbered n (by chaining n revocations).
func mustRevoke(t *testing.T, ca *CA, n int) *CRL {
	t.Helper()
	var c *CRL
	for i := 0; i < n; i++ {
		var err error
		if c, err = ca.Revoke(c, nil, "", 0); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func tamperCRL(t *testing.T, c *CRL) *CRL {
	t.Helper()
	der := append([]byte(nil), c.Raw...)
	der[len(der)-1] ^= 1
	out, err := ParseCRLDER(der)
	if err != nil {
		t.Fatalf("tampered CRL does not parse: %v", err)
	}
	return out
}

func TestParseCRLRejects(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":        nil,
		"no CRL block": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		"garbage":      []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"),
	} {
		if _, err := ParseCRLPEM(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
