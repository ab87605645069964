package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
)

// runConfigCmd runs meshctl in-process and returns its standard output.
func runConfigCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// writeConfigFixture writes files (name → contents) into a new directory and
// returns it.
func writeConfigFixture(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const goodConfig = `[pki]
ca = "ca.crt"
cert = "node.crt"
key = "node.key"

[join]
coordinators = ["coord.example.net:7443"]
`

func TestConfigCheckOK(t *testing.T) {
	// Placeholder credentials pass --skip-files, which checks the file alone.
	dir := writeConfigFixture(t, map[string]string{"meshd.toml": goodConfig, "ca.crt": "", "node.crt": "", "node.key": ""})
	path := filepath.Join(dir, "meshd.toml")
	out, err := runConfigCmd(t, "config", "check", "--skip-files", path)
	if err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	if want := path + ": ok\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
	// Without it the credentials themselves are checked, as meshd does.
	out, err = runConfigCmd(t, "config", "check", path)
	if err == nil || !strings.HasPrefix(out, path+": certificate: ") {
		t.Errorf("placeholder credentials: %v\n%s", err, out)
	}
}

func TestConfigCheckProblems(t *testing.T) {
	bad := goodConfig + `
[log]
levl = "debug"

[[firewall.inbound]]
  peer = "any"
  port = "80-"
`
	dir := writeConfigFixture(t, map[string]string{"meshd.toml": bad, "ca.crt": "", "node.crt": ""})
	path := filepath.Join(dir, "meshd.toml")
	out, err := runConfigCmd(t, "config", "check", path)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("error %v, want exit code 1", err)
	}
	if want := path + ": 3 problems"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	want := []string{
		path + ":4:1: pki.key: cannot read " + filepath.Join(dir, "node.key") + ": no such file or directory",
		path + `:10:1: log.levl: unknown key; did you mean log.level?`,
		path + `:14:3: firewall.inbound[0].port: "80-" is not a port or range (write "any", "80" or "8000-8100")`,
	}
	if got := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("output:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}

	// --skip-files leaves out the missing key file.
	out, err = runConfigCmd(t, "config", "check", "--skip-files", path)
	if !errors.As(err, &ee) || ee.code != 1 || strings.Contains(out, "pki.key") || strings.Count(out, "\n") != 2 {
		t.Errorf("--skip-files: %v\n%s", err, out)
	}
}

func TestConfigCheckUnreadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.toml")
	out, err := runConfigCmd(t, "config", "check", path)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("error %v, want exit code 1", err)
	}
	if want := path + ": cannot read configuration: no such file or directory\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestConfigCheckSyntaxError(t *testing.T) {
	dir := writeConfigFixture(t, map[string]string{"meshd.toml": "[pki]\nca = \n"})
	path := filepath.Join(dir, "meshd.toml")
	out, err := runConfigCmd(t, "config", "check", "--skip-files", path)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("error %v, want exit code 1", err)
	}
	if want := path + ":2:6: TOML syntax: expected value but found '\\n' instead\n"; out != want {
		t.Errorf("output %q, want %q", out, want)
	}
}

func TestConfigCheckUsage(t *testing.T) {
	if _, err := runConfigCmd(t, "config", "check", "a.toml", "b.toml"); err == nil {
		t.Error("two files accepted")
	}
}

func TestConfigGossipKey(t *testing.T) {
	a, err := runConfigCmd(t, "config", "gossip-key")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := runConfigCmd(t, "config", "gossip-key")
	key, err := config.ParseGossipKey(a)
	if err != nil || len(key) != 32 {
		t.Fatalf("gossip-key printed %q: %d bytes, %v", a, len(key), err)
	}
	if a == b {
		t.Error("two gossip keys are equal")
	}
	// The key is accepted by the configuration it is meant for.
	dir := writeConfigFixture(t, map[string]string{
		"meshd.toml": goodConfig + "[coordinator]\nenabled = true\nsession_listen = \"127.0.0.1:7443\"\ngossip_key = \"" + strings.TrimSpace(a) + "\"\n",
	})
	if out, err := runConfigCmd(t, "config", "check", "--skip-files", filepath.Join(dir, "meshd.toml")); err != nil {
		t.Errorf("config with a generated key: %v\n%s", err, out)
	}
}

// A secret inline in a file others can read is a warning: config check
// says so, with the key and the way out, and still passes.
func TestConfigCheckWarnsAboutReadableSecret(t *testing.T) {
	text := goodConfig + "\n[coordinator]\nenabled = true\nsession_listen = \"192.0.2.1:7443\"\ngossip_key = \"" + strings.Repeat("A", 43) + "=\"\n"
	dir := writeConfigFixture(t, map[string]string{"meshd.toml": text, "ca.crt": "", "node.crt": "", "node.key": ""})
	path := filepath.Join(dir, "meshd.toml")
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	out, err := runConfigCmd(t, "config", "check", "--skip-files", path)
	if err != nil {
		t.Fatalf("config check: %v\n%s", err, out)
	}
	if !strings.Contains(out, "warning: "+path+":") || !strings.Contains(out, "coordinator.gossip_key") || !strings.Contains(out, "gossip_key_file") || !strings.HasSuffix(out, path+": ok\n") {
		t.Errorf("output:\n%s", out)
	}
}
