package discovery

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/meshd/meshd/internal/testutil"
)

// startDualStackTURN runs the embedded server with its UDP listener on
// listen and a relay address per family (127.0.0.1, ::1), loopback peers
// allowed. relay6 false leaves the IPv6 relay address out.
func startDualStackTURN(t *testing.T, listen string, relay6 bool) *turnService {
	t.Helper()
	o := TURNOptions{
		Secret:       testTURNSecret,
		UDPAddr:      listen,
		RelayAddress: mustAddr("127.0.0.1"),
		RelayPortMin: 45000, RelayPortMax: 45999,
		AllowedPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
	}
	if relay6 {
		o.RelayAddress6 = mustAddr("::1")
	}
	ts, err := newTURNService(o, tls.Certificate{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	return ts
}

// allocateFamily allocates on server over conn as node-a, asking for
// family.
func allocateFamily(t *testing.T, conn net.PacketConn, server string, family turn.RequestedAddressFamily) (net.PacketConn, error) {
	t.Helper()
	user, pass := turnCredentials(testTURNSecret, "node-a", time.Now().Add(time.Hour))
	return allocateAs(t, conn, server, user, pass, family)
}

// allocateAs allocates on server over conn with the credentials, asking
// for family (0: the client's default).
func allocateAs(t *testing.T, conn net.PacketConn, server, user, pass string, family turn.RequestedAddressFamily) (net.PacketConn, error) {
	t.Helper()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: user, Password: pass, Realm: "meshd",
		RequestedAddressFamily: family,
		LoggerFactory:          &pionLoggerFactory{l: slog.New(slog.DiscardHandler)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err == nil {
		t.Cleanup(func() { _ = relay.Close() })
	}
	return relay, err
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func listenUDP(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("no %s on this host: %v", network, err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc.(*net.UDPConn)
}

// TestTURNRelayFamilies: a node that reaches the embedded server over IPv6
// gets a relayed address of the family it asks for (REQUESTED-ADDRESS-FAMILY,
// RFC 6156), so an IPv6-only node can meet an IPv4-only one on the relay's
// IPv4 address; datagrams cross both ways, and once the channel is bound
// the batched fast path forwards them on sockets of either family.
func TestTURNRelayFamilies(t *testing.T) {
	testutil.LeakCheck(t)
	for _, tc := range []struct {
		name      string
		family    turn.RequestedAddressFamily
		peerNet   string
		peerAddr  string
		wantRelay netip.Addr
		listen    string // the server's UDP listener
		client    string // the client's address (its family reaches the server)
	}{
		{"IPv6 relay", turn.RequestedAddressFamilyIPv6, "udp6", "[::1]:0", mustAddr("::1"), "[::1]:0", "[::1]:0"},
		{"IPv4 relay over IPv6", turn.RequestedAddressFamilyIPv4, "udp4", "127.0.0.1:0", mustAddr("127.0.0.1"), "[::1]:0", "[::1]:0"},
		// "::" is one dual-stack socket: IPv4 clients arrive v4-mapped.
		{"IPv4 client on a dual-stack listener", turn.RequestedAddressFamilyIPv4, "udp4", "127.0.0.1:0", mustAddr("127.0.0.1"), "[::]:0", "127.0.0.1:0"},
		{"IPv6 relay over IPv4", turn.RequestedAddressFamilyIPv6, "udp6", "[::1]:0", mustAddr("::1"), "[::]:0", "127.0.0.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := listenUDP(t, "udp", tc.client)
			peer := listenUDP(t, tc.peerNet, tc.peerAddr)
			ts := startDualStackTURN(t, tc.listen, true)
			// The STUN URL of the client's family.
			server := ts.urls[0][len("stun:"):]
			if ap := netip.MustParseAddrPort(tc.client); ap.Addr().Is6() {
				server = ts.urls[len(ts.urls)-2][len("stun:"):]
			}
			relay, err := allocateFamily(t, client, server, tc.family)
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			if got := relay.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(); got != tc.wantRelay {
				t.Fatalf("relayed address %v, want %v", relay.LocalAddr(), tc.wantRelay)
			}
			warmChannel(t, relay, peer, func(i int) bool {
				return ts.fast == nil && i > 20 || ts.fast != nil && len(ts.fast.tab.Load().byClient) > 0
			})
			buf := make([]byte, 2048)
			for i := 0; i < 20; i++ {
				want := bytes.Repeat([]byte{byte(i)}, 1000+i)
				if _, err := relay.WriteTo(want, peer.LocalAddr()); err != nil {
					t.Fatal(err)
				}
				_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := peer.ReadFrom(buf)
				if err != nil || !bytes.Equal(buf[:n], want) {
					t.Fatalf("peer got %d bytes (%v), want %d", n, err, len(want))
				}
				if got := from.(*net.UDPAddr).Port; got != relay.LocalAddr().(*net.UDPAddr).Port {
					t.Fatalf("peer heard from %v, want the relayed address %v", from, relay.LocalAddr())
				}
				if _, err := peer.WriteTo(want[:100], from); err != nil {
					t.Fatal(err)
				}
				_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, _, err := relay.ReadFrom(buf); err != nil || !bytes.Equal(buf[:n], want[:100]) {
					t.Fatalf("client got %d bytes (%v), want 100", n, err)
				}
			}
			if ts.fast != nil {
				testutil.WaitFor(t, 5*time.Second, "datagrams each way through the fast path", func() bool {
					return allForwarded(ts.fast, dirToPeer) >= 20 && allForwarded(ts.fast, dirToClient) >= 20
				})
			}
		})
	}
}

// TestTURNRelayFamilyWithoutAddress: without an IPv6 relay address an
// IPv6 allocation is refused (nothing is bound on an IPv6 address the
// configuration does not name), and the IPv4 one still works.
func TestTURNRelayFamilyWithoutAddress(t *testing.T) {
	testutil.LeakCheck(t)
	ts := startDualStackTURN(t, "[::1]:0", false)
	server := ts.urls[0][len("stun:"):]
	if _, err := allocateFamily(t, listenUDP(t, "udp6", "[::1]:0"), server, turn.RequestedAddressFamilyIPv6); err == nil {
		t.Fatal("IPv6 allocation granted without an IPv6 relay address")
	}
	relay, err := allocateFamily(t, listenUDP(t, "udp6", "[::1]:0"), server, turn.RequestedAddressFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	if a := relay.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); !a.Unmap().Is4() {
		t.Fatalf("relayed address %v, want IPv4", a)
	}
}

// TestTURNAnnouncedURLs: the STUN/TURN URLs handed to nodes name the
// server by the families its listeners serve, each with that family's
// public address.
func TestTURNAnnouncedURLs(t *testing.T) {
	for _, tc := range []struct {
		name             string
		listen           string
		relay4, relay6   string
		publicHost, want string // want: hosts, space-separated
	}{
		{"IPv4 listener", "203.0.113.7", "203.0.113.7", "", "", "203.0.113.7"},
		{"IPv4 wildcard, dual-stack relay", "0.0.0.0", "203.0.113.7", "2001:db8::7", "", "203.0.113.7"},
		{"IPv6 wildcard, dual-stack relay", "::", "203.0.113.7", "2001:db8::7", "", "203.0.113.7 2001:db8::7"},
		{"IPv6 wildcard, IPv4 relay only", "::", "203.0.113.7", "", "", "203.0.113.7"},
		{"IPv6 wildcard, IPv6 relay only", "::", "2001:db8::7", "", "", "2001:db8::7"},
		{"IPv6 listener", "2001:db8::7", "203.0.113.7", "", "", "2001:db8::7"},
		{"IPv6 listener, other IPv6 relay", "2001:db8::7", "203.0.113.7", "2001:db8::8", "", "2001:db8::8"},
		{"IPv4 listener behind 1:1 NAT", "10.0.0.7", "203.0.113.7", "", "", "203.0.113.7"},
		{"public host name", "::", "203.0.113.7", "2001:db8::7", "turn.example.net", "turn.example.net"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := TURNOptions{PublicHost: tc.publicHost}
			if tc.relay4 != "" {
				o.RelayAddress = mustAddr(tc.relay4)
			}
			if tc.relay6 != "" {
				o.RelayAddress6 = mustAddr(tc.relay6)
			}
			got := o.urlHosts(mustAddr(tc.listen))
			if want := splitFields(tc.want); !slices.Equal(got, want) {
				t.Fatalf("hosts %q, want %q", got, want)
			}
		})
	}
}

func splitFields(s string) []string {
	var out []string
	for _, f := range bytes.Fields([]byte(s)) {
		out = append(out, string(f))
	}
	return out
}

// TestListenNetwork: an IPv4 address listens IPv4 only (Go opens
// "0.0.0.0" dual-stack on "tcp"/"udp"), "::" both families, a specific
// IPv6 address IPv6 only.
func TestListenNetwork(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:7443":       "tcp4",
		"203.0.113.7:7443":   "tcp4",
		"[::]:7443":          "tcp",
		"[2001:db8::1]:7443": "tcp6",
		"[::1]:0":            "tcp6",
		"coord.example:7443": "tcp",
	} {
		if got := listenNetwork("tcp", addr); got != want {
			t.Errorf("listenNetwork(tcp, %s) = %s, want %s", addr, got, want)
		}
	}
	// The behaviour the mapping prevents: an IPv4 wildcard on plain "tcp"
	// also accepts IPv6.
	ln, err := net.Listen(listenNetwork("tcp", "0.0.0.0:0"), "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if c, err := net.DialTimeout("tcp6", fmt.Sprintf("[::1]:%d", port), time.Second); err == nil {
		c.Close()
		t.Fatal("a listener on 0.0.0.0 accepted an IPv6 connection")
	}
}

// TestTURNCredentialsOverIPv6: a coordinator whose STUN/TURN listeners are
// on an IPv6 address announces IPv6 URLs on the session, pion parses them,
// and the handed-out credentials allocate through them.
func TestTURNCredentialsOverIPv6(t *testing.T) {
	testutil.LeakCheck(t)
	listenUDP(t, "udp6", "[::1]:0") // skips without IPv6
	m := newTestMesh(t)
	c := m.startCoord(t, "coord-1", 200, nil, func(o *CoordinatorOptions) {
		turnTweak(o)
		o.TURN.UDPAddr, o.TURN.TCPAddr, o.TURN.TLSAddr = "[::1]:0", "[::1]:0", "127.0.0.1:0"
		o.TURN.RelayAddress6 = mustAddr("::1")
		o.TURN.ExternalURLs = nil
	})
	a := m.startClient(t, m.creds(t, "node-a", 1), []string{c.addr()})
	creds := waitTURNCredentials(t, a)
	var schemes []string
	for _, u := range creds.URLs {
		uri, err := stun.ParseURI(u)
		if err != nil {
			t.Fatalf("URL %q: %v", u, err)
		}
		host := mustAddr(uri.Host)
		if want := mustAddr("::1"); uri.Scheme != stun.SchemeTypeTURNS && host != want {
			t.Errorf("URL %q: host %v, want %v (the listener serves IPv6 only)", u, host, want)
		}
		schemes = append(schemes, uri.Scheme.String()+"/"+uri.Proto.String()+"@"+map[bool]string{true: "6", false: "4"}[host.Is6()])
	}
	if want := []string{"stun/udp@6", "turn/udp@6", "turn/tcp@6", "turns/tcp@4"}; !slices.Equal(schemes, want) {
		t.Fatalf("URLs %v: %v, want %v", creds.URLs, schemes, want)
	}
	uri, _ := stun.ParseURI(creds.URLs[1])
	server := net.JoinHostPort(uri.Host, fmt.Sprint(uri.Port))
	relay, err := allocateAs(t, listenUDP(t, "udp6", "[::1]:0"), server, creds.Username, creds.Password, 0)
	if err != nil {
		t.Fatalf("allocation through %s: %v", server, err)
	}
	if a := relay.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); a != mustAddr("::1") {
		t.Fatalf("relayed address %v, want ::1", a)
	}
}

// waitTURNCredentials waits for the TURN credentials of a's session.
func waitTURNCredentials(t *testing.T, a *testClient) TURNCredentials {
	t.Helper()
	var creds TURNCredentials
	testutil.WaitFor(t, 5*time.Second, "TURN credentials on the session", func() bool {
		var ok bool
		creds, ok = a.TURNCredentials()
		return ok
	})
	return creds
}
