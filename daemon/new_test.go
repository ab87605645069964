package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/testutil"
)

// TestNewRejects checks that New refuses unusable setups with the right
// kind (cmd/meshd turns it into the exit code) and says why, and that it
// leaves nothing running.
func TestNewRejects(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	other := newTestMesh(t)
	good := m.node(t, "good", 1, nodeSpec{subnets: []string{"10.1.0.0/16"}})
	peer := m.node(t, "peer", 2, nodeSpec{})
	stranger := other.node(t, "stranger", 3, nodeSpec{})
	foreignCRL, err := other.ca.Revoke(nil, []*x509.Certificate{stranger.cert.Cert}, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	write := func(t *testing.T, name string, data []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	join := []string{"127.0.0.1:1"}
	tests := []struct {
		name string
		conf func(t *testing.T) confSpec
		kind error
		says string
	}{
		{"node.name is not the certificate's", func(*testing.T) confSpec {
			return confSpec{join: join, nodeName: "other"}
		}, ErrConfig, `node.name is "other"`},
		{"certificate is not PEM", func(t *testing.T) confSpec {
			return confSpec{join: join, cert: write(t, "bad.crt", []byte("not a certificate"))}
		}, ErrCredentials, "bad.crt"},
		{"key of another node", func(*testing.T) confSpec {
			return confSpec{join: join, key: peer.keyPath}
		}, ErrCredentials, "does not match"},
		{"certificate of another CA", func(*testing.T) confSpec {
			return confSpec{join: join, cert: stranger.certPath, key: stranger.keyPath}
		}, ErrCredentials, "not issued by the CA"},
		{"CRL of another CA", func(t *testing.T) confSpec {
			return confSpec{join: join, crl: write(t, "crl.pem", foreignCRL.PEM())}
		}, ErrCredentials, "CRL"},
		{"CRL unreadable as a CRL", func(t *testing.T) confSpec {
			return confSpec{join: join, crl: write(t, "crl.pem", []byte("garbage"))}
		}, ErrCredentials, "CRL"},
		{"advertised subnet outside the certificate", func(*testing.T) confSpec {
			return confSpec{join: join, extra: "[routes]\nadvertise = [\"10.2.0.0/24\"]\n"}
		}, ErrConfig, "10.2.0.0/24 is not inside"},
		{"forwarding in userspace mode", func(*testing.T) confSpec {
			return confSpec{join: join, extra: "[routes]\nforward = true\n"}
		}, ErrConfig, "routes.forward"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := m.config(t, good, tc.conf(t))
			cfg := mustLoad(t, path)
			d, err := New(cfg, Options{Tuning: testTuning()})
			if err == nil {
				d.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("error %v is not %v", err, tc.kind)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if _, cerr := Check(cfg); cerr == nil || !errors.Is(cerr, tc.kind) {
				t.Errorf("Check: %v, want %v", cerr, tc.kind)
			}
		})
	}

	// Cases whose configuration needs lines in tables the helper writes.
	edited := []struct {
		name     string
		replace  [2]string
		spec     confSpec
		kind     error
		says     string
		keyInDir string
	}{
		{"gossip key file with a bad key", [2]string{`gossip_key = "` + m.gossipKey + `"`, `gossip_key_file = "KEYFILE"`},
			confSpec{coordinator: true}, ErrConfig, "gossip key", "c29tZXRoaW5n"},
		{"unknown control group", [2]string{`group = ""`, `group = "no-such-group-meshd-test"`},
			confSpec{join: join}, ErrConfig, "no-such-group-meshd-test", ""},
	}
	for _, tc := range edited {
		t.Run(tc.name, func(t *testing.T) {
			path := m.config(t, good, tc.spec)
			data, _ := os.ReadFile(path)
			repl := tc.replace[1]
			if tc.keyInDir != "" {
				repl = strings.Replace(repl, "KEYFILE", write(t, "gossip.key", []byte(tc.keyInDir)), 1)
			}
			text := strings.Replace(string(data), tc.replace[0], repl, 1)
			if text == string(data) {
				t.Fatalf("%q not in the configuration", tc.replace[0])
			}
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			d, err := New(mustLoad(t, path), Options{Tuning: testTuning()})
			if err == nil {
				d.Close()
				t.Fatal("New succeeded")
			}
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %v: want %v saying %q", err, tc.kind, tc.says)
			}
		})
	}
}

// TestNewCloseWithoutStart: a daemon that never started closes cleanly and
// gives its TUN back; Start after Close fails.
func TestNewCloseWithoutStart(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	n := m.node(t, "solo", 1, nodeSpec{validity: 10 * 24 * time.Hour})
	logger, lv, lc := newLogCapture(t, "solo")
	d, err := New(mustLoad(t, m.config(t, n, confSpec{join: []string{"127.0.0.1:1"}, logLevel: "debug"})),
		Options{Logger: logger, LogLevel: lv, Tuning: testTuning()})
	if err != nil {
		t.Fatal(err)
	}
	if lv.Level() != config.LogDebug.Slog() {
		t.Errorf("log level %v, want debug from log.level", lv.Level())
	}
	if !lc.contains("CERTIFICATE EXPIRES SOON") {
		t.Error("a certificate with 10 days left was not warned about")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if err := d.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	select {
	case <-d.Wait():
	default:
		t.Error("Wait not closed after Close")
	}
	if d.Err() != nil {
		t.Errorf("Err after a plain Close: %v", d.Err())
	}
}
