package discovery

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/internal/turnauth/turnauthtest"
)

// TestTURNAuth401: the embedded TURN server answers a request whose
// credential is expired, or whose password is wrong, with 401 Unauthorized
// carrying REALM and NONCE (RFC 8489 §9.2.4, as coturn does) — pion alone
// answers 400, which a client reads as "malformed, never retry" rather than
// "get new credentials" — on its UDP, TCP and TLS listeners alike, and
// counts each one. A good credential still allocates.
func TestTURNAuth401(t *testing.T) {
	testutil.LeakCheck(t)
	svc, err := newTURNService(TURNOptions{
		Secret:           testTURNSecret,
		Realm:            "meshd",
		UDPAddr:          "127.0.0.1:0",
		TCPAddr:          "127.0.0.1:0",
		TLSAddr:          "127.0.0.1:0",
		RelayAddress:     netip.MustParseAddr("127.0.0.1"),
		RelayBindAddress: "127.0.0.1",
		RelayPortMin:     43000,
		RelayPortMax:     43099,
	}, tlsCertForTest(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	// The listeners by transport, and a client connection to each: TCP and
	// TLS framed by pion's STUNConn, as a pion client's are.
	servers := map[string]net.Addr{}
	for _, u := range svc.urls {
		uri, err := stun.ParseURI(u)
		if err != nil || uri.Scheme == stun.SchemeTypeSTUN {
			continue
		}
		hp := net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port))
		switch {
		case uri.Scheme == stun.SchemeTypeTURNS:
			servers["tls"], _ = net.ResolveTCPAddr("tcp", hp)
		case uri.Proto == stun.ProtoTypeTCP:
			servers["tcp"], _ = net.ResolveTCPAddr("tcp", hp)
		default:
			servers["udp"], _ = net.ResolveUDPAddr("udp", hp)
		}
	}
	dial := func(t *testing.T, transport string) net.PacketConn {
		t.Helper()
		var c net.Conn
		var err error
		switch transport {
		case "udp":
			return udpConn(t)
		case "tcp":
			c, err = net.Dial("tcp", servers["tcp"].String())
		case "tls":
			c, err = tls.Dial("tcp", servers["tls"].String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // what is answered is tested, not who answers
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return turn.NewSTUNConn(c)
	}

	now := time.Now()
	goodUser, goodPass := turnCredentials(testTURNSecret, "node-a", now.Add(time.Hour))
	expiredUser, expiredPass := turnCredentials(testTURNSecret, "node-a", now.Add(-time.Minute))
	tests := []struct {
		name, user, pass string
		want             int
	}{
		{"expired", expiredUser, expiredPass, 401},
		{"wrong password", goodUser, "not-the-password", 401},
		{"other secret", goodUser, func() string { _, p := turnCredentials("other", "node-a", now.Add(time.Hour)); return p }(), 401},
		{"not the scheme", "node-a", "x", 401},
		{"good", goodUser, goodPass, 0},
	}
	for _, transport := range []string{"udp", "tcp", "tls"} {
		t.Run(transport, func(t *testing.T) {
			server := servers[transport]
			if server == nil {
				t.Fatalf("no %s listener in %v", transport, svc.urls)
			}
			challenge := turnauthtest.Allocate(t, dial(t, transport), server, "", "", "", "")
			var nonce stun.Nonce
			if turnauthtest.ErrorCode(t, challenge) != 401 || nonce.GetFrom(challenge) != nil {
				t.Fatalf("unauthenticated Allocate: %v, want pion's 401 challenge with a NONCE", challenge)
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					refused := svc.auth.Refused()
					res := turnauthtest.Allocate(t, dial(t, transport), server, tt.user, tt.pass, "meshd", nonce.String())
					if tt.want == 401 {
						turnauthtest.Check401(t, res, "meshd")
						if got := svc.auth.Refused() - refused; got != 1 {
							t.Errorf("%d refusals counted, want 1", got)
						}
					} else if got := turnauthtest.ErrorCode(t, res); got != tt.want {
						t.Fatalf("Allocate answered %d (%v), want %d", got, res, tt.want)
					}
				})
			}
		})
	}
}

// TestTURNCredentialsDroppedWithoutTURN: a node whose session moves to a
// coordinator that hands out no TURN credentials (its TURN is off) stops
// offering the previous coordinator's TURN URLs to ICE, rather than trying
// a dead or disabled relay until the old credentials expire (issue 18).
func TestTURNCredentialsDroppedWithoutTURN(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	withTURN := m.startCoord(t, "coord-1", 200, nil, func(o *CoordinatorOptions) {
		o.TURN = TURNOptions{Secret: testTURNSecret, ExternalURLs: []string{"turn:turn.example.net:3478"}}
	})
	noTURN := m.startCoord(t, "coord-2", 201, nil)
	a := m.startClient(t, m.creds(t, "node-a", 1), []string{withTURN.addr(), noTURN.addr()})
	testutil.WaitFor(t, 5*time.Second, "credentials from coord-1", func() bool {
		cr, ok := a.TURNCredentials()
		return ok && len(cr.URLs) == 1
	})
	_ = withTURN.Close()
	testutil.WaitFor(t, 10*time.Second, "coord-1's TURN URLs dropped after the failover to coord-2", func() bool {
		cr, _ := a.TURNCredentials()
		return len(cr.URLs) == 0
	})
}
