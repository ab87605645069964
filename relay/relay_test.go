package relay

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/internal/turnauth/turnauthtest"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

type testKey struct {
	priv crypto.PrivateKey
	pub  crypto.PublicKey
}

func newP256(t testing.TB) testKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{k, &k.PublicKey}
}

func newEd25519(t testing.TB) testKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{priv, pub}
}

// TestPasswordAgrees: requester and relay derive the same password from
// their own private key and the other's certificate key, for every key
// type pki allows; it depends on the username and the relay name; keys of
// different types are refused rather than mis-derived.
func TestPasswordAgrees(t *testing.T) {
	for _, tc := range []struct {
		name string
		gen  func(testing.TB) testKey
	}{{"ecdsa-p256", newP256}, {"ed25519", newEd25519}} {
		t.Run(tc.name, func(t *testing.T) {
			req, rel, other := tc.gen(t), tc.gen(t), tc.gen(t)
			u := Username("node-a", time.Unix(2000000000, 0))
			p1, err := Password(req.priv, rel.pub, u, "relay-1")
			if err != nil {
				t.Fatal(err)
			}
			p2, err := Password(rel.priv, req.pub, u, "relay-1")
			if err != nil {
				t.Fatal(err)
			}
			if p1 != p2 || len(p1) < 40 {
				t.Fatalf("requester %q, relay %q", p1, p2)
			}
			for _, mut := range []struct {
				what           string
				priv           crypto.PrivateKey
				pub            crypto.PublicKey
				user, relayNam string
			}{
				{"other username", req.priv, rel.pub, Username("node-a", time.Unix(2000000001, 0)), "relay-1"},
				{"other relay name", req.priv, rel.pub, u, "relay-2"},
				{"other requester key", other.priv, rel.pub, u, "relay-1"},
			} {
				p, err := Password(mut.priv, mut.pub, mut.user, mut.relayNam)
				if err != nil || p == p1 {
					t.Fatalf("%s: %q, %v", mut.what, p, err)
				}
			}
		})
	}
	// The Ed25519 → X25519 public key map agrees with the private one.
	k := newEd25519(t)
	priv, err := ecdhPrivate(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ecdhPublic(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(priv.PublicKey().Bytes(), pub.Bytes()) {
		t.Fatal("converted Ed25519 public key is not the converted private key's")
	}
	if _, err := Password(newP256(t).priv, k.pub, "1:a", "r"); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("mixed key types: %v", err)
	}
}

func TestParseUsername(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		name string
	}{
		{"2000000000:node-a", true, "node-a"},
		{"2000000000:", false, ""},
		{":node-a", false, ""},
		{"x:node-a", false, ""},
		{"-5:node-a", false, ""},
		{"node-a", false, ""},
		{"1:" + strings.Repeat("a", 100), false, ""},
	} {
		exp, name, err := parseUsername(tc.in)
		if (err == nil) != tc.ok || name != tc.name {
			t.Errorf("%q: %v %q %v", tc.in, exp, name, err)
		}
	}
}

func FuzzParseUsername(f *testing.F) {
	f.Add("2000000000:node-a")
	f.Add("99999999999999999999:x")
	f.Fuzz(func(t *testing.T, s string) {
		exp, name, err := parseUsername(s)
		if err != nil {
			return
		}
		if name == "" || len(s) > maxUsernameLen || exp.Unix() <= 0 || Username(name, exp) != s && !strings.HasPrefix(s, "0") && !strings.HasPrefix(s, "+") {
			t.Fatalf("%q parsed as %v %q", s, exp, name)
		}
	})
}

// testRelay runs a relay on loopback with one member "node-a".
type testRelay struct {
	srv          *Server
	relayKey     testKey
	memberKey    testKey
	now          time.Time // the start; the clock reads now + skew
	membersKnown map[string]crypto.PublicKey

	mu      sync.Mutex
	skew    time.Duration
	vouched []netip.Addr
}

func (tr *testRelay) advance(d time.Duration) {
	tr.mu.Lock()
	tr.skew += d
	tr.mu.Unlock()
}

func (tr *testRelay) setVouched(a ...netip.Addr) {
	tr.mu.Lock()
	tr.vouched = a
	tr.mu.Unlock()
}

func newTestRelay(t *testing.T, maxAllocs int) *testRelay {
	tr := &testRelay{relayKey: newP256(t), memberKey: newP256(t), now: time.Now()}
	tr.membersKnown = map[string]crypto.PublicKey{"node-a": tr.memberKey.pub, "node-b": newP256(t).pub}
	srv, err := New(Options{
		Name: "relay-1", Key: func() crypto.PrivateKey { return tr.relayKey.priv }, Listen: "127.0.0.1:0",
		RelayAddress: netip.MustParseAddr("127.0.0.1"), MaxAllocations: maxAllocs,
		Member: func(n string) (crypto.PublicKey, bool) {
			k, ok := tr.membersKnown[n]
			return k, ok
		},
		Vouched: func() []netip.Addr {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			return tr.vouched
		},
		Now: func() time.Time {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			return tr.now.Add(tr.skew)
		},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		AllowLoopback: true,
		interfaceAddrs: func() ([]net.Addr, error) {
			return nil, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tr.srv = srv
	t.Cleanup(func() { _ = srv.Close() })
	return tr
}

// client returns a TURN client of the relay with the given credentials.
func (tr *testRelay) client(t *testing.T, user, pass string) *turn.Client {
	return tr.clientFrom(t, "127.0.0.1", user, pass)
}

func (tr *testRelay) clientFrom(t *testing.T, ip, user, pass string) *turn.Client {
	pc, err := net.ListenPacket("udp4", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: tr.srv.Addr().String(), STUNServerAddr: tr.srv.Addr().String(),
		Username: user, Password: pass, Realm: Realm, Conn: pc, RTO: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); _ = pc.Close() })
	return c
}

func (tr *testRelay) creds(t *testing.T, name string, key testKey, exp time.Time) (string, string) {
	u := Username(name, exp)
	p, err := Password(key.priv, tr.relayKey.pub, u, "relay-1")
	if err != nil {
		t.Fatal(err)
	}
	return u, p
}

// TestServerAuth: only a registry member with its own key and an unexpired
// username allocates.
func TestServerAuth(t *testing.T) {
	testutil.LeakCheck(t)
	tr := newTestRelay(t, 0)
	good := tr.now.Add(time.Hour)
	stranger := newP256(t)
	cases := []struct {
		name string
		user func() (string, string)
		ok   bool
	}{
		{"member", func() (string, string) { return tr.creds(t, "node-a", tr.memberKey, good) }, true},
		{"expired username", func() (string, string) { return tr.creds(t, "node-a", tr.memberKey, tr.now.Add(-time.Second)) }, false},
		{"expiry beyond MaxTTL", func() (string, string) { return tr.creds(t, "node-a", tr.memberKey, tr.now.Add(MaxTTL+time.Hour)) }, false},
		{"unknown or revoked name", func() (string, string) { return tr.creds(t, "node-z", tr.memberKey, good) }, false},
		{"another member's name, own key", func() (string, string) { return tr.creds(t, "node-b", tr.memberKey, good) }, false},
		{"member's name, a stranger's key", func() (string, string) { return tr.creds(t, "node-a", stranger, good) }, false},
		{"the relay's own name", func() (string, string) { return tr.creds(t, "relay-1", tr.relayKey, good) }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, p := tc.user()
			c := tr.client(t, u, p)
			conn, err := c.Allocate()
			if (err == nil) != tc.ok {
				t.Fatalf("allocate: %v, want ok=%v", err, tc.ok)
			}
			if conn != nil {
				_ = conn.Close()
			}
		})
	}
	if st := tr.srv.Stats(); st.AllocationsMade != 1 || st.AuthRefused < uint64(len(cases)-1) {
		t.Fatalf("stats %+v", st)
	}
}

// TestServerAuth401: a bad, expired or unknown credential is answered 401
// Unauthorized with the relay's REALM and a NONCE (RFC 8489 §9.2.4), which
// a client reads as "get new credentials" — pion alone answers 400, "never
// retry" — and is counted as an auth refusal; a member's good credential
// still allocates.
func TestServerAuth401(t *testing.T) {
	testutil.LeakCheck(t)
	tr := newTestRelay(t, 0)
	server := net.UDPAddrFromAddrPort(tr.srv.Addr())
	conn := func(t *testing.T) net.PacketConn {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		return pc
	}
	challenge := turnauthtest.Allocate(t, conn(t), server, "", "", "", "")
	var nonce stun.Nonce
	if turnauthtest.ErrorCode(t, challenge) != 401 || nonce.GetFrom(challenge) != nil {
		t.Fatalf("unauthenticated Allocate: %v, want pion's 401 challenge with a NONCE", challenge)
	}
	good := tr.now.Add(time.Hour)
	stranger := newP256(t)
	tests := []struct {
		name string
		cred func() (string, string)
	}{
		{"expired", func() (string, string) { return tr.creds(t, "node-a", tr.memberKey, tr.now.Add(-time.Second)) }},
		{"unknown or revoked name", func() (string, string) { return tr.creds(t, "node-z", tr.memberKey, good) }},
		{"member's name, a stranger's key", func() (string, string) { return tr.creds(t, "node-a", stranger, good) }},
		{"not the scheme", func() (string, string) { return "node-a", "x" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, p := tt.cred()
			turnauthtest.Check401(t, turnauthtest.Allocate(t, conn(t), server, u, p, Realm, nonce.String()), Realm)
		})
	}
	if st := tr.srv.Stats(); st.AuthRefused != uint64(len(tests)) || st.AllocationsMade != 0 {
		t.Fatalf("stats %+v, want %d auth refusals", st, len(tests))
	}
	u, p := tr.creds(t, "node-a", tr.memberKey, good)
	if res := turnauthtest.Allocate(t, conn(t), server, u, p, Realm, nonce.String()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("member's Allocate: %v", res)
	}
	if st := tr.srv.Stats(); st.AuthRefused != uint64(len(tests)) || st.AllocationsMade != 1 {
		t.Fatalf("stats %+v after the member's allocation", st)
	}
}

// TestServerCapacity: allocations beyond MaxAllocations are refused (486).
func TestServerCapacity(t *testing.T) {
	testutil.LeakCheck(t)
	tr := newTestRelay(t, 2)
	u, p := tr.creds(t, "node-a", tr.memberKey, tr.now.Add(time.Hour))
	for i := range 3 {
		conn, err := tr.client(t, u, p).Allocate()
		if (err == nil) != (i < 2) {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if conn != nil {
			t.Cleanup(func() { _ = conn.Close() })
		}
	}
	if st := tr.srv.Stats(); st.QuotaRefused != 1 || st.Allocations != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestServerPeerPolicy: the relay carries datagrams to an address the mesh
// vouches for (here a member's allocation source) and to none other.
func TestServerPeerPolicy(t *testing.T) {
	testutil.LeakCheck(t)
	tr := newTestRelay(t, 0)
	u, p := tr.creds(t, "node-a", tr.memberKey, tr.now.Add(time.Hour))
	// The member allocates from 127.0.0.4 (the relay's own address is
	// 127.0.0.1): its source address is vouched for.
	conn, err := tr.clientFrom(t, "127.0.0.4", u, p).Allocate()
	if err != nil {
		t.Skipf("127.0.0.4: %v", err)
	}
	defer conn.Close()
	member, err := net.ListenPacket("udp4", "127.0.0.4:0")
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()
	outsider, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2: %v", err)
	}
	defer outsider.Close()

	// The outsider is refused at the permission already.
	if _, err := conn.WriteTo([]byte("lan probe"), outsider.LocalAddr()); err == nil {
		t.Fatal("permission for a non-vouched address granted")
	}
	// The member's address is carried.
	buf := make([]byte, 64)
	testutil.WaitFor(t, 5*time.Second, "a datagram through the relay", func() bool {
		if _, err := conn.WriteTo([]byte("hello"), member.LocalAddr()); err != nil {
			return false
		}
		_ = member.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := member.ReadFrom(buf)
		return err == nil && string(buf[:n]) == "hello"
	})
	// A vouched address (a coordinator's relay) is allowed too.
	tr.setVouched(netip.MustParseAddr("127.0.0.2"))
	tr.advance(2 * policyRefresh)
	if !tr.srv.peers.allowIP(netip.MustParseAddr("127.0.0.2")) {
		t.Fatal("vouched address refused")
	}
	if tr.srv.peers.allowIP(netip.MustParseAddr("127.0.0.3")) {
		t.Fatal("non-vouched address allowed")
	}
	// The relay counts a datagram after its write returns, which may be
	// after the member read it.
	testutil.WaitFor(t, 5*time.Second, "the relayed datagram counted", func() bool {
		st := tr.srv.Stats()
		return st.PacketsRelayed > 0 && st.BytesRelayed > 0 && st.PeersDenied > 0
	})
}

// TestPolicyOwnAddresses: the host's own addresses (the relay address is
// vouched for by itself) only on its mesh and relay ports, special
// addresses never.
func TestPolicyOwnAddresses(t *testing.T) {
	o := &Options{
		RelayAddress: netip.MustParseAddr("198.51.100.1"),
		Vouched: func() []netip.Addr {
			return []netip.Addr{netip.MustParseAddr("203.0.113.9")} // not the relay's own address
		},
		MeshPort:       func() uint16 { return 41641 },
		Now:            time.Now,
		interfaceAddrs: func() ([]net.Addr, error) { return nil, nil },
		Logger:         slog.New(slog.DiscardHandler),
	}
	p := newPolicy(o)
	for _, tc := range []struct {
		ap string
		ok bool
	}{
		{"203.0.113.9:5000", true},
		{"198.51.100.1:41641", true},
		{"198.51.100.1:22", false},
		{"198.51.100.1:50000", true}, // another allocation of this relay
		{"198.51.100.1:49151", false},
		{"203.0.113.10:5000", false},
		{"127.0.0.1:41641", false},
		{"0.0.0.0:41641", false},
		{"224.0.0.1:41641", false},
	} {
		if got := p.allowAddrPort(netip.MustParseAddrPort(tc.ap)); got != tc.ok {
			t.Errorf("%s: %v, want %v", tc.ap, got, tc.ok)
		}
	}
}
