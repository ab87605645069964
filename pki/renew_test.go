package pki

import (
	"crypto/x509"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// TestRenew: a renewal keeps the identity of the certificate it renews, and
// a request that asks for anything more (or other) is refused.
func TestRenew(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	other := mustCA(t, "test-mesh", KeyECDSAP256)
	id := testIdentity("node-b", 2)
	id.Coordinator = true
	prev := mustNode(t, ca, KeyECDSAP256, id, time.Time{}, time.Time{})
	foreign := mustNode(t, other, KeyECDSAP256, id, time.Time{}, time.Time{})
	key, err := GenerateKey(KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	csrFor := func(edit func(*Identity)) []byte {
		want := id
		want.Groups = append([]string(nil), id.Groups...)
		want.Subnets = append([]netip.Prefix(nil), id.Subnets...)
		edit(&want)
		csr, err := CreateRenewalCSR(key, want, prev.cert, prev.key)
		if err != nil {
			t.Fatal(err)
		}
		return csr
	}
	same := csrFor(func(*Identity) {})
	// Same identity, another certificate (and key) of it.
	sibling := mustNode(t, ca, KeyECDSAP256, id, time.Time{}, time.Time{})
	// A request for the identity of prev whose proof comes from another
	// key: what someone holding only the (public) certificate could make.
	impostor := &NodeCert{Cert: &x509.Certificate{SerialNumber: prev.cert.Cert.SerialNumber, PublicKey: sibling.key.Public()}, Identity: id}
	forged, err := CreateRenewalCSR(key, id, impostor, sibling.key)
	if err != nil {
		t.Fatal(err)
	}

	nc, err := ca.Renew(same, prev.cert, 30*24*time.Hour)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if !nc.Identity.Equal(prev.cert.Identity) || !nc.Identity.Coordinator || !KeyBelongsTo(key, nc.Cert) || nc.Cert.SerialNumber.Cmp(prev.cert.Cert.SerialNumber) == 0 {
		t.Fatalf("renewed %+v", nc.Identity)
	}
	if _, err := NewVerifier(ca.Cert, nil).Verify([][]byte{nc.Cert.Raw}, Expect{Coordinator: true, Name: "node-b"}); err != nil {
		t.Fatalf("renewed certificate: %v", err)
	}

	plain, err := CreateCSR(key, "node-b")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		csr  []byte
		prev *NodeCert
		err  error
	}{
		{"wider subnets", csrFor(func(w *Identity) { w.Subnets = append(w.Subnets, netip.MustParsePrefix("10.9.0.0/16")) }), prev.cert, ErrBadIdentity},
		{"extra group", csrFor(func(w *Identity) { w.Groups = append(w.Groups, "admins") }), prev.cert, ErrBadIdentity},
		{"other address", csrFor(func(w *Identity) { w.Addr = netip.MustParsePrefix("100.64.0.9/10") }), prev.cert, ErrBadIdentity},
		{"other name", csrFor(func(w *Identity) { w.Name = "node-c" }), prev.cert, ErrBadIdentity},
		{"role dropped", csrFor(func(w *Identity) { w.Coordinator = false }), prev.cert, ErrBadIdentity},
		{"no identity in request", plain, prev.cert, ErrBadIdentity},
		{"previous from another CA", same, foreign.cert, ErrUnknownCA},
		{"proof for another certificate", same, sibling.cert, ErrBadSignature},
		{"proof by another key", forged, prev.cert, ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if nc, err := ca.Renew(tc.csr, tc.prev, time.Hour); !errors.Is(err, tc.err) {
				t.Fatalf("Renew = %v, %v; want %v", nc, err, tc.err)
			}
		})
	}
	// A node certificate cannot be renewed into a coordinator one either.
	nodeID := testIdentity("node-d", 4)
	nodePrev := mustNode(t, ca, KeyECDSAP256, nodeID, time.Time{}, time.Time{})
	nodeID.Coordinator = true
	promote, err := CreateRenewalCSR(key, nodeID, nodePrev.cert, nodePrev.key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Renew(promote, nodePrev.cert, time.Hour); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("renewal adding the coordinator role: %v", err)
	}
}

func FuzzCSRIdentity(f *testing.F) {
	key, err := GenerateKey(KeyECDSAP256)
	if err != nil {
		f.Fatal(err)
	}
	id := testIdentity("node-a", 1)
	id.Coordinator = true
	ca := mustCA(f, "fuzz-mesh", KeyECDSAP256)
	prev := mustNode(f, ca, KeyECDSAP256, id, time.Time{}, time.Time{})
	csr, err := CreateRenewalCSR(key, id, prev.cert, prev.key)
	if err != nil {
		f.Fatal(err)
	}
	plain, _ := CreateCSR(key, "node-a")
	f.Add(csr)
	f.Add(plain)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ParseCSR(data)
		if err != nil {
			return
		}
		got, ok, err := CSRIdentity(req)
		if err != nil || !ok {
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("accepted identity is invalid: %v", err)
		}
	})
}
