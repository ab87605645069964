package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/control"
)

func TestReloadCommand(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name string
		res  control.ReloadResult
		err  error
		want string
		code int
	}{
		{"nothing changed", control.ReloadResult{}, nil, "reloaded: nothing changed\n", 0},
		{"applied", control.ReloadResult{Changed: []string{"firewall", "peers"}}, nil,
			"reloaded: applied firewall, peers\n", 0},
		{"needs restart", control.ReloadResult{Changed: []string{"firewall"}, NeedsRestart: []string{"listen", "tun"}}, nil,
			"reloaded: applied firewall\nneeds a restart to take effect: listen, tun (systemctl restart meshd)\n", 0},
		{"refused", control.ReloadResult{}, errors.New(`/etc/meshd/meshd.toml:12:3: unknown key "listn"`), "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.b.SetReload(tt.res, tt.err)
			out, err := h.run(t, "reload")
			if exitCode(err) != tt.code || out != tt.want {
				t.Errorf("reload: %q, %v (exit %d); want %q, exit %d", out, err, exitCode(err), tt.want, tt.code)
			}
			if tt.err != nil {
				want := `reload failed: /etc/meshd/meshd.toml:12:3: unknown key "listn" (the running configuration is unchanged)`
				if err == nil || err.Error() != want {
					t.Errorf("reload error %v, want %q", err, want)
				}
			}
			out, err = h.run(t, "reload", "--json")
			var res control.ReloadResult
			if derr := control.Decode([]byte(out), &res); derr != nil || exitCode(err) != tt.code || (tt.err != nil) != (res.Error != "") {
				t.Errorf("reload --json: %v / %v, %+v", derr, err, res)
			}
		})
	}
}

// --config finds the control socket in meshd's configuration (the unit's
// ExecReload relies on it); an explicit --socket wins; a bad file is a
// usage error that names the problem.
func TestConfigFlagFindsSocket(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "meshd.toml")
	text := fmt.Sprintf("[pki]\nca = \"ca.crt\"\ncert = \"n.crt\"\nkey = \"n.key\"\n\n[join]\ncoordinators = [\"192.0.2.1:7443\"]\n\n[control]\nsocket = %q\n", h.sock)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runArgs(context.Background(), &out, "--config", cfg, "reload"); err != nil {
		t.Fatalf("meshctl --config %s reload: %v\n%s", cfg, err, out.String())
	}
	out.Reset()
	err := runArgs(context.Background(), &out, "reload", "--config", cfg, "--socket", filepath.Join(dir, "nothing.sock"))
	if err == nil {
		t.Error("--socket did not win over --config")
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[control]\nsockett = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = runArgs(context.Background(), &out, "reload", "--config", bad)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "bad.toml:2") {
		t.Errorf("bad --config: %v, want exit 2 naming bad.toml:2", err)
	}
}
