package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// secretsBase is a minimal file with every PKI file present; test cases
// append to it (line 7 is their first line).
const secretsBase = `[pki]
ca = "ca.crt"
cert = "node.crt"
key = "node.key"
[join]
coordinators = ["c.example.net:7443"]
`

// writeMode writes data to dir/name with exactly mode (WriteFile's mode is
// narrowed by the umask).
func writeMode(t *testing.T, dir, name, data string, mode fs.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadWarnsAboutExposedSecrets(t *testing.T) {
	inline := `[coordinator]
gossip_key = "` + testGossipKey + `"
[coordinator.turn]
auth_secret = "turn-secret"
[[ice.turn_servers]]
url = "turn:t1.example.net"
secret = "shared"
[[ice.turn_servers]]
url = "turn:t2.example.net"
username = "u"
credential = "c"
`
	inlineWarnings := []wantErr{
		{8, 1, "coordinator.gossip_key", ErrSecretExposed, "move it to coordinator.gossip_key_file"},
		{10, 1, "coordinator.turn.auth_secret", ErrSecretExposed, "move it to coordinator.turn.auth_secret_file"},
		{13, 1, "ice.turn_servers[0].secret", ErrSecretExposed, "move it to ice.turn_servers[0].secret_file"},
		{17, 1, "ice.turn_servers[1].credential", ErrSecretExposed, "make this file readable by its owner only"},
	}
	fromFiles := `[[ice.turn_servers]]
url = "turn:t1.example.net"
secret_file = "turn.secret"
`
	tests := []struct {
		name      string
		src       string
		mode      fs.FileMode            // of the configuration file
		files     map[string]fs.FileMode // secret files next to it (node.key is 0600 unless listed)
		skipFiles bool
		want      []wantErr
	}{
		{name: "inline secrets, owner only", src: inline, mode: 0o600},
		{name: "inline secrets, group-readable", src: inline, mode: 0o640, want: inlineWarnings},
		{name: "inline secrets, world-readable", src: inline, mode: 0o604, want: inlineWarnings},
		{name: "inline secrets, group-writable only", src: inline, mode: 0o620},
		{name: "inline secrets without file checks", src: inline, mode: 0o644, skipFiles: true, want: inlineWarnings},
		{name: "no secrets, world-readable", src: "", mode: 0o644},
		{name: "secret files, owner only", src: fromFiles, mode: 0o644, files: map[string]fs.FileMode{"turn.secret": 0o600}},
		{name: "secret file and key readable by others", src: fromFiles, mode: 0o644,
			files: map[string]fs.FileMode{"turn.secret": 0o640, "node.key": 0o604},
			want: []wantErr{
				{4, 1, "pki.key", ErrSecretExposed, "node.key is readable by other users (mode 0604)"},
				{9, 1, "ice.turn_servers[0].secret_file", ErrSecretExposed, "turn.secret is readable by other users (mode 0640); make it readable by its owner only (chmod 600)"},
			}},
		{name: "exposed secret file without file checks", src: fromFiles, mode: 0o644, skipFiles: true,
			files: map[string]fs.FileMode{"turn.secret": 0o644}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeMode(t, dir, "ca.crt", "x", 0o644)
			writeMode(t, dir, "node.crt", "x", 0o644)
			writeMode(t, dir, "node.key", "x", 0o600)
			for name, mode := range tt.files {
				writeMode(t, dir, name, "secret\n", mode)
			}
			path := writeMode(t, dir, "meshd.toml", secretsBase+tt.src, tt.mode)
			cfg, err := Load(path, WithFileChecks(!tt.skipFiles))
			if err != nil {
				t.Fatalf("Load: %v (warnings must not be errors)", err)
			}
			if len(tt.want) == 0 {
				if len(cfg.Warnings) != 0 {
					t.Fatalf("unexpected warnings: %v", (&Errors{List: cfg.Warnings}).Error())
				}
				return
			}
			wantErrors(t, &Errors{List: cfg.Warnings}, tt.want)
			if t.Failed() {
				return
			}
			w := cfg.Warnings[0]
			if !errors.Is(w, ErrSecretExposed) || !strings.HasPrefix(w.Error(), fmt.Sprintf("%s:%d:1: %s: ", path, tt.want[0].line, tt.want[0].key)) {
				t.Errorf("warning prints as %q", w)
			}
			// The same text through Parse has no file to look at.
			data, _ := os.ReadFile(path)
			pc, err := Parse(path, data)
			if err != nil || pc.Warnings != nil {
				t.Errorf("Parse: warnings %v, error %v; want neither", pc.Warnings, err)
			}
			// Warnings are not configuration: they do not count as a change.
			if ch := Changes(cfg, pc); len(ch) > 0 {
				t.Errorf("Changes sees %q", ch)
			}
		})
	}
}

func TestTURNServerSecretFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"ca.crt", "node.crt", "node.key"} {
		writeMode(t, dir, n, "x", 0o600)
	}
	path := writeMode(t, dir, "meshd.toml", secretsBase+`[[ice.turn_servers]]
url = "turn:t1.example.net"
secret_file = "turn.secret"
[[ice.turn_servers]]
url = "turn:t2.example.net"
  secret_file = "/nonexistent/turn.secret"
`, 0o600)

	// A missing file is reported at its key, like every file the
	// configuration names.
	_, err := Load(path)
	wantErrors(t, err, []wantErr{
		{9, 1, "ice.turn_servers[0].secret_file", ErrFile, "no such file"},
		{12, 3, "ice.turn_servers[1].secret_file", ErrFile, "no such file"},
	})

	cfg, err := Load(path, WithFileChecks(false))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.ICE.TURNServers[0].SecretFile, filepath.Join(dir, "turn.secret"); got != want {
		t.Errorf("secret_file = %q, want %q (resolved against the file's directory)", got, want)
	}
	if got := cfg.ICE.TURNServers[1].SecretFile; got != "/nonexistent/turn.secret" {
		t.Errorf("absolute secret_file changed to %q", got)
	}
}

func TestTURNServerReadSecret(t *testing.T) {
	dir := t.TempDir()
	file := func(name, data string) string { return writeMode(t, dir, name, data, 0o600) }
	tests := []struct {
		name    string
		s       TURNServer
		want    string
		wantErr error
	}{
		{"inline", TURNServer{Secret: "inline"}, "inline", nil},
		{"static credentials", TURNServer{Username: "u", Credential: "c"}, "", nil},
		{"file with a trailing newline", TURNServer{SecretFile: file("nl", "from-file\n")}, "from-file", nil},
		{"file with surrounding whitespace", TURNServer{SecretFile: file("ws", "  a b \r\n\n")}, "a b", nil},
		{"empty file", TURNServer{SecretFile: file("empty", " \n")}, "", ErrInvalid},
		{"missing file", TURNServer{SecretFile: filepath.Join(dir, "missing")}, "", ErrFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.s.ReadSecret()
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("ReadSecret() = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
