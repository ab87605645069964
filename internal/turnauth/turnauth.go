// Package turnauth answers a TURN request whose long-term credential does
// not verify with 401 Unauthorized, before pion's server sees it.
//
// pion's server answers a request whose credential its AuthHandler
// rejects, or whose MESSAGE-INTEGRITY does not verify, with 400 Bad
// Request. RFC 8489 §9.2.4 and RFC 8656 ask for 401 Unauthorized (with
// REALM and NONCE), which is what coturn answers and what a client reads
// as "get new credentials" rather than "this request is malformed, never
// send it again".
//
// Conn wraps the UDP listener pion reads from. A request that carries
// USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (the authenticated ones:
// Allocate, Refresh, CreatePermission, ChannelBind) is checked here first
// against the server's KeyFunc: no such user (unknown, expired, revoked,
// unparsable), or an integrity that does not verify with the user's key,
// is answered 401 with the realm and the request's own NONCE (pion checked
// nothing yet; a stale NONCE draws pion's 438 on the retry) and never
// reaches pion. Everything else — ChannelData, indications,
// unauthenticated requests (pion's own 401 challenge), good credentials —
// passes untouched, after a look at the first bytes. Authenticated
// requests are control traffic (a few per allocation and minute), so the
// key derived twice (here and in pion's AuthHandler) costs nothing.
//
// On TCP and TLS listeners a server that cuts the stream into STUN
// messages itself (discovery's turnStreamConn) calls Checker.Check with
// each whole message and writes the answer on the stream.
package turnauth

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // MESSAGE-INTEGRITY is HMAC-SHA1 (RFC 8489 §14.5)
	"encoding/binary"
	"net"
	"sync/atomic"

	"github.com/meshd/meshd/internal/stunwire"
)

// MaxRequest bounds the datagrams Conn inspects: larger ones go to pion
// unchecked (pion refuses them on its own).
const MaxRequest = 1500

// STUN attributes and classes used here (RFC 8489).
const (
	attrUsername  = 0x0006
	attrMI        = 0x0008
	attrErrorCode = 0x0009
	attrRealm     = 0x0014
	attrNonce     = 0x0015
	attrMISHA256  = 0x001C
	attrSoftware  = 0x8022

	classMask     = 0x0110 // the class bits of a message type
	classErrorRes = 0x0110
)

// KeyFunc returns the long-term key (RFC 8489 §9.2.2: MD5 of
// "username:realm:password") of username in realm, or false when there is
// no such user (unknown, expired, revoked, not of the server's scheme).
// Called concurrently, for every authenticated request; must not block.
type KeyFunc func(username, realm string) ([]byte, bool)

// Checker checks the credentials of TURN requests.
type Checker struct {
	// Immutable after NewChecker.
	realm string  // the server's realm, sent in a 401
	key   KeyFunc // must not be nil

	refused atomic.Uint64 // requests answered 401
}

// NewChecker returns a Checker of the server of realm whose users' keys
// key gives. key must not be nil.
func NewChecker(realm string, key KeyFunc) *Checker {
	return &Checker{realm: realm, key: key}
}

// Refused is the number of requests Check answered 401.
func (c *Checker) Refused() uint64 { return c.refused.Load() }

// Check returns the 401 answer to b when b is a TURN request with a bad
// credential, nil otherwise (not a request, no credential, or a good one).
// borrowed: b is only read, and only during the call.
func (c *Checker) Check(b []byte) []byte {
	typ, ok := stunwire.Type(b)
	if !ok || b[0]&0xC0 != 0 || typ&classMask != 0 { // requests only (class 00)
		return nil
	}
	var username, realm, nonce, mi []byte
	miAt := -1
	stop := false
	stunwire.WalkAttrs(b, func(t uint16, v []byte) {
		if stop {
			return // MESSAGE-INTEGRITY covers what came before it only
		}
		switch t {
		case attrUsername:
			username = v
		case attrRealm:
			realm = v
		case attrNonce:
			nonce = v
		case attrMISHA256:
			stop = true // not what pion checks either: leave it to pion
		case attrMI:
			stop = true
			if len(v) == sha1.Size {
				// v is b[miAt+4 : miAt+4+20]: its offset in b from the capacities.
				mi, miAt = v, cap(b)-cap(v)-4
			}
		}
	})
	if miAt < stunwire.HeaderLen || miAt+4+sha1.Size > len(b) || binary.BigEndian.Uint16(b[miAt:]) != attrMI ||
		username == nil || realm == nil || nonce == nil {
		return nil // pion answers these (its 401 challenge, or 400)
	}
	key, ok := c.key(string(username), string(realm))
	if ok && integrityOK(b[:miAt], key, mi) {
		return nil
	}
	c.refused.Add(1)
	return unauthorized(b, typ, c.realm, nonce)
}

// integrityOK reports whether mi is the HMAC-SHA1 under key of covered,
// the message up to its MESSAGE-INTEGRITY attribute, with the header's
// length as if the attribute ended the message (RFC 8489 §14.5).
func integrityOK(covered, key, mi []byte) bool {
	var length [2]byte
	binary.BigEndian.PutUint16(length[:], uint16(len(covered)+4+sha1.Size-stunwire.HeaderLen))
	mac := hmac.New(sha1.New, key)
	mac.Write(covered[:2])
	mac.Write(length[:])
	mac.Write(covered[4:])
	return hmac.Equal(mac.Sum(nil), mi)
}

// unauthorized builds the 401 error response to the request b of type typ
// (same method and transaction), with REALM and NONCE.
func unauthorized(b []byte, typ uint16, realm string, nonce []byte) []byte {
	const reason = "Unauthorized"
	out := make([]byte, stunwire.HeaderLen, stunwire.HeaderLen+64+len(realm)+len(nonce))
	binary.BigEndian.PutUint16(out[0:2], typ|classErrorRes)
	copy(out[4:20], b[4:20])
	attr := func(t uint16, v []byte) {
		out = binary.BigEndian.AppendUint16(out, t)
		out = binary.BigEndian.AppendUint16(out, uint16(len(v)))
		out = append(out, v...)
		for len(out)%4 != 0 {
			out = append(out, 0)
		}
	}
	attr(attrErrorCode, append([]byte{0, 0, 4, 1}, reason...))
	attr(attrRealm, []byte(realm))
	attr(attrNonce, nonce)
	attr(attrSoftware, []byte("meshd"))
	binary.BigEndian.PutUint16(out[2:4], uint16(len(out)-stunwire.HeaderLen))
	return out
}

// Conn is the UDP listener a pion TURN server reads from, with bad
// credentials answered 401 before pion sees them.
type Conn struct {
	net.PacketConn
	c *Checker
}

// NewConn wraps pc, the server's UDP listener, with c's check.
func NewConn(pc net.PacketConn, c *Checker) *Conn { return &Conn{PacketConn: pc, c: c} }

// ReadFrom returns the next datagram that is not a request with a bad
// credential; those are answered here.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || n > MaxRequest {
			return n, addr, err
		}
		resp := c.c.Check(p[:n])
		if resp == nil {
			return n, addr, nil
		}
		_, _ = c.PacketConn.WriteTo(resp, addr)
	}
}
