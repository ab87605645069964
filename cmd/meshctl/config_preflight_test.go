package main

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/daemon"
	"github.com/meshd/meshd/pki"
)

// checkMesh is a CA and a directory of node credentials for config check
// tests.
type checkMesh struct {
	dir string
	ca  *pki.CA
}

func newCheckMesh(t *testing.T, name string) *checkMesh {
	t.Helper()
	ca, err := pki.NewCA(name, 48*time.Hour, pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	return &checkMesh{dir: t.TempDir(), ca: ca}
}

// issue writes FILE.crt and FILE.key for a node named name with subnets.
func (m *checkMesh) issue(t *testing.T, file, name string, subnets ...string) {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	id := pki.Identity{Name: name, Addr: netip.MustParsePrefix("100.64.0.1/10")}
	for _, s := range subnets {
		id.Subnets = append(id.Subnets, netip.MustParsePrefix(s))
	}
	nc, err := m.ca.Sign(key.Public(), id, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFile(filepath.Join(m.dir, file+".crt"), nc.PEM(), 0o644, true); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyFile(filepath.Join(m.dir, file+".key"), key, true); err != nil {
		t.Fatal(err)
	}
}

func (m *checkMesh) write(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(m.dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigCheckRefusesWhatMeshdRefuses: every configuration meshd refuses
// at start, `meshctl config check` refuses with the same line (it used to
// say ok for all of those past config.Load).
func TestConfigCheckRefusesWhatMeshdRefuses(t *testing.T) {
	m := newCheckMesh(t, "check-mesh")
	m.issue(t, "node", "node1", "192.168.1.0/24")
	m.issue(t, "other", "node2")
	other := newCheckMesh(t, "other-mesh")
	other.issue(t, "foreign", "node1")
	for _, f := range []string{"foreign.crt", "foreign.key"} {
		b, err := os.ReadFile(filepath.Join(other.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		m.write(t, f, string(b))
	}
	if err := m.ca.Save(filepath.Join(m.dir, "ca"), false); err != nil {
		t.Fatal(err)
	}
	m.write(t, "crl.pem", "not a CRL")
	m.write(t, "gossip.key", "c2hvcnQ=\n")

	const join = "[join]\ncoordinators = [\"coord.example.net:7443\"]\n"
	pkiTable := func(cert, key string) string {
		return "[pki]\nca = \"ca/" + pki.CACertFile + "\"\ncert = \"" + cert + "\"\nkey = \"" + key + "\"\n"
	}
	good := pkiTable("node.crt", "node.key")
	tests := []struct {
		name string
		conf string
		kind error  // daemon kind; nil: config.Load refuses it
		says string // part of the shared message
	}{
		{"key of another node", pkiTable("node.crt", "other.key") + join, daemon.ErrCredentials, "does not match"},
		{"certificate from another CA", pkiTable("foreign.crt", "foreign.key") + join, daemon.ErrCredentials, "not issued by the CA"},
		{"node.name is not the CN", "[node]\nname = \"node9\"\n" + good + join, daemon.ErrConfig, `node.name is "node9"`},
		{"advertise outside the certificate", good + join + "[routes]\nadvertise = [\"10.9.0.0/24\"]\n", daemon.ErrConfig, "10.9.0.0/24 is not inside"},
		{"control group that does not exist", good + join + "[control]\ngroup = \"no-such-group-meshd\"\n", daemon.ErrConfig, `group "no-such-group-meshd" does not exist`},
		{"unusable CRL", strings.Replace(good, "[pki]\n", "[pki]\ncrl = \"crl.pem\"\n", 1) + join, daemon.ErrCredentials, "CRL"},
		{"gossip key too short", good + "[coordinator]\nenabled = true\nsession_listen = \"0.0.0.0:7443\"\ngossip_key_file = \"gossip.key\"\n[coordinator.turn]\nrelay_address = \"203.0.113.10\"\n", daemon.ErrConfig, "gossip_key_file"},
		{"rekey_records above 2^32", good + join + "[data]\nrekey_records = 4294967297\n", nil, "data.rekey_records"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := m.write(t, "meshd.toml", tc.conf)
			out, err := runConfigCmd(t, "config", "check", path)
			if err == nil {
				t.Fatalf("config check said ok:\n%s", out)
			}
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 1 {
				t.Errorf("config check error %v, want exit 1", err)
			}
			cfg, lerr := config.Load(path)
			if tc.kind == nil {
				if lerr == nil {
					t.Fatal("config.Load accepted it")
				}
				if !strings.Contains(out, tc.says) || !strings.Contains(lerr.Error(), tc.says) {
					t.Errorf("config check %q / meshd %q do not both say %q", out, lerr, tc.says)
				}
				return
			}
			if lerr != nil {
				t.Fatalf("config.Load: %v", lerr)
			}
			// meshd's start path: New runs the checks before it builds.
			d, derr := daemon.New(cfg, daemon.Options{})
			if derr == nil {
				_ = d.Close()
				t.Fatal("daemon.New accepted it")
			}
			if !errors.Is(derr, tc.kind) {
				t.Errorf("daemon.New: %v, want %v", derr, tc.kind)
			}
			if want := path + ": " + derr.Error() + "\n"; out != want {
				t.Errorf("config check printed\n%q\nmeshd says\n%q", out, want)
			}
			if !strings.Contains(out, tc.says) {
				t.Errorf("message %q does not say %q", out, tc.says)
			}
			if _, cerr := daemon.Check(cfg); cerr == nil || cerr.Error() != derr.Error() {
				t.Errorf("meshd --check: %v, want %v", cerr, derr)
			}
		})
	}

	t.Run("good", func(t *testing.T) {
		path := m.write(t, "meshd.toml", good+join+"[control]\ngroup = \"\"\n[[firewall.inbound]]\npeer = \"any\"\nproto = \"icmp\"\n")
		out, err := runConfigCmd(t, "config", "check", path)
		if err != nil || out != path+": ok\n" {
			t.Errorf("config check: %v\n%s", err, out)
		}
	})
	t.Run("warnings", func(t *testing.T) {
		path := m.write(t, "meshd.toml", good+join)
		out, err := runConfigCmd(t, "config", "check", path)
		if err != nil {
			t.Fatalf("config check: %v\n%s", err, out)
		}
		if !strings.Contains(out, "warning: "+path+": firewall.inbound: no rules") {
			t.Errorf("no warning about the empty inbound firewall:\n%s", out)
		}
	})
}
