// Package turnauthtest sends single TURN requests to a server and reads
// their answers, for tests of what a server answers a credential.
package turnauthtest

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// Allocate sends one Allocate to server from conn and returns the answer.
// With username "" the request carries no credential (the server's
// challenge); otherwise USERNAME, REALM, NONCE and MESSAGE-INTEGRITY from
// password.
func Allocate(t testing.TB, conn net.PacketConn, server net.Addr, username, password, realm, nonce string) *stun.Message {
	t.Helper()
	setters := []stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}}
	if username != "" {
		setters = append(setters, stun.NewUsername(username), stun.NewRealm(realm), stun.NewNonce(nonce),
			stun.NewLongTermIntegrity(username, realm, password))
	}
	setters = append(setters, stun.Fingerprint)
	req, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteTo(req.Raw, server); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer to the Allocate: %v", err)
		}
		res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if err := res.Decode(); err != nil {
			t.Fatalf("undecodable answer: %v", err)
		}
		if res.TransactionID == req.TransactionID {
			return res
		}
	}
}

// ErrorCode is m's ERROR-CODE, 0 when m is not an error response.
func ErrorCode(t testing.TB, m *stun.Message) int {
	t.Helper()
	if m.Type.Class != stun.ClassErrorResponse {
		return 0
	}
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(m); err != nil {
		t.Fatalf("error response without ERROR-CODE: %v", err)
	}
	return int(code.Code)
}

// Check401 fails t unless m is a 401 that carries REALM realm and a NONCE
// (RFC 8489 §9.2.4).
func Check401(t testing.TB, m *stun.Message, realm string) {
	t.Helper()
	if got := ErrorCode(t, m); got != 401 {
		t.Fatalf("answered %d (%v), want 401", got, m)
	}
	var r stun.Realm
	var n stun.Nonce
	if r.GetFrom(m) != nil || r.String() != realm || n.GetFrom(m) != nil || n.String() == "" {
		t.Fatalf("401 without the realm %q and a NONCE: %v", realm, m)
	}
}
