package discovery

import (
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // the STUN long-term credential key (RFC 8489 §9.2.2)
	"crypto/sha1" //nolint:gosec // MESSAGE-INTEGRITY is HMAC-SHA1 (RFC 8489 §14.5)
	"encoding/base64"
	"encoding/binary"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

/* 401 for a bad or expired TURN credential
 *
 * pion's server answers a request whose credential its AuthHandler rejects,
 * or whose MESSAGE-INTEGRITY does not verify, with 400 Bad Request. RFC 8489
 * §9.2.4 and RFC 8656 ask for 401 Unauthorized (with REALM and NONCE), which
 * is what coturn answers and what a client reads as "get new credentials"
 * rather than "this request is malformed, never send it again".
 *
 * authConn wraps the UDP listener pion reads from. A request that carries
 * USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (the authenticated ones:
 * Allocate, Refresh, CreatePermission, ChannelBind) is checked here first
 * against the static-auth-secret scheme: an expired or unparsable username,
 * or an integrity that does not verify with the derived key, is answered
 * 401 with the realm and the request's own NONCE (pion checked nothing yet;
 * a stale NONCE will draw pion's 438 on the retry) and never reaches pion.
 * Everything else — ChannelData, indications, unauthenticated requests
 * (pion's own 401 challenge), good credentials — passes untouched, after a
 * look at the first bytes. Authenticated requests are control traffic (a
 * few per allocation and minute), so the HMAC done twice costs nothing.
 */

// maxAuthRequest bounds the STUN requests authConn inspects: larger ones
// go to pion unchecked (pion refuses them on its own).
const maxAuthRequest = 1500

// turnAuth checks TURN credentials of the static-auth-secret scheme.
type turnAuth struct {
	secret string           // the static-auth-secret; must not be empty
	realm  string           // the server's realm, sent in a 401
	now    func() time.Time // the clock expiries are judged by

	refused atomic.Uint64 // requests answered 401 here
}

// credentialOK reports whether username is unexpired and mi verifies msg
// (the message up to its MESSAGE-INTEGRITY attribute, with the header
// length covering it) under the key derived from the secret.
func (a *turnAuth) credentialOK(username, realm string, covered, mi []byte) bool {
	exp, _, _ := strings.Cut(username, ":")
	t, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || t < a.now().Unix() {
		return false
	}
	pw := hmac.New(sha1.New, []byte(a.secret))
	pw.Write([]byte(username))
	password := base64.StdEncoding.EncodeToString(pw.Sum(nil))
	key := md5.Sum([]byte(username + ":" + realm + ":" + password)) //nolint:gosec
	mac := hmac.New(sha1.New, key[:])
	mac.Write(covered)
	return hmac.Equal(mac.Sum(nil), mi)
}

// authConn is the UDP listener pion's server reads from, with bad
// credentials answered 401 before pion sees them.
type authConn struct {
	net.PacketConn
	auth *turnAuth
}

// ReadFrom returns the next datagram that is not a request with a bad
// credential; those are answered here.
func (c *authConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || n > maxAuthRequest {
			return n, addr, err
		}
		resp := c.auth.check(p[:n])
		if resp == nil {
			return n, addr, nil
		}
		_, _ = c.PacketConn.WriteTo(resp, addr)
	}
}

// STUN constants used here (RFC 8489).
const (
	authHeaderLen     = 20
	authMagicCookie   = 0x2112A442
	authAttrUsername  = 0x0006
	authAttrMI        = 0x0008
	authAttrErrorCode = 0x0009
	authAttrRealm     = 0x0014
	authAttrNonce     = 0x0015
	authAttrMISHA256  = 0x001C
	authAttrSoftware  = 0x8022
)

// check returns the 401 answer to b when b is a TURN request with a bad
// credential, nil otherwise (not a request, no credential, or a good one).
func (a *turnAuth) check(b []byte) []byte {
	if len(b) < authHeaderLen || b[0]&0xC0 != 0 || binary.BigEndian.Uint32(b[4:8]) != authMagicCookie {
		return nil
	}
	typ := binary.BigEndian.Uint16(b[0:2])
	if typ&0x0110 != 0 { // class bits: only requests (00)
		return nil
	}
	end := authHeaderLen + int(binary.BigEndian.Uint16(b[2:4]))
	if end > len(b) || end%4 != 0 {
		return nil
	}
	var username, realm, nonce, mi []byte
	miAt := -1
	for off := authHeaderLen; off+4 <= end; {
		t := binary.BigEndian.Uint16(b[off : off+2])
		l := int(binary.BigEndian.Uint16(b[off+2 : off+4]))
		if off+4+l > end {
			return nil
		}
		v := b[off+4 : off+4+l]
		switch t {
		case authAttrUsername:
			username = v
		case authAttrRealm:
			realm = v
		case authAttrNonce:
			nonce = v
		case authAttrMISHA256:
			return nil // not what pion checks either: leave it to pion
		case authAttrMI:
			if l != sha1.Size {
				return nil
			}
			mi, miAt = v, off
		}
		if miAt >= 0 {
			break
		}
		off += 4 + (l+3)&^3
	}
	if miAt < 0 || username == nil || realm == nil || nonce == nil {
		return nil // pion answers these (its 401 challenge, or 400)
	}
	// The integrity covers the message up to the attribute, with the
	// header's length as if the attribute ended the message.
	covered := make([]byte, miAt)
	copy(covered, b[:miAt])
	binary.BigEndian.PutUint16(covered[2:4], uint16(miAt+4+sha1.Size-authHeaderLen))
	if a.credentialOK(string(username), string(realm), covered, mi) {
		return nil
	}
	a.refused.Add(1)
	return unauthorized(b, typ, a.realm, nonce)
}

// unauthorized builds the 401 error response to the request b of type typ
// (same method and transaction), with REALM and NONCE.
func unauthorized(b []byte, typ uint16, realm string, nonce []byte) []byte {
	const reason = "Unauthorized"
	out := make([]byte, authHeaderLen, authHeaderLen+64+len(realm)+len(nonce))
	binary.BigEndian.PutUint16(out[0:2], typ|0x0110) // error response class
	copy(out[4:20], b[4:20])
	attr := func(t uint16, v []byte) {
		var h [4]byte
		binary.BigEndian.PutUint16(h[0:2], t)
		binary.BigEndian.PutUint16(h[2:4], uint16(len(v)))
		out = append(out, h[:]...)
		out = append(out, v...)
		for len(out)%4 != 0 {
			out = append(out, 0)
		}
	}
	attr(authAttrErrorCode, append([]byte{0, 0, 4, 1}, reason...))
	attr(authAttrRealm, []byte(realm))
	attr(authAttrNonce, nonce)
	attr(authAttrSoftware, []byte("meshd"))
	binary.BigEndian.PutUint16(out[2:4], uint16(len(out)-authHeaderLen))
	return out
}
