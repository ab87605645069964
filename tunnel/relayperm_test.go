package tunnel

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func createPermission(t testing.TB, peers ...netip.Addr) *stun.Message {
	t.Helper()
	m := stun.New()
	m.Type = stun.NewType(stun.MethodCreatePermission, stun.ClassRequest)
	m.TransactionID = stun.NewTransactionID()
	m.WriteHeader()
	for _, p := range peers {
		ip := p.AsSlice()
		if err := (stun.XORMappedAddress{IP: ip, Port: 0}).AddToAs(m, stun.AttrXORPeerAddress); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func permissionError(t testing.TB, req *stun.Message, code stun.ErrorCode) []byte {
	t.Helper()
	m, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID),
		stun.NewType(stun.MethodCreatePermission, stun.ClassErrorResponse), code)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// TestPermissionsRefused: once the TURN server refused a peer (403), new
// permission requests for it fail at once instead of going out on every
// check round (the storm the idle lab saw); other errors and other peers
// are unaffected, and the refusal expires.
func TestPermissionsRefused(t *testing.T) {
	now := time.Unix(6_000_000, 0)
	private := netip.MustParseAddr("10.0.2.2")
	public := netip.MustParseAddr("198.51.100.14")
	var ps permissions

	req := createPermission(t, private)
	if err := ps.check(req.Raw, now); err != nil {
		t.Fatalf("first request: %v", err)
	}
	ps.answer(permissionError(t, req, stun.CodeForbidden), now)
	if err := ps.check(createPermission(t, private).Raw, now.Add(time.Second)); !errors.Is(err, errPermissionRefused) {
		t.Fatalf("request for a refused peer: %v, want errPermissionRefused", err)
	}
	if err := ps.check(createPermission(t, public).Raw, now.Add(time.Second)); err != nil {
		t.Fatalf("request for another peer: %v", err)
	}
	if err := ps.check(createPermission(t, private).Raw, now.Add(refusedTTL+time.Second)); err != nil {
		t.Fatalf("after refusedTTL: %v", err)
	}

	// An answer to a request never seen refuses nothing.
	var ps2 permissions
	ps2.answer(permissionError(t, createPermission(t, public), stun.CodeForbidden), now)
	if err := ps2.check(createPermission(t, public).Raw, now); err != nil {
		t.Fatalf("after a stray 403: %v", err)
	}
	// Other TURN messages pass untouched.
	if err := ps.check(bindingRequest(t, "r:l"), now); err != nil {
		t.Fatal(err)
	}
}

// TestPermissionsBackoff: an error answer other than 403 (coturn's 400,
// 486 quota, 508 capacity) holds new requests for that peer — 1 s, then
// doubling with every further error up to a minute — instead of letting
// every check round ask again (issue 18: ~8 requests a second, all
// refused); a success clears the count; 401 and 438 are left to pion's own
// retry with the server's fresh NONCE.
func TestPermissionsBackoff(t *testing.T) {
	now := time.Unix(8_000_000, 0)
	peer := netip.MustParseAddr("198.51.100.17")
	other := netip.MustParseAddr("198.51.100.16")
	var ps permissions
	ask := func(at time.Time, p netip.Addr) (*stun.Message, error) {
		req := createPermission(t, p)
		return req, ps.check(req.Raw, at)
	}
	fail := func(at time.Time, code stun.ErrorCode) {
		t.Helper()
		req, err := ask(at, peer)
		if err != nil {
			t.Fatalf("request at +%v: %v", at.Sub(now), err)
		}
		ps.answer(permissionError(t, req, code), at)
	}
	held := func(at time.Time) bool {
		_, err := ask(at, peer)
		return errors.Is(err, errPermissionRefused)
	}

	at := now
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		fail(at, stun.CodeBadRequest)
		if !held(at.Add(want - time.Millisecond)) {
			t.Fatalf("400 #%d: not held for %v", i+1, want)
		}
		if _, err := ask(at, other); err != nil {
			t.Fatalf("400 #%d: another peer held too: %v", i+1, err)
		}
		at = at.Add(want)
		if held(at) {
			t.Fatalf("400 #%d: still held after %v", i+1, want)
		}
	}
	for range 10 {
		fail(at, stun.CodeInsufficientCapacity)
		at = at.Add(permBackoffMax)
	}
	fail(at, stun.CodeInsufficientCapacity)
	if !held(at.Add(permBackoffMax-time.Millisecond)) || held(at.Add(permBackoffMax)) {
		t.Fatalf("the back-off is not capped at %v", permBackoffMax)
	}

	// A success clears the count: the next error holds for 1 s again.
	at = at.Add(permBackoffMax)
	req, err := ask(at, peer)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.NewType(stun.MethodCreatePermission, stun.ClassSuccessResponse))
	if err != nil {
		t.Fatal(err)
	}
	ps.answer(ok.Raw, at)
	fail(at, stun.CodeBadRequest)
	if held(at.Add(time.Second)) {
		t.Fatal("after a success the back-off did not start again at 1 s")
	}

	// 401 and 438: pion retries at once with the new NONCE.
	for _, code := range []stun.ErrorCode{stun.CodeUnauthorized, stun.CodeStaleNonce} {
		var ps3 permissions
		req := createPermission(t, peer)
		if err := ps3.check(req.Raw, now); err != nil {
			t.Fatal(err)
		}
		ps3.answer(permissionError(t, req, code), now)
		if err := ps3.check(createPermission(t, peer).Raw, now); err != nil {
			t.Fatalf("after a %d: %v", code, err)
		}
	}
}

// TestPermissionsIdle: an idle session asks only for the permission of its
// selected relayed pair; an active one for any.
func TestPermissionsIdle(t *testing.T) {
	now := time.Unix(7_000_000, 0)
	sel := netip.MustParseAddrPort("198.51.100.14:40000")
	other := netip.MustParseAddr("198.51.100.13")
	g := newIdleGate(true, 20*time.Second)
	g.now = func() time.Time { return now }
	g.setSelected(sel, true)
	var ps permissions
	ps.gate.Store(g)
	if err := ps.check(createPermission(t, other).Raw, now); err != nil {
		t.Fatalf("active: %v", err)
	}
	g.setIdle(true)
	if err := ps.check(createPermission(t, other).Raw, now); !errors.Is(err, errPermissionIdle) {
		t.Fatalf("idle, unused peer: %v, want errPermissionIdle", err)
	}
	if err := ps.check(createPermission(t, sel.Addr()).Raw, now); err != nil {
		t.Fatalf("idle, the selected relayed pair's peer: %v", err)
	}
	g.setSelected(sel, false) // the selected pair is direct: no permission needed
	if err := ps.check(createPermission(t, sel.Addr()).Raw, now); !errors.Is(err, errPermissionIdle) {
		t.Fatalf("idle, direct path selected: %v, want errPermissionIdle", err)
	}
}

func FuzzXORPeerAddrs(f *testing.F) {
	f.Add(createPermission(f, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")).Raw)
	f.Add([]byte{0, 8, 0, 4, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(xorPeerAddrs(b)) > maxRelayPeers {
			t.Fatal("more peers than the bound")
		}
		var ps permissions
		_ = ps.check(b, time.Unix(0, 0))
		ps.answer(b, time.Unix(0, 0))
	})
}

// TestPermissionsRefusedBacksOff: a 403 is not kept for refusedTTL at once.
// A member relay whose registry has not arrived yet refuses every peer;
// a node that kept that first refusal for 5 minutes never used the relay
// (TestMemberRelays on a slow start stayed on the congested one). The
// first refusal holds 10 s, each further one doubles it up to refusedTTL,
// and a granted permission clears the count.
func TestPermissionsRefusedBacksOff(t *testing.T) {
	now := time.Unix(9_000_000, 0)
	peer := netip.MustParseAddr("198.51.100.11")
	var ps permissions
	ask := func(at time.Time) (*stun.Message, error) {
		req := createPermission(t, peer)
		return req, ps.check(req.Raw, at)
	}
	refuse := func(at time.Time) {
		t.Helper()
		req, err := ask(at)
		if err != nil {
			t.Fatalf("request at +%v: %v", at.Sub(now), err)
		}
		ps.answer(permissionError(t, req, stun.CodeForbidden), at)
	}
	held := func(at time.Time) bool {
		_, err := ask(at)
		return errors.Is(err, errPermissionRefused)
	}
	at := now
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, refusedTTL, refusedTTL} {
		refuse(at)
		if !held(at.Add(want - time.Millisecond)) {
			t.Fatalf("403 #%d: not held for %v", i+1, want)
		}
		at = at.Add(want)
		if held(at) {
			t.Fatalf("403 #%d: still held after %v", i+1, want)
		}
	}
	req, err := ask(at)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID),
		stun.NewType(stun.MethodCreatePermission, stun.ClassSuccessResponse))
	if err != nil {
		t.Fatal(err)
	}
	ps.answer(ok.Raw, at)
	refuse(at)
	if held(at.Add(10 * time.Second)) {
		t.Fatal("after a granted permission, the next 403 still held longer than 10 s")
	}
}
