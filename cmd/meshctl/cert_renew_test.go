package main

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/pki"
)

// TestRunbookRenew runs docs/pki.md's "Renew a node" commands: cert renew on
// the node, cert sign --renew at the CA, cert install on the node. The live
// key is untouched until install, the identity (role included) is kept, and
// the index knows both certificates.
func TestRunbookRenew(t *testing.T) {
	root := t.TempDir()
	caDir, node, staging := filepath.Join(root, "ca"), filepath.Join(root, "etc-meshd"), filepath.Join(root, "staging")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir)
	mustPKICmd(t, "cert", "request", "--name", "nas", "--dir", node)
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", filepath.Join(node, "nas.csr"), "--ip", "100.64.0.7/10",
		"--groups", "servers,lab", "--subnets", "192.168.1.0/24", "--coordinator", "--out", node)
	liveCrt, liveKey := filepath.Join(node, "nas.crt"), filepath.Join(node, "nas.key")
	oldCert := signedCert(t, liveCrt)
	oldKey, _ := os.ReadFile(liveKey)

	// On the node.
	out := mustPKICmd(t, "cert", "renew", "--cert", liveCrt)
	newKey, newCSR := filepath.Join(node, "nas.new.key"), filepath.Join(node, "nas.new.csr")
	assertFileMode(t, newKey, 0o600)
	if pkiFieldValue(t, out, "request") != newCSR {
		t.Fatalf("renew output:\n%s", out)
	}
	if now, _ := os.ReadFile(liveKey); !bytes.Equal(now, oldKey) {
		t.Fatal("cert renew touched the live key")
	}

	// At the CA: one command, no identity flags.
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", newCSR, "--renew", "--out", staging)
	renewed := signedCert(t, filepath.Join(staging, "nas.crt"))
	if !renewed.Identity.Equal(oldCert.Identity) || renewed.Identity.Role() != "coordinator" {
		t.Fatalf("renewed identity %+v, want %+v", renewed.Identity, oldCert.Identity)
	}
	idx, err := pki.LoadIndex(caDir)
	if err != nil || len(idx.Current("nas", renewed.Cert.NotBefore)) != 2 {
		t.Fatalf("index after renewal: %v", err)
	}

	// A live certificate not named .crt leaves the key to --key: install
	// must not guess "nas.pem.key".
	if _, err := runPKICmd(t, "cert", "install", "--cert", filepath.Join(root, "nas.pem"), filepath.Join(staging, "nas.crt")); err == nil || !strings.Contains(err.Error(), "give --key") {
		t.Fatalf("install with --cert nas.pem and no --key: %v, want a usage error asking for --key", err)
	}

	// Install refuses a certificate that is not the new key's.
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "nas", "--ip", "100.64.0.7/10", "--out", filepath.Join(root, "other"))
	if _, err := runPKICmd(t, "cert", "install", "--cert", liveCrt, filepath.Join(root, "other", "nas.crt")); !errors.Is(err, pki.ErrKeyMismatch) {
		t.Fatalf("install of a certificate for another key: %v", err)
	}
	if now, _ := os.ReadFile(liveKey); !bytes.Equal(now, oldKey) {
		t.Fatal("a refused install touched the live key")
	}

	// Back on the node.
	mustPKICmd(t, "cert", "install", "--cert", liveCrt, "--ca", filepath.Join(caDir, "ca.crt"), filepath.Join(staging, "nas.crt"))
	creds, err := pki.LoadCredentials(filepath.Join(caDir, "ca.crt"), liveCrt, liveKey)
	if err != nil {
		t.Fatalf("installed pair: %v", err)
	}
	if creds.Cert.Fingerprint != renewed.Fingerprint {
		t.Fatal("the live certificate is not the renewed one")
	}
	assertFileMode(t, liveKey, 0o600)
	assertFileMode(t, liveKey+".old", 0o600)
	if prev, _ := os.ReadFile(liveKey + ".old"); !bytes.Equal(prev, oldKey) {
		t.Fatal("the previous key was not kept")
	}
	if _, err := os.Stat(newKey); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the new key is still there under its temporary name")
	}
}

// TestCertSignRenewRefuses: --renew never widens or changes an identity,
// never renews a revoked certificate, and says what it needs without an
// index.
func TestCertSignRenewRefuses(t *testing.T) {
	root := t.TempDir()
	caDir := filepath.Join(root, "ca")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir)
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "nas", "--ip", "100.64.0.7/10", "--subnets", "192.168.1.0/24", "--out", root)
	crt := filepath.Join(root, "nas.crt")
	cur := signedCert(t, crt)
	mustPKICmd(t, "cert", "renew", "--cert", crt)
	csr := filepath.Join(root, "nas.new.csr")
	out := filepath.Join(root, "out")

	// A hand-made renewal request asking for more than the certificate has.
	key, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	wider := cur.Identity
	wider.Subnets = append(wider.Subnets, netip.MustParsePrefix("10.0.0.0/8"))
	curKeyPEM, _ := os.ReadFile(filepath.Join(root, "nas.key"))
	curKey, err := pki.ParseKeyPEM(curKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	wide, err := pki.CreateRenewalCSR(key, wider, cur, curKey)
	if err != nil {
		t.Fatal(err)
	}
	wideFile := filepath.Join(root, "wide.csr")
	if err := os.WriteFile(wideFile, wide, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", wideFile, "--renew", "--out", out); !errors.Is(err, pki.ErrBadIdentity) || !strings.Contains(err.Error(), "10.0.0.0/8") {
		t.Fatalf("widening renewal: %v", err)
	}
	// Identity flags are refused with --renew; a plain request is not a renewal.
	if _, err := runPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", csr, "--renew", "--subnets", "10.0.0.0/8", "--out", out); err == nil || !strings.Contains(err.Error(), "drop --subnets") {
		t.Fatalf("--renew with --subnets: %v", err)
	}
	mustPKICmd(t, "cert", "request", "--name", "nas", "--dir", filepath.Join(root, "req"))
	if _, err := runPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", filepath.Join(root, "req", "nas.csr"), "--renew", "--out", out); err == nil || !strings.Contains(err.Error(), "not a renewal request") {
		t.Fatalf("--renew of a plain request: %v", err)
	}

	// Without an index it needs --previous, and then works.
	index := filepath.Join(caDir, pki.IndexFile)
	saved, _ := os.ReadFile(index)
	_ = os.Remove(index)
	if _, err := runPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", csr, "--renew", "--out", out); err == nil || !strings.Contains(err.Error(), "--previous") {
		t.Fatalf("--renew without an index: %v", err)
	}
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", csr, "--renew", "--previous", crt, "--out", out)
	if err := os.WriteFile(index, saved, 0o644); err != nil {
		t.Fatal(err)
	}

	// A revoked certificate is not renewed.
	mustPKICmd(t, "ca", "revoke", "--ca-dir", caDir, crt)
	if _, err := runPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", csr, "--renew", "--previous", crt, "--out", out, "--force"); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("renewal of a revoked certificate: %v", err)
	}
}
