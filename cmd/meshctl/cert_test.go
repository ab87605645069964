package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/pki"
)

// TestCertWorkflow walks the offline workflow: a CA, one node certificate
// from a request made on the node, one with a key generated at the CA, both
// shown, then revoked in two runs.
func TestCertWorkflow(t *testing.T) {
	root := t.TempDir()
	caDir := filepath.Join(root, "ca")
	nodeB := filepath.Join(root, "node-b")
	out := filepath.Join(root, "out")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir, "--ip6-prefix", "fd7a:115c::/48")

	// node-b: key and request on the node, signed at the CA.
	reqOut := mustPKICmd(t, "cert", "request", "--name", "node-b", "--dir", nodeB, "--key-type", "ed25519")
	keyB := filepath.Join(nodeB, "node-b.key")
	csrB := filepath.Join(nodeB, "node-b.csr")
	assertFileMode(t, keyB, 0o600)
	if pkiFieldValue(t, reqOut, "request") != csrB {
		t.Fatalf("request output:\n%s", reqOut)
	}
	signOut := mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", csrB,
		"--ip", "100.64.0.2/10", "--ip6", "fd7a:115c::2/48", "--groups", "servers,lab",
		"--subnets", "10.2.0.0/24,192.168.7.0/24", "--out", nodeB)
	crtB := filepath.Join(nodeB, "node-b.crt")
	if pkiFieldValue(t, signOut, "certificate") != crtB {
		t.Fatalf("sign output:\n%s", signOut)
	}
	if _, err := os.Stat(filepath.Join(nodeB, "node-b.key")); err != nil {
		t.Fatal(err)
	}
	credsB, err := pki.LoadCredentials(filepath.Join(caDir, "ca.crt"), crtB, keyB)
	if err != nil {
		t.Fatalf("node-b's own key does not match its certificate: %v", err)
	}
	wantB := pki.Identity{
		Name:    "node-b",
		Addr:    netip.MustParsePrefix("100.64.0.2/10"),
		Addr6:   netip.MustParsePrefix("fd7a:115c::2/48"),
		Groups:  []string{"lab", "servers"},
		Subnets: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("192.168.7.0/24")},
	}
	if !reflect.DeepEqual(credsB.Cert.Identity, wantB) {
		t.Fatalf("identity\n got %+v\nwant %+v", credsB.Cert.Identity, wantB)
	}

	// node-a: key generated at the CA.
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "node-a", "--ip", "100.64.0.1/10", "--out", out, "--duration", "720h")
	keyA, crtA := filepath.Join(out, "node-a.key"), filepath.Join(out, "node-a.crt")
	assertFileMode(t, keyA, 0o600)
	assertFileMode(t, crtA, 0o644)
	credsA, err := pki.LoadCredentials(filepath.Join(caDir, "ca.crt"), crtA, keyA)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(credsA.Cert.Cert.NotAfter); d < 719*time.Hour || d > 720*time.Hour {
		t.Fatalf("--duration 720h gave NotAfter in %v", d)
	}

	// Both verify against the CA, as peers of each other.
	v := pki.NewVerifier(credsA.CA, credsA.Cert)
	if _, err := v.Verify([][]byte{credsB.Cert.Cert.Raw}, pki.Expect{Name: "node-b", Addr: netip.MustParseAddr("100.64.0.2"), Subnets: []netip.Prefix{netip.MustParsePrefix("192.168.7.0/24")}}); err != nil {
		t.Fatalf("node-a refuses node-b: %v", err)
	}

	// cert show, text.
	show := mustPKICmd(t, "cert", "show", crtB)
	for key, want := range map[string]string{
		"name":        "node-b",
		"kind":        "node",
		"addresses":   "100.64.0.2/10, fd7a:115c::2/48",
		"groups":      "lab, servers",
		"subnets":     "10.2.0.0/24, 192.168.7.0/24",
		"fingerprint": credsB.Cert.Fingerprint,
		"issuer":      "test-mesh",
		"serial":      credsB.Cert.Cert.SerialNumber.Text(16),
		"key type":    "ed25519",
		"not before":  credsB.Cert.Cert.NotBefore.UTC().Format(time.RFC3339),
		"not after":   credsB.Cert.Cert.NotAfter.UTC().Format(time.RFC3339) + " (expires in 364d)",
	} {
		if got := pkiFieldValue(t, show, key); got != want {
			t.Errorf("cert show %s = %q, want %q", key, got, want)
		}
	}

	// cert show --json carries the same.
	var js map[string]any
	if err := json.Unmarshal([]byte(mustPKICmd(t, "cert", "show", crtB, "--json")), &js); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]any{
		"schema_version": 1.0,
		"kind":           "node",
		"name":           "node-b",
		"addresses":      []any{"100.64.0.2/10", "fd7a:115c::2/48"},
		"groups":         []any{"lab", "servers"},
		"subnets":        []any{"10.2.0.0/24", "192.168.7.0/24"},
		"fingerprint":    credsB.Cert.Fingerprint,
		"issuer":         "test-mesh",
		"serial":         credsB.Cert.Cert.SerialNumber.Text(16),
		"key_type":       "ed25519",
		"not_before":     credsB.Cert.Cert.NotBefore.UTC().Format(time.RFC3339),
		"not_after":      credsB.Cert.Cert.NotAfter.UTC().Format(time.RFC3339),
		"expires_in":     "364d",
		"expired":        false,
	} {
		if got := js[key]; !reflect.DeepEqual(got, want) {
			t.Errorf("cert show --json %s = %#v, want %#v", key, got, want)
		}
	}
	if s, ok := js["expires_in_seconds"].(float64); !ok || s < 364*86400 || s > 365*86400 {
		t.Errorf("expires_in_seconds %v", js["expires_in_seconds"])
	}
	// Empty lists are [] rather than null, and a CA shows as a CA.
	var ja map[string]any
	_ = json.Unmarshal([]byte(mustPKICmd(t, "cert", "show", crtA, "--json")), &ja)
	if !reflect.DeepEqual(ja["groups"], []any{}) || !reflect.DeepEqual(ja["subnets"], []any{}) {
		t.Errorf("empty lists: %v %v", ja["groups"], ja["subnets"])
	}
	caShow := mustPKICmd(t, "cert", "show", filepath.Join(caDir, "ca.crt"))
	if pkiFieldValue(t, caShow, "kind") != "ca" || pkiFieldValue(t, caShow, "name") != "test-mesh" {
		t.Errorf("CA show:\n%s", caShow)
	}

	// Refusing to overwrite without --force.
	keyABefore, _ := os.ReadFile(keyA)
	crtABefore, _ := os.ReadFile(crtA)
	_, err = runPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "node-a", "--ip", "100.64.0.1/10", "--out", out)
	if err == nil || err.Error() != keyA+" exists; pass --force to overwrite" {
		t.Fatalf("sign over existing key: %v", err)
	}
	if now, _ := os.ReadFile(keyA); !bytes.Equal(now, keyABefore) {
		t.Fatal("refused sign changed the key")
	}
	_, err = runPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--csr", csrB, "--ip", "100.64.0.2/10", "--out", nodeB)
	if err == nil || err.Error() != crtB+" exists; pass --force to overwrite" {
		t.Fatalf("sign over existing certificate: %v", err)
	}
	_, err = runPKICmd(t, "cert", "request", "--name", "node-b", "--dir", nodeB)
	if err == nil || err.Error() != keyB+" exists; pass --force to overwrite" {
		t.Fatalf("request over existing key: %v", err)
	}
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "node-a", "--ip", "100.64.0.1/10", "--out", out, "--force")
	assertFileMode(t, keyA, 0o600)
	if now, _ := os.ReadFile(crtA); bytes.Equal(now, crtABefore) {
		t.Fatal("--force did not replace the certificate")
	}
	oldA, err := pki.ParseNodeCertPEM(crtABefore)
	if err != nil {
		t.Fatal(err)
	}

	// Revocation in two runs: the number goes up and the first entry stays.
	crlPath := filepath.Join(caDir, "crl.pem")
	oldAFile := filepath.Join(root, "old-node-a.crt")
	if err := os.WriteFile(oldAFile, crtABefore, 0o644); err != nil {
		t.Fatal(err)
	}
	rev1 := mustPKICmd(t, "ca", "revoke", "--ca-dir", caDir, oldAFile, "--reason", "superseded")
	crl1 := readCRL(t, crlPath)
	if crl1.Number().Int64() != 1 || len(crl1.Entries()) != 1 || pkiFieldValue(t, rev1, "number") != "1" {
		t.Fatalf("first CRL: number %v, %d entries\n%s", crl1.Number(), len(crl1.Entries()), rev1)
	}
	if e := crl1.Entries()[0]; e.Comment != "superseded" || e.ReasonCode != 4 {
		t.Fatalf("reason not recorded: %+v", e)
	}
	mustPKICmd(t, "ca", "revoke", "--ca-dir", caDir, crtB)
	crl2 := readCRL(t, crlPath)
	if crl2.Number().Int64() != 2 {
		t.Fatalf("second CRL number %v", crl2.Number())
	}
	serials := []*big.Int{}
	for _, e := range crl2.Entries() {
		serials = append(serials, e.Serial)
	}
	if len(serials) != 2 || serials[0].Cmp(oldA.Cert.SerialNumber) != 0 || serials[1].Cmp(credsB.Cert.Cert.SerialNumber) != 0 {
		t.Fatalf("second CRL entries %v", serials)
	}
	assertFileMode(t, crlPath, 0o644)

	// The list works in the Verifier: old node-a and node-b are refused,
	// the re-signed node-a is not.
	if ok, err := v.UpdateCRL(crl2); !ok || err != nil {
		t.Fatalf("UpdateCRL: %v %v", ok, err)
	}
	vb := pki.NewVerifier(credsB.CA, nil)
	_, _ = vb.UpdateCRL(crl2)
	if _, err := vb.Verify([][]byte{oldA.Cert.Raw}, pki.Expect{}); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("old node-a: %v", err)
	}
	if _, err := v.Verify([][]byte{credsB.Cert.Cert.Raw}, pki.Expect{}); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("node-b: %v", err)
	}
	newA, _ := os.ReadFile(crtA)
	na, _ := pki.ParseNodeCertPEM(newA)
	if _, err := vb.Verify([][]byte{na.Cert.Raw}, pki.Expect{}); err != nil {
		t.Fatalf("re-signed node-a: %v", err)
	}
}

func readCRL(t *testing.T, path string) *pki.CRL {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := pki.ParseCRLPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// TestCertFromOtherCA: a certificate signed by one CA fails Verify against
// another, and the other CA refuses to revoke it.
func TestCertFromOtherCA(t *testing.T) {
	root := t.TempDir()
	ca1, ca2 := filepath.Join(root, "ca1"), filepath.Join(root, "ca2")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", ca1)
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", ca2) // same name on purpose
	mustPKICmd(t, "cert", "sign", "--ca-dir", ca1, "--name", "node-a", "--ip", "100.64.0.1/10", "--out", root)

	data, _ := os.ReadFile(filepath.Join(root, "node-a.crt"))
	nc, err := pki.ParseNodeCertPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.LoadCA(ca2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.NewVerifier(other.Cert, nil).Verify([][]byte{nc.Cert.Raw}, pki.Expect{}); !errors.Is(err, pki.ErrUnknownCA) {
		t.Fatalf("Verify against the other CA: %v", err)
	}
	own, _ := pki.LoadCA(ca1)
	if _, err := pki.NewVerifier(own.Cert, nil).Verify([][]byte{nc.Cert.Raw}, pki.Expect{}); err != nil {
		t.Fatalf("Verify against its own CA: %v", err)
	}
	if _, err := runPKICmd(t, "ca", "revoke", "--ca-dir", ca2, filepath.Join(root, "node-a.crt")); !errors.Is(err, pki.ErrUnknownCA) {
		t.Fatalf("revoke by the other CA: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ca2, "crl.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("failed revoke wrote a CRL")
	}
	if _, err := runPKICmd(t, "cert", "sign", "--ca-dir", ca2, "--csr", filepath.Join(root, "node-a.crt"), "--ip", "100.64.0.1/10", "--out", root, "--force"); err == nil {
		t.Fatal("a certificate accepted as a CSR")
	}
}

func TestCertUsageErrors(t *testing.T) {
	root := t.TempDir()
	caDir := filepath.Join(root, "ca")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir)
	mustPKICmd(t, "cert", "request", "--name", "node-b", "--dir", root)
	csr := filepath.Join(root, "node-b.csr")
	sign := func(extra ...string) []string {
		return append([]string{"cert", "sign", "--ca-dir", caDir, "--out", filepath.Join(root, "out")}, extra...)
	}
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{sign("--name", "node-a"), "--ip is required", 2},
		{sign("--ip", "100.64.0.1/10"), "give --csr FILE", 2},
		{sign("--name", "node-a", "--ip", "100.64.0.1"), `--ip "100.64.0.1"`, 2},
		{sign("--name", "node-a", "--ip", "fd00::1/64"), `--ip "fd00::1/64"`, 2},
		{sign("--name", "node-a", "--ip", "100.64.0.1/10", "--ip6", "100.64.0.1/10"), "--ip6", 2},
		{sign("--name", "node-a", "--ip", "100.64.0.1/10", "--subnets", "10.1.0.0"), "--subnets", 2},
		{sign("--name", "node-a", "--ip", "100.64.0.1/10", "--subnets", "10.1.0.1/24"), "did you mean 10.1.0.0/24", 0},
		{sign("--name", "Node A", "--ip", "100.64.0.1/10"), "invalid identity", 0},
		{sign("--name", "node-a", "--ip", "100.64.0.1/10", "--groups", "Admins"), `group "Admins"`, 0},
		{sign("--name", "node-a", "--ip", "100.64.0.1/10", "--duration", "0s"), "--duration", 2},
		{sign("--name", "node-a", "--ip", "100.64.0.1/10", "--key-type", "dsa"), "--key-type", 2},
		{sign("--csr", csr, "--name", "node-c", "--ip", "100.64.0.3/10"), `the request is for "node-b", not "node-c"`, 0},
		{sign("--csr", filepath.Join(root, "missing.csr"), "--ip", "100.64.0.3/10"), "no such file", 0},
		{[]string{"cert", "sign", "--ca-dir", root, "--name", "node-a", "--ip", "100.64.0.1/10"}, "load CA", 0},
		{[]string{"cert", "request", "--name", "Bad"}, `--name "Bad"`, 2},
		{[]string{"cert", "show"}, "accepts 1 arg", 0},
		{[]string{"cert", "show", csr}, "no CERTIFICATE block", 0},
		{[]string{"cert", "show", filepath.Join(root, "nothing")}, "no such file", 0},
	} {
		out, err := runPKICmd(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q\n%s", tc.args[1:], err, tc.want, out)
			continue
		}
		var ee *exitError
		if got := errors.As(err, &ee); got != (tc.code != 0) || (got && ee.code != tc.code) {
			t.Errorf("%v: exit code mismatch: %#v", tc.args[1:], err)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "out")); len(entries) != 0 {
		t.Errorf("failed signs left files: %v", entries)
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		8760*time.Hour - time.Second:  "364d",
		48 * time.Hour:                "2d",
		23*time.Hour + 59*time.Minute: "23h",
		90 * time.Second:              "1m",
		5 * time.Second:               "5s",
		-72 * time.Hour:               "-3d",
	} {
		if got := pkiHumanDuration(d); got != want {
			t.Errorf("pkiHumanDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// Subnets that overlap the mesh prefix are refused (the node could claim
// other nodes' addresses as its sources); a default route needs --exit.
func TestCertSignSubnetChecks(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir)
	out := t.TempDir()
	for _, tc := range []struct {
		subnets string
		extra   []string
		want    string // "" means signed
	}{
		{"10.1.0.0/24", nil, ""},
		{"100.64.3.0/24", nil, "overlaps the mesh prefix 100.64.0.0/10"},
		{"100.0.0.0/8", nil, "overlaps the mesh prefix 100.64.0.0/10"},
		{"0.0.0.0/0", nil, "give --exit"},
		{"0.0.0.0/0", []string{"--exit"}, ""},
	} {
		args := append([]string{"cert", "sign", "--ca-dir", caDir, "--name", "node-a", "--ip", "100.64.0.1/10",
			"--out", out, "--force", "--subnets", tc.subnets}, tc.extra...)
		_, err := runPKICmd(t, args...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("--subnets %s %v: %v, want signed", tc.subnets, tc.extra, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("--subnets %s %v: %v, want an error saying %q", tc.subnets, tc.extra, err, tc.want)
		}
	}
}

// TestCertSignCoordinator: --coordinator grants the role, cert show prints it
// (text and JSON), and a plain node certificate shows role "node".
func TestCertSignCoordinator(t *testing.T) {
	root := t.TempDir()
	caDir := filepath.Join(root, "ca")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir)
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "coord", "--ip", "100.64.0.1/10", "--out", root, "--coordinator")
	mustPKICmd(t, "cert", "sign", "--ca-dir", caDir, "--name", "node-a", "--ip", "100.64.0.2/10", "--out", root)
	for _, tc := range []struct{ name, role string }{{"coord", "coordinator"}, {"node-a", "node"}} {
		crt := filepath.Join(root, tc.name+".crt")
		creds, err := pki.LoadCredentials(filepath.Join(caDir, "ca.crt"), crt, filepath.Join(root, tc.name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = pki.NewVerifier(creds.CA, nil).Verify([][]byte{creds.Cert.Cert.Raw}, pki.Expect{Coordinator: true})
		if (tc.role == "coordinator") != (err == nil) {
			t.Errorf("%s: Verify as coordinator = %v", tc.name, err)
		}
		if got := pkiFieldValue(t, mustPKICmd(t, "cert", "show", crt), "role"); got != tc.role {
			t.Errorf("%s: cert show role = %q, want %q", tc.name, got, tc.role)
		}
		var js map[string]any
		if err := json.Unmarshal([]byte(mustPKICmd(t, "cert", "show", crt, "--json")), &js); err != nil {
			t.Fatal(err)
		}
		if js["role"] != tc.role {
			t.Errorf("%s: cert show --json role = %v, want %q", tc.name, js["role"], tc.role)
		}
	}
}
