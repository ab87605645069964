package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/meshd/meshd/pki"
)

// The test binary doubles as meshd: with MESHD_TEST_MAIN=1 it runs main's
// logic on its arguments instead of the tests, so the signal, sd_notify and
// exit-code tests run the real program without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("MESHD_TEST_MAIN") == "1" {
		if os.Getenv("MESHD_TEST_LO_UP") == "1" {
			// A fresh network namespace starts with loopback down.
			if lo, err := netlink.LinkByName("lo"); err == nil {
				_ = netlink.LinkSetUp(lo)
			}
		}
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// fixture is a CA and one node's files.
type fixture struct {
	dir    string
	caPath string
	cert   string
	key    string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("cmd-test", 24*time.Hour, pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(filepath.Join(dir, "ca"), false); err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ca.Sign(key.Public(), pki.Identity{Name: "node1", Addr: netip.MustParsePrefix("100.64.0.1/10"), Coordinator: true}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, caPath: filepath.Join(dir, "ca", pki.CACertFile), cert: filepath.Join(dir, "node.crt"), key: filepath.Join(dir, "node.key")}
	if err := pki.WriteFile(f.cert, nc.PEM(), 0o644, true); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(f.key, key, true); err != nil {
		t.Fatal(err)
	}
	return f
}

// config writes a configuration for a node that is its own coordinator (so
// it needs nothing else to become ready) and returns its path.
func (f *fixture) config(t *testing.T, mode string, extra string) string {
	t.Helper()
	var k [16]byte
	_, _ = rand.Read(k[:])
	text := fmt.Sprintf(`[node]
state_dir = %q
[pki]
ca = %q
cert = %q
key = %q
[tun]
mode = %q
[coordinator]
enabled = true
session_listen = "127.0.0.1:0"
gossip_key = %q
[ice]
port = 0
[control]
socket = %q
group = ""
%s`, filepath.Join(f.dir, "state"), f.caPath, f.cert, f.key, mode, base64.StdEncoding.EncodeToString(k[:]),
		filepath.Join(f.dir, "meshd.sock"), extra)
	path := filepath.Join(f.dir, "meshd.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runMain(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestVersionAndUsage(t *testing.T) {
	code, out, _ := runMain("--version")
	if code != exitOK || out != "meshd "+version+"\n" {
		t.Errorf("--version: %d %q", code, out)
	}
	if code, _, errOut := runMain("--no-such-flag"); code != exitUsage || !strings.Contains(errOut, "no-such-flag") {
		t.Errorf("unknown flag: %d %q", code, errOut)
	}
	if code, _, errOut := runMain("stray"); code != exitUsage || !strings.HasPrefix(errOut, "meshd: unexpected argument") {
		t.Errorf("stray argument: %d %q", code, errOut)
	}
	if code, _, _ := runMain("--help"); code != exitOK {
		t.Errorf("--help: %d", code)
	}
}

func TestExitCodes(t *testing.T) {
	f := newFixture(t)
	good := f.config(t, "userspace", "")
	write := func(name, text string) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badSyntax := write("syntax.toml", "[node]\nname = \"x\"\n= oops\n")
	unknownKey := write("unknown.toml", "[pki]\nca = \"a\"\ncertt = \"b\"\n")
	goodText, _ := os.ReadFile(good)
	badCert := write("badcert.toml", strings.Replace(string(goodText), f.cert, write("garbage.crt", "not a certificate"), 1))
	wrongName := write("name.toml", strings.Replace(string(goodText), "[node]\n", "[node]\nname = \"node2\"\n", 1))

	busy, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.LocalAddr().(*net.UDPAddr).Port
	portTaken := write("port.toml", strings.Replace(string(goodText), "port = 0", fmt.Sprintf("port = %d", busyPort), 1))

	tests := []struct {
		name   string
		args   []string
		code   int
		prefix string
	}{
		{"check ok", []string{"--check", "--config", good}, exitOK, ""},
		{"missing file", []string{"--config", filepath.Join(t.TempDir(), "none.toml")}, exitConfig, "meshd: config: "},
		{"syntax error", []string{"--config", badSyntax}, exitConfig, "meshd: config: " + badSyntax + ":3:"},
		{"unknown key", []string{"--check", "--config", unknownKey}, exitConfig, "meshd: config: " + unknownKey + ":3:1: pki.certt"},
		{"bad certificate", []string{"--config", badCert}, exitCredentials, "meshd: certificate: "},
		{"bad certificate (check)", []string{"--check", "--config", badCert}, exitCredentials, "meshd: certificate: "},
		{"name mismatch", []string{"--config", wrongName}, exitConfig, "meshd: config: node.name"},
		{"ICE port taken", []string{"--config", portTaken}, exitNetwork, "meshd: ICE port: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runMain(tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.code, errOut)
			}
			if tc.prefix != "" && !strings.HasPrefix(lastLine(errOut), tc.prefix) && !strings.Contains(errOut, "\n"+tc.prefix) && !strings.HasPrefix(errOut, tc.prefix) {
				t.Errorf("stderr %q does not have a line starting %q", errOut, tc.prefix)
			}
		})
	}
}

// lastLine is the last non-empty line of s (the error after any log lines).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
