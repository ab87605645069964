package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/pki"
)

// runPKICmdIO runs meshctl in-process with stdin and separate stdout and
// stderr.
func runPKICmdIO(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetIn(bytes.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), errOut.String(), err
}

// TestStdioPaths: "-" is stdin or stdout on every path flag where that makes
// sense, and nothing named "-" is ever created.
func TestStdioPaths(t *testing.T) {
	root := t.TempDir()
	t.Chdir(root)
	caDir := filepath.Join(root, "ca")
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", caDir)
	mustPKICmd(t, "cert", "request", "--name", "node-b", "--dir", root)
	csr, err := os.ReadFile(filepath.Join(root, "node-b.csr"))
	if err != nil {
		t.Fatal(err)
	}

	// A filter: request on stdin, certificate on stdout, summary on stderr.
	crt, summary, err := runPKICmdIO(t, csr, "cert", "sign", "--ca-dir", caDir, "--csr", "-", "--ip", "100.64.0.2/10", "--out", "-")
	if err != nil {
		t.Fatalf("sign --csr - --out -: %v\n%s", err, summary)
	}
	nc, err := pki.ParseNodeCertPEM([]byte(crt))
	if err != nil {
		t.Fatalf("stdout is not the certificate: %v\n%q", err, crt)
	}
	if nc.Identity.Name != "node-b" || pkiFieldValue(t, summary, "name") != "node-b" {
		t.Fatalf("signed %q; summary:\n%s", nc.Identity.Name, summary)
	}

	// cert show - and ca revoke - read stdin.
	show, _, err := runPKICmdIO(t, []byte(crt), "cert", "show", "-")
	if err != nil || pkiFieldValue(t, show, "fingerprint") != nc.Fingerprint {
		t.Fatalf("cert show -: %v\n%s", err, show)
	}
	rev, _, err := runPKICmdIO(t, []byte(crt), "ca", "revoke", "--ca-dir", caDir, "-")
	if err != nil || !strings.HasPrefix(pkiFieldValue(t, rev, "revoked"), "node-b ") {
		t.Fatalf("ca revoke -: %v\n%s", err, rev)
	}

	// Where "-" makes no sense it is a usage error.
	for _, args := range [][]string{
		{"cert", "sign", "--ca-dir", caDir, "--name", "node-c", "--ip", "100.64.0.3/10", "--out", "-"},
		{"cert", "sign", "--ca-dir", "-", "--csr", "node-b.csr", "--ip", "100.64.0.2/10"},
		{"cert", "request", "--name", "node-c", "--dir", "-"},
		{"ca", "init", "--name", "m", "--dir", "-"},
		{"ca", "revoke", "--ca-dir", caDir, "-", "-"},
	} {
		_, _, err := runPKICmdIO(t, csr, args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "-")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file or directory named - exists: %v", err)
	}
}
