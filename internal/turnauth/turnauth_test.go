package turnauth

import (
	"crypto/md5" //nolint:gosec // the STUN long-term credential key (RFC 8489 §9.2.2)
	"testing"

	"github.com/pion/stun/v4"
)

// longTermKey is RFC 8489 §9.2.2's key.
func longTermKey(username, realm, password string) []byte {
	k := md5.Sum([]byte(username + ":" + realm + ":" + password)) //nolint:gosec
	return k[:]
}

// testKeys knows one user, "alice" with password "pw".
func testKeys(username, realm string) ([]byte, bool) {
	if username != "alice" {
		return nil, false
	}
	return longTermKey(username, realm, "pw"), true
}

func request(t testing.TB, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func allocate(user, realm, nonce, password string) []stun.Setter {
	return []stun.Setter{stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}},
		stun.NewUsername(user), stun.NewRealm(realm), stun.NewNonce(nonce),
		stun.NewLongTermIntegrity(user, realm, password), stun.Fingerprint}
}

// TestCheck: which datagrams Check answers 401 (with the request's method,
// transaction, the server's realm and the request's NONCE) and which it
// passes to pion untouched.
func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want bool // answered 401
	}{
		{"good credential", request(t, allocate("alice", "r", "n1", "pw")...), false},
		{"wrong password", request(t, allocate("alice", "r", "n1", "nope")...), true},
		{"no such user", request(t, allocate("bob", "r", "n1", "pw")...), true},
		{"other realm, same password", request(t, allocate("alice", "other", "n1", "pw")...), false},
		{"no credential (pion's challenge)", request(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), stun.Fingerprint), false},
		{"no NONCE", request(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), stun.NewUsername("bob"),
			stun.NewRealm("r"), stun.NewLongTermIntegrity("bob", "r", "pw")), false},
		{"indication", request(t, stun.NewType(stun.MethodSend, stun.ClassIndication), stun.NewUsername("bob"),
			stun.NewRealm("r"), stun.NewNonce("n"), stun.NewLongTermIntegrity("bob", "r", "pw")), false},
		{"success response", request(t, stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse), stun.NewUsername("bob"),
			stun.NewRealm("r"), stun.NewNonce("n"), stun.NewLongTermIntegrity("bob", "r", "pw")), false},
		{"ChannelData", []byte{0x40, 0, 0, 4, 1, 2, 3, 4}, false},
		{"short", []byte{0, 1, 0}, false},
	}
	c := NewChecker("server-realm", testKeys)
	var refused uint64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := c.Check(tt.msg)
			if (resp != nil) != tt.want {
				t.Fatalf("answer %x, want 401: %v", resp, tt.want)
			}
			if resp == nil {
				return
			}
			refused++
			m := &stun.Message{Raw: resp}
			if err := m.Decode(); err != nil {
				t.Fatal(err)
			}
			req := &stun.Message{Raw: tt.msg}
			if err := req.Decode(); err != nil {
				t.Fatal(err)
			}
			var code stun.ErrorCodeAttribute
			var realm stun.Realm
			var nonce stun.Nonce
			if m.Type != stun.NewType(req.Type.Method, stun.ClassErrorResponse) || m.TransactionID != req.TransactionID ||
				code.GetFrom(m) != nil || code.Code != 401 || realm.GetFrom(m) != nil || realm.String() != "server-realm" ||
				nonce.GetFrom(m) != nil || nonce.String() != "n1" {
				t.Fatalf("answer %v", m)
			}
		})
	}
	if c.Refused() != refused {
		t.Fatalf("Refused() = %d, answered %d", c.Refused(), refused)
	}
}

// FuzzCheck: Check never panics or reads past the datagram, and what it
// answers is a well-formed STUN error response of code 401. (It was
// discovery's FuzzTURNAuthCheck before the check moved here.)
func FuzzCheck(f *testing.F) {
	f.Add(request(f, allocate("alice", "r", "nonce", "pw")...))
	f.Add(request(f, allocate("alice", "r", "nonce", "bad")...))
	f.Add([]byte{0x40, 0, 0, 4, 1, 2, 3, 4})
	f.Add(make([]byte, 20))
	c := NewChecker("meshd", testKeys)
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := c.Check(b[:len(b):len(b)])
		if resp == nil {
			return
		}
		m := &stun.Message{Raw: resp}
		if err := m.Decode(); err != nil {
			t.Fatalf("undecodable 401: %v", err)
		}
		var code stun.ErrorCodeAttribute
		if m.Type.Class != stun.ClassErrorResponse || code.GetFrom(m) != nil || code.Code != 401 {
			t.Fatalf("answer %v is not a 401", m)
		}
	})
}
