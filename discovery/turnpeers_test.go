package discovery

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startTURNForPeers runs the embedded server alone on loopback with o's
// peer policy and returns its UDP address.
func startTURNForPeers(t *testing.T, o TURNOptions, log *slog.Logger) (*turnService, string) {
	t.Helper()
	o.Secret = testTURNSecret
	o.UDPAddr = "127.0.0.1:0"
	o.RelayAddress = mustAddr("127.0.0.1")
	o.RelayBindAddress = "127.0.0.1"
	o.RelayPortMin, o.RelayPortMax = 43000, 43999
	ts, err := newTURNService(o, tlsCertForTest(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	return ts, strings.TrimPrefix(ts.urls[0], "stun:")
}

// TestTURNRelayRefusesInternalPeers drives the embedded server with a real
// pion TURN client: by default it refuses to relay to loopback, private,
// link-local, multicast and unspecified peers (nothing arrives, each refusal
// is counted, the first of a kind is logged once with the key to set), and
// allowed_peer_ips opens exactly what it lists.
func TestTURNRelayRefusesInternalPeers(t *testing.T) {
	testutil.LeakCheck(t)
	var logs syncBuffer
	ts, addr := startTURNForPeers(t, TURNOptions{}, slog.New(slog.NewTextHandler(&logs, nil)))
	user, pass := turnCredentials(testTURNSecret, "node-a", time.Now().Add(time.Hour))
	relay, tc, err := turnAllocate(t, udpConn(t), addr, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	defer relay.Close()

	// A service on the coordinator's loopback: must never hear the relay.
	local := udpConn(t)
	refused := []net.Addr{
		local.LocalAddr(),
		&net.UDPAddr{IP: net.IPv4(127, 0, 0, 53), Port: 53},
		&net.UDPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 9},
		&net.UDPAddr{IP: net.IPv4(192, 168, 1, 1), Port: 9},
		&net.UDPAddr{IP: net.IPv4(172, 16, 0, 1), Port: 9},
		&net.UDPAddr{IP: net.IPv4(100, 64, 0, 1), Port: 9},
		&net.UDPAddr{IP: net.IPv4(169, 254, 169, 254), Port: 80},
		&net.UDPAddr{IP: net.IPv4(224, 0, 0, 251), Port: 5353},
		&net.UDPAddr{IP: net.IPv4(255, 255, 255, 255), Port: 9},
		&net.UDPAddr{IP: net.IPv4(0, 0, 0, 0), Port: 9},
	}
	for i, a := range refused {
		if _, err := relay.WriteTo([]byte("probe"), a); err == nil {
			t.Errorf("relay to %v was permitted", a)
		}
		if got := ts.peers.refused.Load(); got < uint64(i+1) {
			t.Errorf("after %v: %d refusals counted, want at least %d", a, got, i+1)
		}
	}
	_ = local.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, from, err := local.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatalf("loopback service received %d bytes from %v through the relay", n, from)
	}
	out := logs.String()
	for _, want := range []string{"coordinator.turn.allowed_peer_ips", "reason=\"loopback", "reason=\"private address\""} {
		if strings.Count(out, want) == 0 {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "reason=\"private address\""); n != 1 {
		t.Errorf("private refusals logged %d times, want once:\n%s", n, out)
	}

	// With loopback listed in allowed_peer_ips the same relay works.
	ts2, addr2 := startTURNForPeers(t, TURNOptions{AllowedPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, slog.New(slog.DiscardHandler))
	relay2, tc2, err := turnAllocate(t, udpConn(t), addr2, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	defer tc2.Close()
	defer relay2.Close()
	if _, err := relay2.WriteTo([]byte("via relay"), local.LocalAddr()); err != nil {
		t.Fatalf("allowed loopback peer: %v", err)
	}
	buf := make([]byte, 64)
	_ = local.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err := local.ReadFrom(buf); err != nil || string(buf[:n]) != "via relay" {
		t.Fatalf("allowed peer got %q, %v", buf[:n], err)
	}
	if got := ts2.peers.refused.Load(); got != 0 {
		t.Fatalf("allowed relay counted %d refusals", got)
	}
}

// TestTURNPeerPolicy is the decision table behind the relay: defaults,
// allowed/denied lists, a private relay address (a home-lab coordinator),
// and the host's own addresses, reachable only on relay ports.
func TestTURNPeerPolicy(t *testing.T) {
	own := func() ([]net.Addr, error) {
		return []net.Addr{
			&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
			&net.IPNet{IP: net.ParseIP("203.0.113.10"), Mask: net.CIDRMask(24, 32)},
			&net.IPNet{IP: net.ParseIP("192.168.1.10"), Mask: net.CIDRMask(24, 32)},
			&net.IPNet{IP: net.ParseIP("2001:db8:10::10"), Mask: net.CIDRMask(64, 128)},
		}, nil
	}
	pfx := func(s ...string) []netip.Prefix {
		var l []netip.Prefix
		for _, p := range s {
			l = append(l, netip.MustParsePrefix(p))
		}
		return l
	}
	public := TURNOptions{RelayAddress: mustAddr("203.0.113.10"), RelayPortMin: 49152, RelayPortMax: 65535, interfaceAddrs: own,
		MeshPorts: func() []uint16 { return []uint16{51830} }}
	homeLab := public
	homeLab.RelayAddress = mustAddr("192.168.1.10")
	allowLAN := public
	allowLAN.AllowedPeers = pfx("10.20.0.0/16", "0.0.0.0/0")
	allowLAN.DeniedPeers = pfx("198.51.100.0/24")
	deny := public
	deny.DeniedPeers = pfx("198.51.100.0/24")
	allowNAT64 := public
	allowNAT64.AllowedPeers = pfx("64:ff9b::/96")
	for _, tc := range []struct {
		name string
		o    TURNOptions
		peer string
		want peerDenial
	}{
		{"public peer", public, "198.51.100.7:3478", peerAllowed},
		{"public v6 peer", public, "[2001:db8::7]:3478", peerAllowed},
		{"v4-mapped private", public, "[::ffff:10.0.0.1]:9", denyPrivate},
		{"rfc1918", public, "10.0.0.1:9", denyPrivate},
		{"cgnat", public, "100.64.1.1:9", denyPrivate},
		{"ula", public, "[fd00::1]:9", denyPrivate},
		{"loopback", public, "127.0.0.1:9", denySpecial},
		{"v6 loopback", public, "[::1]:9", denySpecial},
		{"link-local", public, "169.254.169.254:80", denySpecial},
		{"v6 link-local", public, "[fe80::1]:9", denySpecial},
		{"multicast", public, "239.1.1.1:9", denySpecial},
		{"v6 multicast", public, "[ff02::1]:9", denySpecial},
		{"broadcast", public, "255.255.255.255:9", denySpecial},
		{"unspecified", public, "0.0.0.0:9", denySpecial},
		{"this network", public, "0.1.2.3:9", denySpecial},
		{"own relay port (relay to relay)", public, "203.0.113.10:50000", peerAllowed},
		{"own service port", public, "203.0.113.10:22", denyOwnService},
		{"own mesh node (ICE port)", public, "203.0.113.10:51830", peerAllowed},
		{"own private address, mesh port", public, "192.168.1.10:51830", peerAllowed},
		{"own private address, relay port", public, "192.168.1.10:50000", peerAllowed},
		{"own private address, service port", public, "192.168.1.10:53", denyOwnService},
		{"denied list", deny, "198.51.100.7:3478", denyConfigured},
		{"allowed overrides denied", allowLAN, "198.51.100.7:3478", peerAllowed},
		{"allowed private", allowLAN, "10.20.3.4:9", peerAllowed},
		{"allowed still keeps own services", allowLAN, "203.0.113.10:22", denyOwnService},
		{"home lab: private peers", homeLab, "192.168.1.20:9", peerAllowed},
		{"home lab: other private range", homeLab, "10.1.1.1:9", peerAllowed},
		{"home lab: loopback", homeLab, "127.0.0.1:9", denySpecial},
		{"home lab: own service", homeLab, "192.168.1.10:53", denyOwnService},

		// IPv6: the same rules, and translated addresses judged by the IPv4
		// address they reach.
		{"v6 unspecified", public, "[::]:9", denySpecial},
		{"v4-mapped loopback", public, "[::ffff:127.0.0.1]:9", denySpecial},
		{"v4-mapped own service", public, "[::ffff:203.0.113.10]:22", denyOwnService},
		{"mesh overlay /48 (ULA)", public, "[fd7a:115c:a1e0::1]:9", denyPrivate},
		{"site-local", public, "[fec0::1]:9", denyPrivate},
		{"v4-compatible", public, "[::a00:1]:9", denySpecial},
		{"discard prefix", public, "[100::1]:9", denySpecial},
		{"nat64 to public", public, "[64:ff9b::198.51.100.7]:3478", peerAllowed},
		{"nat64 to private", public, "[64:ff9b::10.0.0.1]:9", denyPrivate},
		{"nat64 to loopback", public, "[64:ff9b::127.0.0.1]:9", denySpecial},
		{"nat64 to link-local", public, "[64:ff9b::169.254.169.254]:80", denySpecial},
		{"nat64 to own service", public, "[64:ff9b::203.0.113.10]:22", denyOwnService},
		{"nat64 to own relay port", public, "[64:ff9b::203.0.113.10]:50000", peerAllowed},
		{"nat64 to denied list", deny, "[64:ff9b::198.51.100.7]:3478", denyConfigured},
		{"nat64 listed in allowed", allowNAT64, "[64:ff9b::10.0.0.1]:9", peerAllowed},
		{"local-use nat64", public, "[64:ff9b:1::a00:1]:9", denyPrivate},
		{"6to4 to private", public, "[2002:a00:1::1]:9", denyPrivate},
		{"6to4 to public", public, "[2002:c633:6407::1]:9", peerAllowed},
		{"own v6 service port", public, "[2001:db8:10::10]:22", denyOwnService},
		{"own v6 relay port", public, "[2001:db8:10::10]:50000", peerAllowed},
		{"own v6 mesh node (ICE port)", public, "[2001:db8:10::10]:51830", peerAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeerPolicy(&tc.o, slog.New(slog.DiscardHandler))
			if got := p.checkSend(netip.MustParseAddrPort(tc.peer)); got != tc.want {
				t.Fatalf("checkSend(%s) = %v, want %v", tc.peer, got, tc.want)
			}
			// The permission (IP only) refuses whatever is refused on every
			// port.
			if got := p.check(netip.MustParseAddrPort(tc.peer).Addr()); (got == peerAllowed) != (tc.want == peerAllowed || tc.want == denyOwnService) {
				t.Fatalf("check(%s) = %v, inconsistent with %v", tc.peer, got, tc.want)
			}
		})
	}
}
