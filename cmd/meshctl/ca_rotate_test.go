package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshd/meshd/pki"
)

// TestRunbookRotateCA runs docs/pki.md's "Rotate the CA" commands: a new CA,
// a two-CA bundle, one node re-signed by the new CA while another still has
// the old CA's certificate (both directions verify), then the old CA dropped.
func TestRunbookRotateCA(t *testing.T) {
	root := t.TempDir()
	oldCA, newCA := filepath.Join(root, "ca"), filepath.Join(root, "ca2")
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	mustPKICmd(t, "ca", "init", "--name", "home-lab", "--dir", oldCA)
	mustPKICmd(t, "cert", "sign", "--ca-dir", oldCA, "--name", "nas", "--ip", "100.64.0.7/10", "--groups", "servers", "--out", a)
	mustPKICmd(t, "cert", "sign", "--ca-dir", oldCA, "--name", "laptop", "--ip", "100.64.0.8/10", "--out", b)

	// 1. The new CA and the bundle every node gets as pki.ca.
	// The new CA keeps the mesh's IPv6 prefix (cert show prints it), so
	// re-signed nodes keep their IPv6 addresses.
	prefix6 := pkiFieldValue(t, mustPKICmd(t, "cert", "show", filepath.Join(oldCA, "ca.crt")), "ipv6 prefix")
	mustPKICmd(t, "ca", "init", "--name", "home-lab", "--dir", newCA, "--ip6-prefix", prefix6)
	oldPEM, _ := os.ReadFile(filepath.Join(oldCA, "ca.crt"))
	newPEM, _ := os.ReadFile(filepath.Join(newCA, "ca.crt"))
	bundle := filepath.Join(root, "bundle.crt")
	if err := os.WriteFile(bundle, append(append([]byte{}, oldPEM...), newPEM...), 0o644); err != nil {
		t.Fatal(err)
	}

	// 2. Re-sign nas with the new CA (renewal across CAs).
	nasCrt := filepath.Join(a, "nas.crt")
	mustPKICmd(t, "cert", "renew", "--cert", nasCrt)
	staging := filepath.Join(root, "staging")
	mustPKICmd(t, "cert", "sign", "--ca-dir", newCA, "--csr", filepath.Join(a, "nas.new.csr"), "--renew",
		"--previous", nasCrt, "--previous-ca", filepath.Join(oldCA, "ca.crt"), "--out", staging)
	mustPKICmd(t, "cert", "install", "--cert", nasCrt, "--ca", bundle, filepath.Join(staging, "nas.crt"))

	// Half-rotated: nas on the new CA, laptop on the old; each accepts the other.
	nas, err := pki.LoadCredentials(bundle, nasCrt, filepath.Join(a, "nas.key"))
	if err != nil {
		t.Fatal(err)
	}
	laptop, err := pki.LoadCredentials(bundle, filepath.Join(b, "laptop.crt"), filepath.Join(b, "laptop.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nas.Verifier().Verify([][]byte{laptop.Cert.Cert.Raw}, pki.Expect{Name: "laptop"}); err != nil {
		t.Fatalf("nas (new CA) refuses laptop (old CA): %v", err)
	}
	if _, err := laptop.Verifier().Verify([][]byte{nas.Cert.Cert.Raw}, pki.Expect{Name: "nas"}); err != nil {
		t.Fatalf("laptop (old CA) refuses nas (new CA): %v", err)
	}
	if idx, err := pki.LoadIndex(newCA); err != nil || len(idx.Current("nas", nas.Cert.Cert.NotBefore)) != 1 {
		t.Fatalf("the new CA's index does not list nas: %v", err)
	}

	// 3. The old CA dropped: pki.ca = the new CA alone. nas keeps working;
	// a node still on the old CA is refused (re-sign it before this step).
	onlyNew := filepath.Join(newCA, "ca.crt")
	nas, err = pki.LoadCredentials(onlyNew, nasCrt, filepath.Join(a, "nas.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nas.Verifier().Verify([][]byte{laptop.Cert.Cert.Raw}, pki.Expect{}); !errors.Is(err, pki.ErrUnknownCA) {
		t.Fatalf("old-CA certificate after the old CA is dropped: %v", err)
	}
	if _, err := pki.LoadCredentials(onlyNew, filepath.Join(b, "laptop.crt"), filepath.Join(b, "laptop.key")); !errors.Is(err, pki.ErrUnknownCA) {
		t.Fatalf("a node not re-signed loads: %v", err)
	}
}
