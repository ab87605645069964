package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/meshd/meshd/internal/testutil"
)

// tcpChannelData is ChannelData as it goes over TCP: padded to 4 bytes.
func tcpChannelData(n uint16, payload []byte) []byte {
	b := channelData(n, payload)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// TestStreamPermissionAnswers: the answers to permission requests in a
// TURN-over-TCP stream are found whatever the chunks Read returns, past
// ChannelData (padded) and large STUN messages.
func TestStreamPermissionAnswers(t *testing.T) {
	big, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		stun.RawAttribute{Type: stun.AttrData, Value: bytes.Repeat([]byte{7}, 1000)})
	if err != nil {
		t.Fatal(err)
	}
	refused := netip.MustParseAddr("192.0.2.1")
	for _, chunk := range []int{1, 2, 3, 5, 7, 64, 1500, 1 << 16} {
		req := createPermission(t, refused)
		var stream []byte
		stream = append(stream, tcpChannelData(0x4000, []byte("odd"))...)
		stream = append(stream, big.Raw...)
		stream = append(stream, tcpChannelData(0x4001, nil)...)
		stream = append(stream, tcpChannelData(0x4001, bytes.Repeat([]byte{1}, 1300))...)
		stream = append(stream, permissionError(t, req, stun.CodeForbidden)...)
		conn := &scriptConn{}
		for b := stream; len(b) > 0; b = b[min(chunk, len(b)):] {
			conn.chunks = append(conn.chunks, b[:min(chunk, len(b))])
		}
		fx := &streamFixture{s: newTurnStream(conn, nil, nil), conn: conn}
		if _, err := fx.s.Write(req.Raw); err != nil {
			t.Fatal(err)
		}
		if got := fx.readAll(t); !bytes.Equal(got, stream) {
			t.Fatalf("chunks of %d: the stream reached pion changed", chunk)
		}
		if _, err := fx.s.Write(createPermission(t, refused).Raw); !errors.Is(err, errPermissionRefused) {
			t.Errorf("chunks of %d: a request after the 403: %v, want errPermissionRefused", chunk, err)
		}
	}
}

// countingConn counts the CreatePermission requests written through it.
type countingConn struct {
	net.Conn
	requests atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	if len(p) >= 2 && binary.BigEndian.Uint16(p[0:2]) == stunCreatePermission {
		c.requests.Add(1)
	}
	return c.Conn.Write(p)
}

// TestTCPRelayPermissionBackoff: over TURN over TCP (what a UDP-blocked
// node uses), pion's client asks for a permission again on every write to
// a peer the server refuses; with turnStream only the first request goes
// out, for a 403 (the server's peer policy) as for another error (443: an
// IPv6 peer on an IPv4 allocation), and the writes fail at once.
func TestTCPRelayPermissionBackoff(t *testing.T) {
	testutil.LeakCheck(t)
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	key := turn.GenerateAuthKey("user", "meshd.test", "pass")
	srv, err := turn.NewServer(turn.ServerConfig{
		Realm:       "meshd.test",
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) { return ra.Username, key, true },
		ListenerConfigs: []turn.ListenerConfig{{
			Listener:              ln,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{RelayAddress: net.IPv4(127, 0, 0, 1), Address: "127.0.0.1"},
			PermissionHandler:     func(_ net.Addr, peer net.IP) bool { return !peer.Equal(net.IPv4(192, 0, 2, 1)) },
		}},
		LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for _, tc := range []struct {
		name string
		peer *net.UDPAddr
		wrap bool
		want int32
	}{
		{"403, unwrapped (pion alone)", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9}, false, 20},
		{"403", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 9}, true, 1},
		{"443", &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 9}, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			cc := &countingConn{Conn: raw}
			var conn net.Conn = cc
			if tc.wrap {
				conn = &turnStream{Conn: cc}
			}
			c, err := turn.NewClient(&turn.ClientConfig{
				STUNServerAddr: ln.Addr().String(), TURNServerAddr: ln.Addr().String(),
				Conn: turn.NewSTUNConn(conn), Username: "user", Password: "pass", Realm: "meshd.test", LoggerFactory: lf,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Listen(); err != nil {
				t.Fatal(err)
			}
			relay, err := c.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			defer relay.Close()
			for range 20 {
				if _, err := relay.WriteTo([]byte("check"), tc.peer); err == nil {
					t.Fatal("a write to a refused peer succeeded")
				}
			}
			if got := cc.requests.Load(); got != tc.want {
				t.Errorf("%d CreatePermission requests for 20 writes, want %d", got, tc.want)
			}
			if tc.wrap {
				_, err := relay.WriteTo([]byte("check"), tc.peer)
				if !errors.Is(err, errPermissionRefused) {
					t.Errorf("write during the back-off: %v, want errPermissionRefused", err)
				}
			}
		})
	}
}
