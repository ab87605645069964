package tunnel

/* Quiet when idle
 *
 * pion's agent paces its checks with options that cannot change after it is
 * built, and once connected it sends a check on every candidate pair each
 * KeepaliveInterval, whether or not the link carries anything: ~8 packets/s
 * per idle link. meshd therefore drives a connected link's liveness itself
 * and keeps two speeds:
 *
 *   active  while data records flow (or within IdleAfter of the last one):
 *           every check pion wants goes out, every KeepaliveInterval, on
 *           every pair; loss is noticed and the path moves as before
 *           (PathTimeout, DisconnectedTimeout, FailedTimeout).
 *   idle    no data record either way for IdleAfter and the selected pair
 *           answered within PathTimeout: the controlling side lets one
 *           check on the selected pair out per IdleKeepalive; every other
 *           check (other pairs, the controlled side's own) is withheld by
 *           the session's idleGate where pion writes it (the shared socket,
 *           the relay sockets, TURN over TCP). One request and its answer
 *           per IdleKeepalive refresh NAT mappings on both ends.
 *
 * An idle link wakes (becomes active at once) when a data record is sent or
 * received, when the peer checks a pair from another address than the
 * selected pair's (it roamed, or its side is active and this side must
 * answer with triggered checks), or when its selected pair (or a pair
 * that is the same path on the wire: the gate cannot tell their checks
 * apart, selectedHeard) has not been heard from for IdleKeepalive +
 * 2*PathTimeout (a lost keepalive: probe
 * fast and let the normal failure handling decide). It stays active for at
 * least IdleAfter. pion's own disconnected/failed timers
 * are off (they would fire on every idle link); liveness (below) replaces
 * them with the same thresholds, measured from the later of the last packet
 * heard on the selected pair and the moment the link last woke.
 *
 * The idleTracker and liveness are pure (time passed in) and run on the
 * link's run goroutine each path tick; the gate is read by whatever
 * goroutine pion writes from, so it is atomics only.
 */

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshd/meshd/internal/stunwire"
)

// Default idle timers. IdleKeepalive is 20 s: home routers and carrier NATs
// forget a UDP mapping after as little as 25-30 s of silence (Linux
// conntrack's unreplied timeout is 30 s), so a keepalive must come sooner;
// one exchange per 20 s plus a tick of jitter stays under 25 s. IdleAfter is
// long enough that a chatty application (a poll every few seconds) keeps
// fast failure detection, short enough that a quiet mesh is quiet within
// seconds.
const (
	defaultIdleAfter     = 10 * time.Second
	defaultIdleKeepalive = 20 * time.Second
)

// idleTracker decides when a connected link is idle. Owned by the run
// goroutine.
type idleTracker struct {
	idle        bool
	lastData    time.Time // when the data counters last moved
	activeSince time.Time // when the link last became active
	idleSince   time.Time // when it last became idle
	count       uint64    // data records sent+received at the last observation
}

// reset starts tracking a newly connected link as active.
func (t *idleTracker) reset(now time.Time, count uint64) {
	*t = idleTracker{lastData: now, activeSince: now, count: count}
}

// observe takes the link's data record count (sent plus received), the
// last time a packet was heard on the selected pair and the last check the
// peer sent from another address, and returns whether the link is idle now
// and whether it just woke up. A link stays active for IdleAfter after its
// last data record and after it woke.
func (t *idleTracker) observe(now time.Time, count uint64, heard, elsewhere time.Time, tm Timers) (idle, woke bool) {
	wake := func() (bool, bool) {
		t.idle, t.activeSince = false, now
		return false, true
	}
	if count != t.count {
		t.count, t.lastData = count, now
		if t.idle {
			return wake()
		}
	}
	if t.idle {
		if heard.IsZero() || now.Sub(heard) > idleWakeAfter(tm) || elsewhere.After(t.idleSince) {
			return wake()
		}
		return true, false
	}
	quiet := now.Sub(t.lastData) >= tm.IdleAfter && now.Sub(t.activeSince) >= tm.IdleAfter
	if quiet && !heard.IsZero() && now.Sub(heard) <= tm.PathTimeout && !elsewhere.After(now.Add(-tm.PathTimeout)) {
		t.idle, t.idleSince = true, now
	}
	return t.idle, false
}

// idleWakeAfter is how long an idle link's selected pair may stay silent
// before the link wakes to check it fast: one keepalive interval, plus a
// PathTimeout for the keepalive's own scheduling (pion's tick, the far
// side's idle entry) and one for its round trip.
func idleWakeAfter(tm Timers) time.Duration { return tm.IdleKeepalive + 2*tm.PathTimeout }

// liveness is what pion's disconnected/failed timers would say of the
// selected pair: heard is the last packet from its remote candidate, since
// the moment the link last woke (silence while idle is expected and does
// not count).
func liveness(now, heard, since time.Time, tm Timers) ice.ConnectionState {
	if heard.Before(since) {
		heard = since
	}
	silent := now.Sub(heard)
	switch {
	case silent > tm.DisconnectedTimeout+tm.FailedTimeout:
		return ice.ConnectionStateFailed
	case silent > tm.DisconnectedTimeout:
		return ice.ConnectionStateDisconnected
	default:
		return ice.ConnectionStateConnected
	}
}

// idleGate is one session's filter on the checks pion writes. The run
// goroutine sets it; pion's writers (any goroutine) ask it.
type idleGate struct {
	controlling bool
	interval    time.Duration // IdleKeepalive

	idle     atomic.Bool
	selRelay atomic.Bool                    // the selected pair's local candidate is relayed
	selDst   atomic.Pointer[netip.AddrPort] // the selected pair's remote address (direct pairs)
	last     atomic.Int64                   // unix nanos of the last check let out while idle
	withheld atomic.Uint64
	now      func() time.Time
}

func newIdleGate(controlling bool, interval time.Duration) *idleGate {
	return &idleGate{controlling: controlling, interval: interval, now: time.Now}
}

// setIdle switches the gate. On entering idle the first keepalive is due
// half an interval later: the far side last heard from this side up to a
// PathTimeout before (it may have gone idle first), and its wake deadline
// counts from then.
func (g *idleGate) setIdle(idle bool) {
	if idle && !g.idle.Load() {
		g.last.Store(g.now().Add(-g.interval / 2).UnixNano())
	}
	g.idle.Store(idle)
}

// setSelected records the selected pair the idle keepalive goes to.
func (g *idleGate) setSelected(dst netip.AddrPort, relayed bool) {
	g.selRelay.Store(relayed)
	g.selDst.Store(&dst)
}

// allow reports whether a binding request of this session may go out: to
// dst through the shared socket (relayed false), or through a TURN relay
// (relayed true; dst is the peer address when the TURN framing names it,
// else invalid).
func (g *idleGate) allow(dst netip.AddrPort, relayed bool) bool {
	if !g.idle.Load() {
		return true
	}
	if !g.controlling || relayed != g.selRelay.Load() {
		g.withheld.Add(1)
		return false
	}
	if sel := g.selDst.Load(); dst.IsValid() && (sel == nil || *sel != dst) {
		g.withheld.Add(1)
		return false
	}
	now := g.now().UnixNano()
	last := g.last.Load()
	if now-last < int64(g.interval) || !g.last.CompareAndSwap(last, now) {
		g.withheld.Add(1)
		return false
	}
	return true
}

// idleGates maps a session's local ICE ufrag to its gate.
type idleGates struct{ m sync.Map }

func (gs *idleGates) add(ufrag string, g *idleGate) { gs.m.Store(ufrag, g) }
func (gs *idleGates) remove(ufrag string)           { gs.m.Delete(ufrag) }

// allow applies the gate of the session that wrote b, when b is one of its
// binding requests (through a relay: wrapped in TURN framing). Anything
// else passes.
func (gs *idleGates) allow(b []byte, dst netip.AddrPort, relayed bool) bool {
	if relayed {
		var peer netip.AddrPort
		if b, peer = unwrapTURN(b); b == nil {
			return true
		}
		dst = peer
	}
	ufrag, ok := requestUfrag(b)
	if !ok {
		return true
	}
	v, ok := gs.m.Load(ufrag)
	if !ok {
		return true
	}
	return v.(*idleGate).allow(dst, relayed)
}

// gateOf returns the gate of the session whose binding request b is,
// wrapped in TURN framing.
func (gs *idleGates) gateOf(b []byte) (*idleGate, bool) {
	inner, _ := unwrapTURN(b)
	if inner == nil {
		return nil, false
	}
	ufrag, ok := requestUfrag(inner)
	if !ok {
		return nil, false
	}
	v, ok := gs.m.Load(ufrag)
	if !ok {
		return nil, false
	}
	return v.(*idleGate), true
}

// needsPeer reports whether the session needs a TURN permission for peer
// now: always while active; while idle only for its selected relayed pair.
func (g *idleGate) needsPeer(peer netip.AddrPort) bool {
	if !g.idle.Load() {
		return true
	}
	sel := g.selDst.Load()
	return g.selRelay.Load() && sel != nil && sel.Addr() == peer.Addr()
}

// Bounds of the STUN parsing below (RFC 8489, RFC 8656).
const (
	stunBindingRequest   = 0x0001
	stunSendIndication   = 0x0016
	stunAttrUsername     = 0x0006
	stunAttrData         = 0x0013
	maxICEUsername       = 513 // RFC 8489: USERNAME < 513 bytes
	channelDataHeaderLen = 4
	stunMagicCookie      = 0x2112a442
)

// requestUfrag returns the local ufrag of an ICE binding request meshd
// sends (USERNAME "remote:local"), reading only as far as the attribute.
func requestUfrag(b []byte) (string, bool) {
	if len(b) < stunHeaderLen || binary.BigEndian.Uint16(b[0:2]) != stunBindingRequest ||
		binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return "", false
	}
	v, ok := stunAttr(b, stunAttrUsername)
	if !ok || len(v) > maxICEUsername {
		return "", false
	}
	_, local, ok := strings.Cut(string(v), ":")
	return local, ok && local != ""
}

// unwrapTURN returns the datagram a TURN client frame carries to a peer:
// a ChannelData payload (peer unknown), or a Send indication's DATA (and
// its XOR-PEER-ADDRESS). nil if b is neither.
func unwrapTURN(b []byte) ([]byte, netip.AddrPort) {
	if len(b) < channelDataHeaderLen {
		return nil, netip.AddrPort{}
	}
	if ch := binary.BigEndian.Uint16(b[0:2]); ch >= 0x4000 && ch <= 0x7fff {
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if channelDataHeaderLen+n > len(b) {
			return nil, netip.AddrPort{}
		}
		return b[channelDataHeaderLen : channelDataHeaderLen+n], netip.AddrPort{}
	}
	if len(b) < stunHeaderLen || binary.BigEndian.Uint16(b[0:2]) != stunSendIndication ||
		binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
		return nil, netip.AddrPort{}
	}
	data, ok := stunAttr(b, stunAttrData)
	if !ok {
		return nil, netip.AddrPort{}
	}
	var peer netip.AddrPort
	if v, ok := stunAttr(b, stunwire.AttrXORPeerAddress); ok {
		peer, _ = stunwire.XORAddr(b, v) // either family
	}
	return data, peer
}

// stunAttr returns the value of the first attribute of type typ in the STUN
// message b (a slice of b).
func stunAttr(b []byte, typ uint16) (v []byte, ok bool) {
	stunwire.WalkAttrs(b, func(t uint16, val []byte) {
		if !ok && t == typ {
			v, ok = val, true
		}
	})
	return v, ok
}
