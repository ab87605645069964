package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/meshd/meshd/pki"
)

// runPKICmd runs meshctl in-process with args and returns what it printed.
func runPKICmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// mustPKICmd is runPKICmd that fails the test on error.
func mustPKICmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runPKICmd(t, args...)
	if err != nil {
		t.Fatalf("meshctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// pkiFieldValue returns the value of the "key:" line in out.
func pkiFieldValue(t *testing.T, out, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `: +(.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in:\n%s", key, out)
	}
	return m[1]
}

func assertFileMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Fatalf("%s: mode %o, want %o", path, got, want)
	}
}

func TestCAInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	out := mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", dir, "--key-type", "ed25519", "--duration", "8760h")
	assertFileMode(t, filepath.Join(dir, "ca.key"), 0o600)
	assertFileMode(t, filepath.Join(dir, "ca.crt"), 0o644)
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Cert.Subject.CommonName != "test-mesh" || !ca.Cert.IsCA {
		t.Fatalf("CA %v", ca)
	}
	if kt, _ := pki.KeyTypeOf(ca.Cert.PublicKey); kt != pki.KeyEd25519 {
		t.Fatalf("key type %v", kt)
	}
	if got := pkiFieldValue(t, out, "fingerprint"); got != pki.Fingerprint(ca.Cert.Raw) {
		t.Fatalf("printed fingerprint %s", got)
	}
	if got := pkiFieldValue(t, out, "not after"); !strings.Contains(got, "(expires in 364d)") {
		t.Fatalf("not after: %s", got)
	}
	// Aligned: every value starts in the same column.
	col := -1
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		i := strings.Index(line, ": ")
		c := i + 2 + len(line[i+2:]) - len(strings.TrimLeft(line[i+2:], " "))
		if col >= 0 && c != col {
			t.Fatalf("misaligned output:\n%s", out)
		}
		col = c
	}

	keyBefore, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	_, err = runPKICmd(t, "ca", "init", "--name", "other", "--dir", dir)
	if err == nil || err.Error() != dir+"/ca.key exists; pass --force to overwrite" {
		t.Fatalf("second init: %v", err)
	}
	if keyAfter, _ := os.ReadFile(filepath.Join(dir, "ca.key")); !bytes.Equal(keyBefore, keyAfter) {
		t.Fatal("refused init changed ca.key")
	}
	mustPKICmd(t, "ca", "init", "--name", "other", "--dir", dir, "--force")
	ca2, err := pki.LoadCA(dir)
	if err != nil || ca2.Cert.Subject.CommonName != "other" {
		t.Fatalf("forced init: %v %v", ca2, err)
	}
	assertFileMode(t, filepath.Join(dir, "ca.key"), 0o600)
}

// TestCAInitDomain: ca init stores the mesh domain in the CA certificate
// (default mesh.internal) and prints it.
func TestCAInitDomain(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, pki.DefaultMeshDomain},
		{[]string{"--domain", "home.internal"}, "home.internal"},
	} {
		dir := filepath.Join(t.TempDir(), "ca")
		out := mustPKICmd(t, append([]string{"ca", "init", "--name", "m", "--dir", dir}, tc.args...)...)
		ca, err := pki.LoadCA(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := pki.MeshDomain(ca.Cert); got != tc.want {
			t.Errorf("%v: domain in the CA %q, want %q", tc.args, got, tc.want)
		}
		if got := pkiFieldValue(t, out, "domain"); got != tc.want {
			t.Errorf("%v: printed domain %q, want %q", tc.args, got, tc.want)
		}
	}
	if _, err := runPKICmd(t, "ca", "init", "--name", "m", "--dir", t.TempDir(), "--domain", "Home"); err == nil || !strings.Contains(err.Error(), `--domain "Home"`) {
		t.Errorf("bad domain: %v", err)
	}
}

func TestCAInitDefaultsToCurrentDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	mustPKICmd(t, "ca", "init", "--name", "test-mesh")
	assertFileMode(t, filepath.Join(dir, "ca.key"), 0o600)
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if kt, _ := pki.KeyTypeOf(ca.Cert.PublicKey); kt != pki.KeyECDSAP256 {
		t.Fatalf("default key type %v", kt)
	}
	_, err = runPKICmd(t, "ca", "init", "--name", "test-mesh")
	if err == nil || err.Error() != "./ca.key exists; pass --force to overwrite" {
		t.Fatalf("second init: %v", err)
	}
}

func TestCAUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string // substring of the error
		code int    // exitError code, 0 = plain error
	}{
		{[]string{"ca", "init", "--dir", dir}, `required flag(s) "name" not set`, 0},
		{[]string{"ca", "init", "--name", "m", "--dir", dir, "--key-type", "rsa"}, `--key-type "rsa"`, 2},
		{[]string{"ca", "init", "--name", "m", "--dir", dir, "--duration", "-1h"}, "--duration", 2},
		{[]string{"ca", "init", "--name", "bad\tname", "--dir", dir}, "invalid identity", 0},
		{[]string{"ca", "revoke", "--ca-dir", dir}, "name what to revoke", 2},
		{[]string{"ca", "revoke", "--ca-dir", dir, "--serial", "xyz"}, `--serial "xyz"`, 2},
		{[]string{"ca", "revoke", "--ca-dir", dir, "--name", "Bad"}, `--name "Bad"`, 2},
		{[]string{"ca", "revoke", "--ca-dir", filepath.Join(dir, "none"), "x.crt"}, "no such file", 0},
	} {
		_, err := runPKICmd(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q", tc.args, err, tc.want)
			continue
		}
		var ee *exitError
		if got := errors.As(err, &ee); got != (tc.code != 0) || (got && ee.code != tc.code) {
			t.Errorf("%v: exit code mismatch: %#v", tc.args, err)
		}
	}
}
