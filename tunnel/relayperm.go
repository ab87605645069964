package tunnel

/* TURN permissions on an idle or refused path
 *
 * pion's TURN client asks for a permission (CreatePermission) before it
 * relays the first datagram to a peer address, synchronously in the
 * writer's call, and asks again on every write while it has none. Two
 * kinds of peer address never get one, yet pion's agent writes to them on
 * every check round: those the TURN server refuses by policy (403: private
 * addresses, the coordinator's own; the coordinator logs why once) and, on
 * an idle link, every pair but the selected one (the check itself is
 * withheld by the idle gate, idle.go, but the permission request comes
 * first). Measured in the lab: ~2.5 permission requests per second per
 * node, all refused, the largest share of an idle mesh's traffic.
 *
 * permissions remembers the peers the server refused (10 s, doubling with
 * each further refusal up to refusedTTL) and
 * fails new requests for them at once; and it fails requests an idle
 * session does not need.
 *
 * Other error answers back off too (RFC 8656 §9: a client must not repeat
 * a request the server rejected unchanged). 400 (an external coturn's
 * answer to a request it cannot parse or place), 437/441/442, 486 (quota)
 * and 508 (capacity) hold that peer's requests for permBackoffMin, doubling
 * with every further error up to permBackoffMax; a success clears the
 * count. 401 and 438 are pion's to handle: it retries once with the
 * server's fresh NONCE. Failing the write is what a refusal does anyway:
 * pion's client returns the error to the agent, which moves on.
 */

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/stunwire"
)

// A peer address the TURN server refused (403) stays refused here for
// refusedMin, doubling with every further refusal up to refusedTTL. Not
// refusedTTL at once: a refusal can be passing — a member relay whose
// registry has not arrived yet vouches for no one, and a node that kept
// that first 403 for 5 minutes never used the relay (TestMemberRelays on
// a slow start). A lasting policy costs a handful of requests, then one
// per refusedTTL.
const (
	refusedMin = 10 * time.Second
	refusedTTL = 5 * time.Minute
)

// permBackoffMin and permBackoffMax bound the back-off after an error
// answer other than 403 (and 401/438, which pion retries itself).
const (
	permBackoffMin = time.Second
	permBackoffMax = time.Minute
)

// maxPermTx bounds the outstanding permission requests remembered, and
// maxRefused the refused peers.
const (
	maxPermTx  = 16
	maxRefused = 64
)

// STUN/TURN message types and attributes used here (RFC 8656).
const (
	stunCreatePermission      = 0x0008
	stunCreatePermissionOK    = 0x0108
	stunCreatePermissionError = 0x0118
	stunAttrErrorCode         = 0x0009
	stunUnauthorized          = 401
	stunForbidden             = 403
	stunStaleNonce            = 438
)

var (
	errPermissionRefused = errors.New("tunnel: the TURN server refused a permission for this peer lately (backing off)")
	errPermissionIdle    = errors.New("tunnel: no TURN permission for an idle link's unused pair")
)

type permissions struct {
	gate atomic.Pointer[idleGate] // the session this allocation belongs to, once known

	mu      sync.Mutex
	pending map[[12]byte][]netip.Addr // transaction ID -> peers asked for
	refused map[netip.Addr]time.Time  // peer -> refused until
	strikes map[netip.Addr]int        // peer -> error answers in a row (back-off)
}

// check fails a permission request for a refused peer, or one the idle
// session does not need; anything else passes.
func (ps *permissions) check(b []byte, now time.Time) error {
	if len(b) < stunHeaderLen || binary.BigEndian.Uint16(b[0:2]) != stunCreatePermission ||
		binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return nil
	}
	peers := xorPeerAddrs(b)
	if len(peers) == 0 {
		return nil
	}
	if g := ps.gate.Load(); g != nil {
		need := false
		for _, p := range peers {
			need = need || g.needsPeer(netip.AddrPortFrom(p, 0))
		}
		if !need {
			return errPermissionIdle
		}
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range peers {
		if until, ok := ps.refused[p]; ok {
			if now.Before(until) {
				return errPermissionRefused
			}
			delete(ps.refused, p)
		}
	}
	if ps.pending == nil {
		ps.pending = make(map[[12]byte][]netip.Addr)
	}
	if len(ps.pending) >= maxPermTx {
		clear(ps.pending)
	}
	var tx [12]byte
	copy(tx[:], b[8:20])
	ps.pending[tx] = peers
	return nil
}

// answer notes the answer to one of the permission requests check let
// through: a 403 refuses its peers (refusedMin doubling up to
// refusedTTL), another error backs them off (permBackoffMin doubling up to
// permBackoffMax), a success clears their back-off.
func (ps *permissions) answer(b []byte, now time.Time) {
	if len(b) < stunHeaderLen || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return
	}
	code := 0
	switch binary.BigEndian.Uint16(b[0:2]) {
	case stunCreatePermissionOK:
	case stunCreatePermissionError:
		v, ok := stunAttr(b, stunAttrErrorCode)
		if !ok || len(v) < 4 {
			return
		}
		code = int(v[2]&0x07)*100 + int(v[3])
		if code == stunUnauthorized || code == stunStaleNonce {
			return // pion retries with the fresh NONCE
		}
	default:
		return
	}
	var tx [12]byte
	copy(tx[:], b[8:20])
	ps.mu.Lock()
	defer ps.mu.Unlock()
	peers, ok := ps.pending[tx]
	if !ok {
		return
	}
	delete(ps.pending, tx)
	if code == 0 {
		for _, p := range peers {
			delete(ps.strikes, p)
		}
		return
	}
	if ps.refused == nil {
		ps.refused = make(map[netip.Addr]time.Time)
		ps.strikes = make(map[netip.Addr]int)
	}
	for _, p := range peers {
		if len(ps.refused) >= maxRefused || len(ps.strikes) >= maxRefused {
			clear(ps.refused)
			clear(ps.strikes)
		}
		lo, hi := permBackoffMin, permBackoffMax
		if code == stunForbidden {
			lo, hi = refusedMin, refusedTTL
		}
		n := min(ps.strikes[p]+1, 16)
		ps.strikes[p] = n
		d := lo << (n - 1)
		if d > hi || d <= 0 {
			d = hi
		}
		ps.refused[p] = now.Add(d)
	}
}

// xorPeerAddrs returns the IPv4 and IPv6 XOR-PEER-ADDRESS values of a STUN
// message (a permission request may carry several), at most maxRelayPeers.
func xorPeerAddrs(b []byte) []netip.Addr {
	var out []netip.Addr
	stunwire.WalkAttrs(b, func(t uint16, v []byte) {
		if t != stunwire.AttrXORPeerAddress || len(out) >= maxRelayPeers {
			return
		}
		if ap, ok := stunwire.XORAddr(b, v); ok {
			out = append(out, ap.Addr())
		}
	})
	return out
}
