package preflight

import (
	"errors"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/pki"
)

// fixture writes a CA and a node's credentials and returns the [pki] table.
func fixture(t *testing.T, validity time.Duration) string {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("pre-mesh", 48*time.Hour, pki.KeyECDSAP256)
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
	nc, err := ca.Sign(key.Public(), pki.Identity{Name: "n1", Addr: netip.MustParsePrefix("100.64.0.1/10")}, validity)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(filepath.Join(dir, "n1.crt"), nc.PEM(), 0o644, true); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(filepath.Join(dir, "n1.key"), key, true); err != nil {
		t.Fatal(err)
	}
	return dir
}

func load(t *testing.T, dir, extra string) *config.Config {
	t.Helper()
	text := "[pki]\nca = \"ca/" + pki.CACertFile + "\"\ncert = \"n1.crt\"\nkey = \"n1.key\"\n" +
		"[join]\ncoordinators = [\"c.example.net:7443\"]\n" + extra
	path := filepath.Join(dir, "meshd.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const inboundRule = "[[firewall.inbound]]\npeer = \"any\"\n"

func noGroup(name string) error { return user.UnknownGroupError(name) }
func haveGroup(string) error    { return nil }
func hostAddrs() ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.5")}, nil
}

// TestWarnings: what works but is probably not meant is a warning, never an
// error; the control group falls back to root only when the file did not
// name it.
func TestWarnings(t *testing.T) {
	dir := fixture(t, 24*time.Hour)
	coord := "[coordinator]\nenabled = true\ngossip_key = \"" + strings.Repeat("A", 43) + "=\"\n[coordinator.turn]\nrelay_address = \"203.0.113.10\"\n"
	tests := []struct {
		name   string
		extra  string
		lookup func(string) error
		now    time.Time
		warns  []string // substrings, one per warning, in order
		group  string
	}{
		{"clean", inboundRule, haveGroup, time.Time{}, nil, "meshd"},
		{"no inbound rule", "", haveGroup, time.Time{}, []string{"firewall.inbound: no rules"}, "meshd"},
		{"default group missing", inboundRule, noGroup, time.Time{}, []string{`control.group: group "meshd" does not exist`}, ""},
		{"root only", inboundRule + "[control]\ngroup = \"\"\n", noGroup, time.Time{}, nil, ""},
		{"expired certificate", inboundRule, haveGroup, time.Now().Add(48 * time.Hour), []string{"pki.cert:", "expired"}, "meshd"},
		{"session_listen not on this host", inboundRule + strings.Replace(coord, "enabled = true\n", "enabled = true\nsession_listen = \"203.0.113.10:7443\"\n", 1), haveGroup, time.Time{},
			[]string{"coordinator.session_listen: 203.0.113.10 is not an address of this host"}, "meshd"},
		{"session_listen on all addresses", inboundRule + strings.Replace(coord, "enabled = true\n", "enabled = true\nsession_listen = \"0.0.0.0:7443\"\n", 1), haveGroup, time.Time{}, nil, "meshd"},
		{"session_listen on this host", inboundRule + strings.Replace(coord, "enabled = true\n", "enabled = true\nsession_listen = \"10.0.0.5:7443\"\n", 1), haveGroup, time.Time{}, nil, "meshd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := load(t, dir, tc.extra)
			opts := Options{LookupGroup: tc.lookup, HostAddrs: hostAddrs}
			if !tc.now.IsZero() {
				opts.Now = func() time.Time { return tc.now }
			}
			r, err := Run(cfg, opts)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			all := strings.Join(r.Warnings, "\n")
			if len(tc.warns) == 0 && len(r.Warnings) != 0 {
				t.Errorf("warnings %q, want none", r.Warnings)
			}
			for _, w := range tc.warns {
				if !strings.Contains(all, w) {
					t.Errorf("warnings %q do not say %q", r.Warnings, w)
				}
			}
			if r.ControlGroup != tc.group {
				t.Errorf("ControlGroup %q, want %q", r.ControlGroup, tc.group)
			}
		})
	}
}

// TestExplicitGroupMissing: a group the file names must exist.
func TestExplicitGroupMissing(t *testing.T) {
	dir := fixture(t, 24*time.Hour)
	cfg := load(t, dir, inboundRule+"[control]\ngroup = \"meshd\"\n")
	_, err := Run(cfg, Options{LookupGroup: noGroup})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), `control.group: group "meshd" does not exist`) {
		t.Errorf("Run: %v, want a control.group error", err)
	}
}

// TestTURNSecretDefault: without auth_secret, coordinators sharing a gossip
// key get the same TURN secret (each one's credentials work on the others'
// relays), another key gives another, and an explicit secret wins.
func TestTURNSecretDefault(t *testing.T) {
	dir := fixture(t, 24*time.Hour)
	coord := func(key, extra string) string {
		return inboundRule + "[coordinator]\nenabled = true\nsession_listen = \"0.0.0.0:7443\"\ngossip_key = \"" + strings.Repeat(key, 43) + "=\"\n[coordinator.turn]\nenabled = true\nrelay_address = \"203.0.113.10\"\n" + extra
	}
	secret := func(text string) string {
		t.Helper()
		r, err := Run(load(t, dir, text), Options{LookupGroup: haveGroup, HostAddrs: hostAddrs})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		return r.TURNSecret
	}
	a1, a2, b := secret(coord("A", "")), secret(coord("A", "")), secret(coord("B", ""))
	if a1 == "" || a1 != a2 || a1 == b {
		t.Fatalf("derived secrets: same key %q and %q, other key %q", a1, a2, b)
	}
	if s := secret(coord("A", "auth_secret = \"explicit\"\n")); s != "explicit" {
		t.Fatalf("explicit auth_secret gave %q", s)
	}
	if strings.Contains(a1, strings.Repeat("A", 8)) {
		t.Fatalf("secret %q shows the gossip key", a1)
	}
}
