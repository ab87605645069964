package discovery

import (
	"crypto"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// relayTweak is turnTweak with relay ports of its own, so two coordinators
// on one host never pick the same one.
func relayTweak(lo uint16) coordTweak {
	return func(o *CoordinatorOptions) {
		turnTweak(o)
		o.TURN.RelayPortMin, o.TURN.RelayPortMax = lo, lo+499
		o.TURN.ExternalURLs = nil
	}
}

// udpTURNHost is the host:port of the first turn:…?transport=udp URL in urls.
func udpTURNHost(urls []string) string {
	for _, u := range urls {
		if h, ok := strings.CutPrefix(u, "turn:"); ok && strings.HasSuffix(h, "?transport=udp") {
			return strings.TrimSuffix(h, "?transport=udp")
		}
	}
	return ""
}

// With two coordinators sharing a TURN secret, a node's credentials list
// its own coordinator's URLs first, then the other's relay, and allocate on
// both embedded servers; when the other coordinator leaves, its relay is
// dropped from the node's credentials.
func TestClusterTURNCredentialsListEveryRelay(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c1 := m.startCoord(t, "coord-1", 200, nil, relayTweak(42000))
	c2 := m.startCoord(t, "coord-2", 201, []string{c1.GossipAddr()}, relayTweak(42500))
	a := m.startClient(t, m.creds(t, "node-a", 1), []string{c1.addr()})

	own, other := c1.TURNURLs(), c2.turn.relayURLs()
	if len(other) == 0 {
		t.Fatalf("coord-2 announces no relay: %v", c2.TURNURLs())
	}
	var creds TURNCredentials
	testutil.WaitFor(t, 10*time.Second, "node-a's credentials list coord-2's relay", func() bool {
		var ok bool
		creds, ok = a.TURNCredentials()
		return ok && len(creds.URLs) > len(own) && slices.Contains(creds.URLs, other[0])
	})
	if !slices.Equal(creds.URLs[:len(own)], own) || !slices.Equal(creds.URLs[len(own):], other) {
		t.Fatalf("URLs %v: want coord-1's %v, then coord-2's relays %v", creds.URLs, own, other)
	}
	for _, c := range []*testCoord{c1, c2} {
		host := udpTURNHost(c.TURNURLs())
		relay, tc, err := turnAllocate(t, udpConn(t), host, creds.Username, creds.Password)
		if err != nil {
			t.Fatalf("%s: allocation with coord-1's credentials: %v", c.name, err)
		}
		_ = relay.Close()
		tc.Close()
	}

	_ = c2.Close()
	testutil.WaitFor(t, 10*time.Second, "coord-2's relay dropped from node-a's credentials", func() bool {
		creds, _ = a.TURNCredentials()
		return slices.Equal(creds.URLs, own)
	})
}

func TestMergeURLsKeepsOwnFirstWithinTheLimit(t *testing.T) {
	own := make([]string, 10)
	for i := range own {
		own[i] = "turn:192.0.2.1:" + string(rune('a'+i))
	}
	var others []string
	for i := range 10 {
		others = append(others, "turn:"+netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String()+":3478")
	}
	got := mergeURLs(own, append([]string{own[0]}, others...))
	if len(got) != maxTURNURLs || !slices.Equal(got[:10], own) || !slices.Equal(got[10:], others[:6]) {
		t.Fatalf("merged %v", got)
	}
}

// A Relays message is installed only with a valid signature by the key of
// the certificate its sender proved; one that arrives before the proof
// waits for it, and leaving forgets it.
func TestRelaysMessageAuthenticated(t *testing.T) {
	m := newTestMesh(t)
	other := m.coordCreds(t, "coord-2", 201)
	forger := m.coordCreds(t, "coord-3", 202)
	c := &Coordinator{
		name: "coord-1", label: "meshd/test", log: (&logBuf{}).logger(),
		peers: map[string]*peerSender{"coord-2": {}}, trusted: map[string]*pki.NodeCert{}, helloSent: map[string]time.Time{},
		memberRelays: map[string][]string{}, pendingRelays: map[string]gossipMsg{}, sessions: map[string]*session{},
	}
	urls := []string{"turn:198.51.100.2:3478?transport=udp"}
	msg := func(key crypto.Signer, to string, at time.Time, signed []string) gossipMsg {
		t.Helper()
		sig, err := pki.SignMessage(key, relaysSigned(c.label, "coord-2", to, at.UnixNano(), signed))
		if err != nil {
			t.Fatal(err)
		}
		g, err := decodeGossip(encodeGossipRelays("coord-2", to, at.UnixNano(), urls, sig))
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	now := time.Now()
	c.handleRelays(msg(other.Key, "coord-1", now, urls)) // before coord-2's Hello: kept
	if len(c.memberRelays) != 0 || len(c.pendingRelays) != 1 {
		t.Fatalf("unproven member's relays: installed %v, pending %d", c.memberRelays, len(c.pendingRelays))
	}
	c.trusted["coord-2"] = other.Cert
	c.acceptRelays(c.pendingRelays["coord-2"], now)
	if !slices.Equal(c.otherRelayURLs(), urls) {
		t.Fatalf("proven member's relays: %v", c.otherRelayURLs())
	}
	c.forgetRelays("coord-2")
	for _, tc := range []struct {
		name string
		m    gossipMsg
	}{
		{"another key", msg(forger.Key, "coord-1", now, urls)},
		{"other URLs signed", msg(other.Key, "coord-1", now, []string{"turn:198.51.100.3:3478"})},
		{"addressed elsewhere", msg(other.Key, "coord-3", now, urls)},
		{"stale", msg(other.Key, "coord-1", now.Add(-2*MaxVersionSkew), urls)},
	} {
		c.handleRelays(tc.m)
		if len(c.memberRelays) != 0 {
			t.Fatalf("%s: installed %v", tc.name, c.memberRelays)
		}
	}
}
