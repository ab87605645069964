package main

import (
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/pki"
)

// signed returns the certificate cert sign wrote.
func signedCert(t *testing.T, path string) *pki.NodeCert {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := pki.ParseNodeCertPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

func crlSerials(t *testing.T, caDir string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, e := range readCRL(t, filepath.Join(caDir, "crl.pem")).Entries() {
		out[e.Serial.Text(16)] = true
	}
	return out
}

// TestCAIndexRevokeLostNode: cert sign records every certificate in the CA's
// index, so a lost node whose .crt is gone is revoked by name (all its
// current certificates) or by serial.
func TestCAIndexRevokeLostNode(t *testing.T) {
	root := t.TempDir()
	caDir := filepath.Join(root, "ca")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir)
	sign := func(name, ip string, extra ...string) *pki.NodeCert {
		mustPKICmd(t, append([]string{"cert", "sign", "--ca-dir", caDir, "--name", name, "--ip", ip, "--out", root, "--force"}, extra...)...)
		return signedCert(t, filepath.Join(root, name+".crt"))
	}
	a1 := sign("node-a", "100.64.0.1/10")
	a2 := sign("node-a", "100.64.0.1/10", "--duration", "30d")
	b := sign("node-b", "100.64.0.2/10")
	c := sign("coord", "100.64.0.3/10", "--coordinator")

	assertFileMode(t, filepath.Join(caDir, pki.IndexFile), 0o644)
	idx, err := pki.LoadIndex(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Certificates) != 4 {
		t.Fatalf("index has %d entries, want 4", len(idx.Certificates))
	}
	for i, nc := range []*pki.NodeCert{a1, a2, b, c} {
		e := idx.Certificates[i]
		if e.Serial != nc.Cert.SerialNumber.Text(16) || e.Name != nc.Identity.Name || e.Fingerprint != nc.Fingerprint ||
			!e.NotAfter.Equal(nc.Cert.NotAfter) || e.Role != nc.Identity.Role() {
			t.Errorf("entry %d = %+v, want %s %s", i, e, nc.Identity.Name, nc.Cert.SerialNumber.Text(16))
		}
	}

	// node-a is lost with its files.
	for _, f := range []string{"node-a.crt", "node-a.key"} {
		if err := os.Remove(filepath.Join(root, f)); err != nil {
			t.Fatal(err)
		}
	}
	out := mustPKICmd(t, "ca", "revoke", "--ca-dir", caDir, "--name", "node-a", "--reason", "keyCompromise")
	got := crlSerials(t, caDir)
	if !got[a1.Cert.SerialNumber.Text(16)] || !got[a2.Cert.SerialNumber.Text(16)] || len(got) != 2 {
		t.Fatalf("--name node-a revoked %v\n%s", got, out)
	}
	if !strings.Contains(out, a1.Cert.SerialNumber.Text(16)) || !strings.Contains(out, a2.Cert.SerialNumber.Text(16)) {
		t.Errorf("output does not name both serials:\n%s", out)
	}

	// By serial, as cert show prints it; the index supplies the name.
	out = mustPKICmd(t, "ca", "revoke", "--ca-dir", caDir, "--serial", b.Cert.SerialNumber.Text(16))
	if got := crlSerials(t, caDir); !got[b.Cert.SerialNumber.Text(16)] || got[c.Cert.SerialNumber.Text(16)] || len(got) != 3 {
		t.Fatalf("--serial revoked %v", got)
	}
	if !strings.HasPrefix(pkiFieldValue(t, out, "revoked"), "node-b (serial ") {
		t.Errorf("output:\n%s", out)
	}

	// The list the mesh gets refuses them.
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	v := pki.NewVerifier(ca.Cert, nil)
	if _, err := v.UpdateCRL(readCRL(t, filepath.Join(caDir, "crl.pem"))); err != nil {
		t.Fatal(err)
	}
	for _, nc := range []*pki.NodeCert{a1, a2, b} {
		if _, err := v.Verify([][]byte{nc.Cert.Raw}, pki.Expect{}); !errors.Is(err, pki.ErrRevoked) {
			t.Errorf("%s %s: %v", nc.Identity.Name, nc.Cert.SerialNumber.Text(16), err)
		}
	}
	if _, err := v.Verify([][]byte{c.Cert.Raw}, pki.Expect{}); err != nil {
		t.Errorf("coord: %v", err)
	}

	if _, err := runPKICmd(t, "ca", "revoke", "--ca-dir", caDir, "--name", "node-x"); err == nil || !strings.Contains(err.Error(), "no unexpired certificate") {
		t.Errorf("--name of a node never signed: %v", err)
	}
}

// TestCARevokeWithoutIndex: a CA directory from before the index revokes by
// serial; by name it says the index is missing.
func TestCARevokeWithoutIndex(t *testing.T) {
	root := t.TempDir()
	caDir := filepath.Join(root, "ca")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir)
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "node-a", "--ip", "100.64.0.1/10", "--out", root)
	a := signedCert(t, filepath.Join(root, "node-a.crt"))
	if err := os.Remove(filepath.Join(caDir, pki.IndexFile)); err != nil {
		t.Fatal(err)
	}
	_, err := runPKICmd(t, "ca", "revoke", "--ca-dir", caDir, "--name", "node-a")
	if err == nil || !strings.Contains(err.Error(), "index") || !strings.Contains(err.Error(), "has none") {
		t.Fatalf("--name without an index: %v", err)
	}
	if _, err := os.Stat(filepath.Join(caDir, "crl.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused revoke wrote a CRL")
	}
	serial := "0x" + a.Cert.SerialNumber.Text(16)
	out := mustPKICmd(t, "ca", "revoke", "--ca-dir", caDir, "--serial", serial)
	if !crlSerials(t, caDir)[a.Cert.SerialNumber.Text(16)] {
		t.Fatalf("--serial %s did not revoke:\n%s", serial, out)
	}
	if want := "serial " + a.Cert.SerialNumber.Text(16); pkiFieldValue(t, out, "revoked") != want {
		t.Errorf("revoked %q, want %q", pkiFieldValue(t, out, "revoked"), want)
	}
}

// TestParseSerialForms: the forms an operator copies a serial in.
func TestParseSerialForms(t *testing.T) {
	want, _ := new(big.Int).SetString("1f2e3d", 16)
	for _, s := range []string{"1f2e3d", "0x1f2e3d", "1F2E3D", "1f:2e:3d", " 1f2e3d "} {
		if n, err := pki.ParseSerial(s); err != nil || n.Cmp(want) != 0 {
			t.Errorf("ParseSerial(%q) = %v, %v", s, n, err)
		}
	}
	for _, s := range []string{"", "0", "xyz", "-1", strings.Repeat("f", 41)} {
		if _, err := pki.ParseSerial(s); err == nil {
			t.Errorf("ParseSerial(%q) accepted", s)
		}
	}
}

// TestCAList: ca list shows each issued certificate with its state, and
// says when the directory has no index.
func TestCAList(t *testing.T) {
	root := t.TempDir()
	caDir := filepath.Join(root, "ca")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir)
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "node-a", "--ip", "100.64.0.1/10", "--out", root)
	a := signedCert(t, filepath.Join(root, "node-a.crt"))
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "coord", "--ip", "100.64.0.2/10", "--coordinator", "--out", root)
	mustPKICmd(t, "ca", "revoke", "--ca-dir", caDir, "--name", "node-a")

	out := mustPKICmd(t, "ca", "list", "--ca-dir", caDir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "SERIAL") {
		t.Fatalf("ca list:\n%s", out)
	}
	if f := strings.Fields(lines[1]); f[0] != a.Cert.SerialNumber.Text(16) || f[1] != "node-a" || f[2] != "node" || f[4] != "revoked" {
		t.Errorf("node-a row %q", lines[1])
	}
	if f := strings.Fields(lines[2]); f[1] != "coord" || f[2] != "coordinator" || f[4] != "valid" {
		t.Errorf("coord row %q", lines[2])
	}
	js := mustPKICmd(t, "ca", "list", "--ca-dir", caDir, "--name", "coord", "--json")
	if !strings.Contains(js, `"schema_version": 1`) || !strings.Contains(js, `"state": "valid"`) || strings.Contains(js, "node-a") {
		t.Errorf("ca list --json --name coord:\n%s", js)
	}
	_ = os.Remove(filepath.Join(caDir, pki.IndexFile))
	if _, err := runPKICmd(t, "ca", "list", "--ca-dir", caDir); err == nil || !strings.Contains(err.Error(), "no index") {
		t.Errorf("ca list without an index: %v", err)
	}
}
