package main

import (
	"errors"
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
