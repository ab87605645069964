package daemon

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/overlay/overlaytest"
	"github.com/meshd/meshd/tunnel"
)

func TestFirewallFrom(t *testing.T) {
	parse := func(t *testing.T, text string) config.Firewall {
		t.Helper()
		cfg, err := config.Parse("fw.toml", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Firewall
	}
	base := "[pki]\nca=\"ca\"\ncert=\"c\"\nkey=\"k\"\n[join]\ncoordinators=[\"c1\"]\n"
	tests := []struct {
		name     string
		text     string
		inbound  []overlay.Rule
		outbound []overlay.Rule // nil: allow all
	}{
		{
			name:     "defaults: inbound denied, outbound allowed to any peer",
			text:     base,
			outbound: []overlay.Rule{{}},
		},
		{
			name:     "explicit empty outbound denies all",
			text:     base + "[firewall]\noutbound = []\n",
			outbound: []overlay.Rule{{Peers: []string{denyAllPeer}}},
		},
		{
			name: "rules map field by field",
			text: base + `
[[firewall.inbound]]
proto = "icmp"
peer = "any"
[[firewall.inbound]]
proto = "tcp"
port = "22"
groups = ["admins"]
[[firewall.inbound]]
port = "8000-8100"
peer = "web"
cidr = "100.64.0.0/24"
local_cidr = "10.1.2.0/24"
[[firewall.outbound]]
proto = "udp"
groups = ["dns"]
`,
			inbound: []overlay.Rule{
				{Proto: overlay.ProtoICMP},
				{Proto: overlay.ProtoTCP, Ports: []overlay.PortRange{{First: 22, Last: 22}}, Groups: []string{"admins"}},
				{Proto: overlay.ProtoAny, Ports: []overlay.PortRange{{First: 8000, Last: 8100}}, Peers: []string{"web"},
					CIDRs: pfx("100.64.0.0/24"), LocalCIDRs: pfx("10.1.2.0/24")},
			},
			outbound: []overlay.Rule{{Proto: overlay.ProtoUDP, Groups: []string{"dns"}}},
		},
	}
	eq := func(a, b []overlay.Rule) bool {
		return slices.EqualFunc(a, b, func(x, y overlay.Rule) bool {
			return slices.Equal(x.Peers, y.Peers) && slices.Equal(x.Groups, y.Groups) && slices.Equal(x.CIDRs, y.CIDRs) &&
				slices.Equal(x.LocalCIDRs, y.LocalCIDRs) && x.Proto == y.Proto && slices.Equal(x.Ports, y.Ports)
		})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fw := firewallFrom(parse(t, tc.text))
			if !eq(fw.Inbound, tc.inbound) {
				t.Errorf("inbound %+v, want %+v", fw.Inbound, tc.inbound)
			}
			if !eq(fw.Outbound, tc.outbound) {
				t.Errorf("outbound %+v, want %+v", fw.Outbound, tc.outbound)
			}
			if fw.TCPTimeout != 12*time.Minute || fw.UDPTimeout != 3*time.Minute || fw.OtherTimeout != 10*time.Minute {
				t.Errorf("conntrack timeouts %v %v %v", fw.TCPTimeout, fw.UDPTimeout, fw.OtherTimeout)
			}
		})
	}
}

// TestDenyAllOutbound proves the mapping of "outbound = []" really denies on
// the overlay's data path, while the default allows: a UDP packet from the
// TUN to a peer is dropped by the outbound firewall or handed to its link.
func TestDenyAllOutbound(t *testing.T) {
	self, peer := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	for _, tc := range []struct {
		name string
		fw   string
		deny bool
	}{
		{"default allows", "", false},
		{"empty list denies", "[firewall]\noutbound = []\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse("fw.toml", []byte("[pki]\nca=\"ca\"\ncert=\"c\"\nkey=\"k\"\n[join]\ncoordinators=[\"c1\"]\n"+tc.fw))
			if err != nil {
				t.Fatal(err)
			}
			dev := overlaytest.NewTUN(overlaytest.TUNOptions{})
			ov, err := overlay.New(overlay.Options{Device: dev})
			if err != nil {
				t.Fatal(err)
			}
			defer ov.Close()
			if err := ov.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			local, remote := overlaytest.Pipe(overlaytest.PipeOptions{})
			defer local.Close()
			defer remote.Close()
			if err := ov.Reconfig(overlay.Config{
				Addresses: pfx("100.64.0.1/10"),
				Peers:     []overlay.PeerConfig{{Name: "b", AllowedPrefixes: pfx("100.64.0.2/32"), Conn: local}},
				Firewall:  firewallFrom(cfg.Firewall),
			}); err != nil {
				t.Fatal(err)
			}
			pkt := overlaytest.Packet{Src: self, Dst: peer, Proto: overlaytest.ProtoUDP, SrcPort: 4000, DstPort: 53, Payload: []byte("q")}
			if err := dev.Inject(pkt.Marshal()); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 2*time.Second, "the packet is sent or dropped", func() bool {
				s := ov.Stats()
				return s.PacketsOut+s.Drops.FirewallOut > 0
			})
			s := ov.Stats()
			if tc.deny && (s.Drops.FirewallOut != 1 || s.PacketsOut != 0) {
				t.Errorf("deny-all: %+v", s)
			}
			if !tc.deny && (s.Drops.FirewallOut != 0 || s.PacketsOut != 1) {
				t.Errorf("default: %+v", s)
			}
		})
	}
}

func TestTunnelTimers(t *testing.T) {
	ice := config.Default().ICE
	tt := tunnelTimers(ice, config.Default().Data)
	if tt.CheckInterval != ice.CheckInterval.Std() || tt.KeepaliveInterval != ice.KeepaliveInterval.Std() ||
		tt.DisconnectedTimeout != ice.DisconnectedTimeout.Std() || tt.FailedTimeout != ice.FailedTimeout.Std() {
		t.Errorf("timers %+v do not follow [ice] %+v", tt, ice)
	}
	if tt.PathTimeout <= tt.KeepaliveInterval {
		t.Errorf("PathTimeout %v must exceed KeepaliveInterval %v", tt.PathTimeout, tt.KeepaliveInterval)
	}
}

func TestTURNREST(t *testing.T) {
	exp := time.Unix(1700000000, 0)
	user, pass := turnREST("s3cret", "nas", exp)
	if user != "1700000000:nas" {
		t.Errorf("user %q", user)
	}
	mac := hmac.New(sha1.New, []byte("s3cret"))
	mac.Write([]byte(user))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); pass != want {
		t.Errorf("password %q, want %q", pass, want)
	}
}

func TestProbePackets(t *testing.T) {
	src, dst := netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
	b := make([]byte, probeLen)
	buildProbe(b, icmpEchoReq, src, dst, 0x1234, 7, 0xdeadbeefcafe)
	if !isProbe(b) {
		t.Fatal("built probe not recognised")
	}
	if inetChecksum(b[:probeIPHeader]) != 0 || inetChecksum(b[probeIPHeader:]) != 0 {
		t.Error("checksums do not verify")
	}
	if s, d := probeAddrs(b); s != src || d != dst {
		t.Errorf("addresses %v %v", s, d)
	}
	for name, mut := range map[string]func([]byte) []byte{
		"tcp":        func(p []byte) []byte { p[9] = 6; return p },
		"short":      func(p []byte) []byte { return p[:probeLen-1] },
		"long":       func(p []byte) []byte { return append(p, 0) },
		"other icmp": func(p []byte) []byte { p[20] = 3; return p },
		"no magic":   func(p []byte) []byte { p[30] ^= 1; return p },
		"ipv6":       func(p []byte) []byte { p[0] = 0x60; return p },
		"options":    func(p []byte) []byte { p[0] = 0x46; return p },
	} {
		if isProbe(mut(slices.Clone(b))) {
			t.Errorf("%s: mistaken for a probe", name)
		}
	}
}

func TestInterfacePolicy(t *testing.T) {
	mesh := []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}
	p := interfacePolicy(config.ICE{IncludeInterfaces: []string{"eth*"}, ExcludeInterfaces: []string{"eth1"}}, "meshd0", mesh)
	if !slices.Equal(p.Include, []string{"eth*"}) || !slices.Equal(p.Exclude, []string{"eth1"}) || p.OwnTUN != "meshd0" || !slices.Equal(p.Overlay, mesh) {
		t.Fatalf("interfacePolicy = %+v", p)
	}
	// The patterns reach the classification: exclusion wins over inclusion.
	vs := p.Classify([]tunnel.LinkInfo{
		{Name: "eth0", Kind: "device", Encap: "ether", Up: true},
		{Name: "eth1", Kind: "device", Encap: "ether", Up: true},
		{Name: "wlan0", Kind: "device", Encap: "ether", Up: true, DefaultRoute: true},
	})
	for i, want := range []bool{true, false, false} {
		if vs[i].Use != want {
			t.Errorf("%s: use %v (%s), want %v", vs[i].Name, vs[i].Use, vs[i].Reason, want)
		}
	}
}

// ice.turn_servers secret_file: the secret is read from the file when the
// configuration is loaded (or reloaded) and REST credentials derive from it
// as from an inline secret; an unreadable file is a configuration error.
func TestTURNSecretFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "turn.secret")
	if err := os.WriteFile(file, []byte("labsecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.ICE.TURNServers = []config.TURNServer{{URL: "turn:192.0.2.9:3478", SecretFile: file}}
	rc, err := newRunConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rc.turnSecrets) != 1 || rc.turnSecrets[0] != "labsecret" {
		t.Fatalf("secrets %q, want the file's", rc.turnSecrets)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if _, err := newRunConfig(cfg); err == nil || !strings.Contains(err.Error(), "ice.turn_servers[0].secret_file") {
		t.Fatalf("missing secret file: %v, want an error naming the key", err)
	}
}

// TestTURNRelayAddrs: the embedded relay's public addresses per family
// from coordinator.turn.listen, relay_address and relay_address6.
func TestTURNRelayAddrs(t *testing.T) {
	a := func(s string) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		return netip.MustParseAddr(s)
	}
	for _, tc := range []struct {
		name                  string
		listen, relay, relay6 string
		wantRelay, wantRelay6 string
	}{
		{"IPv4 listener", "203.0.113.7:3478", "", "", "203.0.113.7", ""},
		{"IPv6 listener", "[2001:db8::7]:3478", "", "", "2001:db8::7", ""},
		{"wildcard, both families", "[::]:3478", "203.0.113.7", "2001:db8::7", "203.0.113.7", "2001:db8::7"},
		{"wildcard, IPv6 only", "[::]:3478", "", "2001:db8::7", "", "2001:db8::7"},
		{"IPv4 wildcard, IPv6 relay", "0.0.0.0:3478", "", "2001:db8::7", "", "2001:db8::7"},
		{"IPv6 listener, public IPv6 elsewhere", "[2001:db8::7]:3478", "", "2001:db8::8", "", "2001:db8::8"},
		{"IPv4 listener, IPv6 relay", "203.0.113.7:3478", "", "2001:db8::7", "203.0.113.7", "2001:db8::7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, r6 := turnRelayAddrs(config.TURN{Listen: netip.MustParseAddrPort(tc.listen), RelayAddress: a(tc.relay), RelayAddress6: a(tc.relay6)})
			if r != a(tc.wantRelay) || r6 != a(tc.wantRelay6) {
				t.Fatalf("got %v, %v; want %s, %s", r, r6, tc.wantRelay, tc.wantRelay6)
			}
		})
	}
}
