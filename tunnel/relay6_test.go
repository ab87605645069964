package tunnel

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/turn/v5"

	"github.com/meshd/meshd/internal/testutil"
)

// startLoopbackTURN6 is a pion TURN server on ::1 over UDP, relaying
// from relay (IPv6 or IPv4 loopback); strict keeps RFC 6156's IPv4 default
// for requests that name no family. It returns the server's address.
func startLoopbackTURN6(t testing.TB, relay net.IP, strict bool) string {
	t.Helper()
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	key := turn.GenerateAuthKey("user", "meshd.test", "pass")
	s, err := turn.NewServer(turn.ServerConfig{
		Realm: "meshd.test",
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			return ra.Username, key, ra.Username == "user"
		},
		PacketConnConfigs: []turn.PacketConnConfig{{PacketConn: pc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{RelayAddress: relay, Address: relay.String()}}},
		StrictAddressFamily: strict,
		LoggerFactory:       lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return pc.LocalAddr().String()
}

// TestRelayFastPathIPv6: two nodes relayed through a TURN server reached
// over IPv6 (relayed addresses IPv6 too) send their records as ChannelData
// on the batched IPv6 relay socket, in both directions.
func TestRelayFastPathIPv6(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 90*time.Second)
	srv := startLoopbackTURN6(t, net.IPv6loopback, false)
	servers := []ICEServer{{URL: "turn:" + srv + "?transport=udp", Username: "user", Password: "pass"}}
	ab, ba, atA, atB := relayedPair(t, func(o *Options) {
		o.ListenAddr = netip.IPv6Loopback()
		o.Servers = func() []ICEServer { return servers }
	})
	for _, l := range []*Link{ab, ba} {
		st := l.Status()
		if st.Path != PathRelay || !st.Local.Addr.Addr().Is6() || !st.Remote.Addr.Addr().Is6() {
			t.Fatalf("%s: path %v %v -> %v, want relayed over IPv6", st.Peer, st.Path, st.Local, st.Remote)
		}
		if fc := l.route.Load().relay.(*relayFast).fc.Load(); !fc.v6 {
			t.Fatalf("%s: the relay socket is not IPv6", st.Peer)
		}
	}
	for _, dir := range []struct {
		name string
		from *Link
		into *batchCollector
	}{{"a-to-b", ab, atB}, {"b-to-a", ba, atA}} {
		const batch = 32
		bufs := make([][]byte, batch)
		round := 0
		testutil.WaitFor(t, 10*time.Second, dir.name+": a batch delivered whole", func() bool {
			round++
			for i := range bufs {
				bufs[i] = packet(fmt.Sprintf("%s-%d-%d-%01200d", dir.name, round, i, 0))
			}
			_, _ = dir.from.WriteBatch(bufs, HeaderRoom)
			return dir.into.largest() > 1 && dir.into.has(fmt.Sprintf("%s-%d-%d-%01200d", dir.name, round, batch-1, 0))
		})
		if !fastRelayReady(dir.from) {
			t.Errorf("%s: the link left the fast relay path", dir.name)
		}
	}
}

// TestRelayIPv4OverIPv6: a relay socket on [::] (the node's port on both
// families) asks its TURN server for the RFC 6156 default, an IPv4 relayed
// address, though it reaches the server over IPv6: that is where an
// IPv6-only node meets an IPv4-only one. The server here relays IPv4 only,
// as RFC 6156 servers do when the request names no family.
func TestRelayIPv4OverIPv6(t *testing.T) {
	testutil.LeakCheck(t)
	srv := startLoopbackTURN6(t, net.IPv4(127, 0, 0, 1), true)
	var foreign atomic.Uint64
	host, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	rn := &relayNet{Net: fastRelayNet{host}, guard: newRelayGuard(&foreign, nil)}
	conn, err := rn.ListenPacket("udp6", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	client, err := turn.NewClient(&turn.ClientConfig{
		Conn: conn, TURNServerAddr: srv, Username: "user", Password: "pass", Realm: "meshd.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { client.Close(); _ = conn.Close() }()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relayed, err := client.Allocate()
	if err != nil {
		t.Fatalf("allocation over IPv6 (the server relays IPv4 only): %v", err)
	}
	defer relayed.Close()
	if a := relayed.LocalAddr().(*net.UDPAddr); a.IP.To4() == nil {
		t.Fatalf("relayed address %v, want IPv4", a)
	}
}
