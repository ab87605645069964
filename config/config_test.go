package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest useful file: three pki paths and one coordinator.
const minimal = `[pki]
ca = "ca.crt"
cert = "node.crt"
key = "/etc/meshd/private/node.key"

[join]
coordinators = ["coord.example.net"]
`

// testGossipKey is base64 of 32 bytes.
const testGossipKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func TestMinimalFileYieldsDocumentedDefaults(t *testing.T) {
	cfg, err := Parse("/etc/meshd/meshd.toml", []byte(minimal))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Default()
	want.File = "/etc/meshd/meshd.toml"
	want.PKI = PKI{CA: "/etc/meshd/ca.crt", Cert: "/etc/meshd/node.crt", Key: "/etc/meshd/private/node.key"}
	want.Join.Coordinators = []string{"coord.example.net:7443"}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("minimal file:\n got %+v\nwant %+v", cfg, want)
	}

	// The defaults as docs/configuration.md states them, spelled out so that
	// a change to Default() cannot go unnoticed.
	checks := []struct {
		key       string
		got, want any
	}{
		{"node.name", cfg.Node.Name, ""},
		{"node.state_dir", cfg.Node.StateDir, "/var/lib/meshd"},
		{"pki.crl", cfg.PKI.CRL, ""},
		{"tun.name", cfg.Tun.Name, "meshd0"},
		{"tun.mtu", cfg.Tun.MTU, 0},
		{"tun.mode", cfg.Tun.Mode, TunKernel},
		{"coordinator.enabled", cfg.Coordinator.Enabled, false},
		{"coordinator.session_listen", cfg.Coordinator.SessionListen, netip.AddrPort{}},
		{"coordinator.cluster_label", cfg.Coordinator.ClusterLabel, "meshd"},
		{"coordinator.tombstone_ttl", cfg.Coordinator.TombstoneTTL.Std(), 24 * time.Hour},
		{"coordinator.stun.enabled", cfg.Coordinator.STUN.Enabled, true},
		{"coordinator.turn.enabled", cfg.Coordinator.TURN.Enabled, true},
		{"coordinator.turn.relay_port_min", cfg.Coordinator.TURN.RelayPortMin, 49152},
		{"coordinator.turn.relay_port_max", cfg.Coordinator.TURN.RelayPortMax, 65535},
		{"coordinator.turn.credential_ttl", cfg.Coordinator.TURN.CredentialTTL.Std(), 24 * time.Hour},
		{"coordinator.turn.realm", cfg.Coordinator.TURN.Realm, "meshd"},
		{"coordinator.turn.user_quota", cfg.Coordinator.TURN.UserQuota, 1024},
		{"ice.port", cfg.ICE.Port, 51830},
		{"ice.disconnected_timeout", cfg.ICE.DisconnectedTimeout.Std(), 3 * time.Second},
		{"ice.failed_timeout", cfg.ICE.FailedTimeout.Std(), 7 * time.Second},
		{"ice.keepalive_interval", cfg.ICE.KeepaliveInterval.Std(), 750 * time.Millisecond},
		{"ice.check_interval", cfg.ICE.CheckInterval.Std(), 100 * time.Millisecond},
		{"ice.relay_only", cfg.ICE.RelayOnly, false},
		{"ice.lazy", cfg.ICE.Lazy, false},
		{"data.cipher", cfg.Data.Cipher, CipherAuto},
		{"data.rekey_interval", cfg.Data.RekeyInterval.Std(), 10 * time.Minute},
		{"data.rekey_records", cfg.Data.RekeyRecords, int64(134217728)},
		{"firewall.inbound", len(cfg.Firewall.Inbound), 0},
		{"firewall.outbound", cfg.Firewall.Outbound, []Rule{{Proto: ProtoAny, Port: AnyPort, Peer: "any"}}},
		{"firewall.conntrack.tcp_timeout", cfg.Firewall.Conntrack.TCPTimeout.Std(), 12 * time.Minute},
		{"firewall.conntrack.udp_timeout", cfg.Firewall.Conntrack.UDPTimeout.Std(), 3 * time.Minute},
		{"firewall.conntrack.default_timeout", cfg.Firewall.Conntrack.DefaultTimeout.Std(), 10 * time.Minute},
		{"routes.forward", cfg.Routes.Forward, false},
		{"control.socket", cfg.Control.Socket, "/run/meshd/meshd.sock"},
		{"control.group", cfg.Control.Group, "meshd"},
		{"metrics.enabled", cfg.Metrics.Enabled, false},
		{"metrics.listen", cfg.Metrics.Listen.String(), "127.0.0.1:9477"},
		{"dns.enabled", cfg.DNS.Enabled, true},
		{"dns.resolved", cfg.DNS.Resolved, true},
		{"dns.forward", len(cfg.DNS.Forward), 0},
		{"log.level", cfg.Log.Level, LogInfo},
		{"log.format", cfg.Log.Format, LogText},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, documented default %v", c.key, c.got, c.want)
		}
	}
}

func TestDefaultReturnsFreshValues(t *testing.T) {
	a := Default()
	a.Firewall.Outbound[0].Peer = "changed"
	if b := Default(); b.Firewall.Outbound[0].Peer != AnyPeer {
		t.Fatal("Default shares its slices between calls")
	}
}

func TestFullFileDecodesEveryKey(t *testing.T) {
	src := `
[node]
name = "web-1"
state_dir = "state"

[pki]
ca = "/pki/ca.crt"
cert = "/pki/node.crt"
key = "/pki/node.key"
crl = "crl.pem"

[tun]
name = "mesh1"
mtu = 1380
mode = "userspace"

[join]
coordinators = ["198.51.100.1:7443", "[2001:db8::1]", "c.example.net:8443"]

[coordinator]
enabled = true
session_listen = "198.51.100.7:7443"
gossip_advertise = "198.51.100.7:7946"
gossip_key_file = "gossip.key"
cluster_label = "lab"
peers = ["198.51.100.8", "c2.example.net:7000"]
tombstone_ttl = "2h"

[coordinator.stun]
enabled = true
listen = "198.51.100.7:3479"

[coordinator.turn]
enabled = true
tcp_listen = "198.51.100.7:3478"
tls_listen = "198.51.100.7:5349"
relay_port_min = 50000
relay_port_max = 50999
auth_secret = "s3cret"
credential_ttl = "1h"
realm = "lab.example.net"
user_quota = 0

[ice]
port = 0
ipv6 = false
stun_servers = ["stun:stun.example.net", "stun:[2001:db8::2]:3479"]
disconnected_timeout = "4s"
failed_timeout = "20s"
keepalive_interval = "1s"
check_interval = "100ms"
relay_only = true
include_interfaces = ["eth*", "wlan0"]
exclude_interfaces = ["docker*"]
lazy = true

[[ice.turn_servers]]
url = "turn:turn.example.net:3478?transport=tcp"
username = "u"
credential = "c"

[[ice.turn_servers]]
url = "turns:turn.example.net"
secret = "shared"

[data]
cipher = "chacha20-poly1305"
rekey_interval = "5m"
rekey_records = 1000000

[[firewall.inbound]]
proto = "tcp"
port = "8000-8100"
groups = ["admins", "ops"]
cidr = "100.64.0.0/10"

[[firewall.inbound]]
proto = "udp"
port = 53
peer = "dns-1"
local_cidr = "10.1.0.0/16"

[firewall]
outbound = []

[firewall.conntrack]
tcp_timeout = "1h"
udp_timeout = "30s"
default_timeout = "1m"

[routes]
advertise = ["10.1.0.0/16", "fd00:1::/64"]
forward = true
accept = ["0.0.0.0/0", "::/0"]

[control]
socket = "meshd.sock"
group = ""

[metrics]
enabled = true
listen = "[::1]:9100"

[relay]
enabled = true
listen = "198.51.100.7:3480"
public_address = "203.0.113.7:3480"
max_allocations = 8

[dns]
enabled = false
resolved = false
forward = ["192.0.2.53:53", "[2001:db8::53]:5353"]

[log]
level = "debug"
format = "json"
`
	cfg, err := Parse("/etc/meshd/meshd.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	ap := netip.MustParseAddrPort
	pf := netip.MustParsePrefix
	want := &Config{
		File: "/etc/meshd/meshd.toml",
		Node: Node{Name: "web-1", StateDir: "/etc/meshd/state"},
		PKI:  PKI{CA: "/pki/ca.crt", Cert: "/pki/node.crt", Key: "/pki/node.key", CRL: "/etc/meshd/crl.pem"},
		Tun:  Tun{Name: "mesh1", MTU: 1380, Mode: TunUserspace},
		Join: Join{Coordinators: []string{"198.51.100.1:7443", "[2001:db8::1]:7443", "c.example.net:8443"}},
		Coordinator: Coordinator{
			Enabled:         true,
			SessionListen:   ap("198.51.100.7:7443"),
			GossipBind:      ap("198.51.100.7:7946"),
			GossipAdvertise: ap("198.51.100.7:7946"),
			GossipKeyFile:   "/etc/meshd/gossip.key",
			ClusterLabel:    "lab",
			Peers:           []string{"198.51.100.8:7946", "c2.example.net:7000"},
			TombstoneTTL:    Duration(2 * time.Hour),
			STUN:            STUN{Enabled: true, Listen: ap("198.51.100.7:3479")},
			TURN: TURN{
				Enabled:       true,
				Listen:        ap("198.51.100.7:3478"),
				TCPListen:     ap("198.51.100.7:3478"),
				TLSListen:     ap("198.51.100.7:5349"),
				TLSCert:       "/pki/node.crt",
				TLSKey:        "/pki/node.key",
				RelayPortMin:  50000,
				RelayPortMax:  50999,
				AuthSecret:    "s3cret",
				CredentialTTL: Duration(time.Hour),
				Realm:         "lab.example.net",
				UserQuota:     0,
			},
		},
		ICE: ICE{
			Port:        0,
			STUNServers: []string{"stun:stun.example.net", "stun:[2001:db8::2]:3479"},
			TURNServers: []TURNServer{
				{URL: "turn:turn.example.net:3478?transport=tcp", Username: "u", Credential: "c"},
				{URL: "turns:turn.example.net", Secret: "shared"},
			},
			DisconnectedTimeout: Duration(4 * time.Second),
			FailedTimeout:       Duration(20 * time.Second),
			KeepaliveInterval:   Duration(time.Second),
			CheckInterval:       Duration(100 * time.Millisecond),
			RelayOnly:           true,
			IncludeInterfaces:   []string{"eth*", "wlan0"},
			ExcludeInterfaces:   []string{"docker*"},
			Lazy:                true,
		},
		Data: Data{Cipher: CipherChaCha20Poly1305, RekeyInterval: Duration(5 * time.Minute), RekeyRecords: 1000000},
		Firewall: Firewall{
			Inbound: []Rule{
				{Proto: ProtoTCP, Port: PortRange{8000, 8100}, Groups: []string{"admins", "ops"}, CIDR: pf("100.64.0.0/10")},
				{Proto: ProtoUDP, Port: PortRange{53, 53}, Peer: "dns-1", LocalCIDR: pf("10.1.0.0/16")},
			},
			Outbound:  []Rule{},
			Conntrack: Conntrack{TCPTimeout: Duration(time.Hour), UDPTimeout: Duration(30 * time.Second), DefaultTimeout: Duration(time.Minute)},
		},
		Routes:  Routes{Advertise: []netip.Prefix{pf("10.1.0.0/16"), pf("fd00:1::/64")}, Forward: true, Accept: []netip.Prefix{pf("0.0.0.0/0"), pf("::/0")}},
		Control: Control{Socket: "/etc/meshd/meshd.sock", Group: "", GroupSet: true},
		Metrics: Metrics{Enabled: true, Listen: ap("[::1]:9100")},
		Relay:   Relay{Enabled: true, Listen: ap("198.51.100.7:3480"), PublicAddress: ap("203.0.113.7:3480"), MaxAllocations: 8},
		DNS:     DNS{Forward: []netip.AddrPort{ap("192.0.2.53:53"), ap("[2001:db8::53]:5353")}},
		Log:     Log{Level: LogDebug, Format: LogJSON},
	}
	if !reflect.DeepEqual(cfg, want) {
		for _, k := range Changes(cfg, want) {
			t.Errorf("%s differs", k)
		}
		t.Fatalf("full file:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestCoordinatorDerivedAddresses(t *testing.T) {
	src := minimal + `
[coordinator]
enabled = true
session_listen = "[::]:7443"
gossip_key = "` + testGossipKey + `"

[coordinator.turn]
relay_address = "2001:db8::7"
`
	cfg, err := Parse("meshd.toml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	c := cfg.Coordinator
	for _, x := range []struct {
		key       string
		got, want netip.AddrPort
	}{
		{"gossip_bind", c.GossipBind, netip.MustParseAddrPort("[::]:7946")},
		{"stun.listen", c.STUN.Listen, netip.MustParseAddrPort("[::]:3478")},
		{"turn.listen", c.TURN.Listen, netip.MustParseAddrPort("[::]:3478")},
		{"gossip_advertise", c.GossipAdvertise, netip.AddrPort{}},
		{"turn.tcp_listen", c.TURN.TCPListen, netip.AddrPort{}},
		{"turn.tls_listen", c.TURN.TLSListen, netip.AddrPort{}},
	} {
		if x.got != x.want {
			t.Errorf("coordinator.%s = %v, want %v", x.key, x.got, x.want)
		}
	}
	if c.TURN.TLSCert != "" || c.TURN.TLSKey != "" {
		t.Errorf("TLS files set without tls_listen: %q %q", c.TURN.TLSCert, c.TURN.TLSKey)
	}
	// With session_listen on port 0 (tests) the derived listeners take free
	// ports too instead of fixed ones.
	zero, err := Parse("meshd.toml", []byte(strings.Replace(src, "[::]:7443", "127.0.0.1:0", 1)))
	if err != nil {
		t.Fatalf("Parse with port 0: %v", err)
	}
	want0 := netip.MustParseAddrPort("127.0.0.1:0")
	if c := zero.Coordinator; c.GossipBind != want0 || c.STUN.Listen != want0 || c.TURN.Listen != want0 {
		t.Errorf("port 0 session: gossip %v, stun %v, turn %v; want %v", c.GossipBind, c.STUN.Listen, c.TURN.Listen, want0)
	}
	// A coordinator needs no [join] coordinators.
	noJoin := strings.Replace(src, `coordinators = ["coord.example.net"]`, "", 1)
	if _, err := Parse("meshd.toml", []byte(noJoin)); err != nil {
		t.Errorf("coordinator without join.coordinators: %v", err)
	}
}

func TestParseGossipKey(t *testing.T) {
	tests := []struct {
		in      string
		wantLen int // 0 = error
	}{
		{testGossipKey, 32},
		{"  " + testGossipKey + "\n", 32},
		{"AAECAwQFBgcICQoLDA0ODw==", 16},
		{"AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", 24},
		{"AAECAwQFBgcICQoLDA0O", 0}, // 15 bytes
		{"not base64!", 0},
		{"", 0},
	}
	for _, tt := range tests {
		key, err := ParseGossipKey(tt.in)
		if tt.wantLen == 0 {
			if err == nil {
				t.Errorf("ParseGossipKey(%q) = %d bytes, want error", tt.in, len(key))
			}
			continue
		}
		if err != nil || len(key) != tt.wantLen {
			t.Errorf("ParseGossipKey(%q) = %d bytes, %v; want %d bytes", tt.in, len(key), err, tt.wantLen)
		}
	}
}

func TestLoadChecksFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("ca.crt", "x")
	write("node.crt", "x")
	write("node.key", "x")
	if err := os.Mkdir(filepath.Join(dir, "crl.d"), 0o700); err != nil {
		t.Fatal(err)
	}
	good := write("good.toml", `[pki]
ca = "ca.crt"
cert = "node.crt"
key = "node.key"
[join]
coordinators = ["c.example.net:7443"]
`)
	cfg, err := Load(good)
	if err != nil {
		t.Fatalf("Load(good): %v", err)
	}
	if want := filepath.Join(dir, "node.key"); cfg.PKI.Key != want {
		t.Errorf("pki.key = %q, want %q (resolved against the file's directory)", cfg.PKI.Key, want)
	}

	bad := write("bad.toml", `[pki]
ca = "ca.crt"
cert = "node.crt"
  key = "missing.key"
crl = "crl.d"
[join]
coordinators = ["c.example.net:7443"]
[coordinator]
gossip_key_file = "also-missing"
`)
	_, err = Load(bad)
	wantErrors(t, err, []wantErr{
		{4, 3, "pki.key", ErrFile, "cannot read " + filepath.Join(dir, "missing.key") + ": no such file or directory"},
		{5, 1, "pki.crl", ErrFile, "is a directory"},
		// coordinator.gossip_key_file is not checked: the coordinator is off.
	})

	// The same file without file checks is fine.
	if _, err := Load(bad, WithFileChecks(false)); err != nil {
		t.Errorf("Load without file checks: %v", err)
	}
	// Parse checks files only when asked to.
	data, _ := os.ReadFile(bad)
	if _, err := Parse(bad, data); err != nil {
		t.Errorf("Parse: %v", err)
	}
	_, err = Parse(bad, data, WithFileChecks(true))
	if !errors.Is(err, ErrFile) {
		t.Errorf("Parse with file checks: %v, want ErrFile", err)
	}

	_, err = Load(filepath.Join(dir, "nope.toml"))
	wantErrors(t, err, []wantErr{{0, 0, "", ErrFile, "cannot read configuration: no such file or directory"}})
	if err != nil && !strings.HasPrefix(err.Error(), filepath.Join(dir, "nope.toml")+": cannot read") {
		t.Errorf("missing config file printed as %q", err)
	}
}

func TestLoadChecksCoordinatorFiles(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"ca.crt", "node.crt", "node.key"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(dir, "meshd.toml")
	src := `[pki]
ca = "ca.crt"
cert = "node.crt"
key = "node.key"
[coordinator]
enabled = true
session_listen = "127.0.0.1:7443"
gossip_key_file = "gossip.key"
[coordinator.turn]
auth_secret_file = "turn.secret"
tls_listen = "127.0.0.1:5349"
tls_key = "turn.key"
`
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	wantErrors(t, err, []wantErr{
		{8, 1, "coordinator.gossip_key_file", ErrFile, "no such file"},
		{10, 1, "coordinator.turn.auth_secret_file", ErrFile, "no such file"},
		{12, 1, "coordinator.turn.tls_key", ErrFile, "no such file"},
	})
}
