package tunnel

/* Opening this side's firewall for a direct path (controlled side)
 *
 * pion's controlled agent stops checking candidate pairs once one is
 * selected; only the controlling side goes on checking them (path.go). A
 * candidate of the peer that arrives after a relayed pair was selected
 * then leaves its pair "waiting" here for good, and if this host sits
 * behind a stateful firewall (or a NAT that filters by address) the
 * controlling side's checks to it die there: nothing from this side ever
 * went out to that address. The link stays relayed although a direct path
 * exists (seen in the lab as public-host-with-firewall ↔ address-restricted
 * cone, relayed for a whole minute).
 *
 * So while the controlled side's link is relayed, it sends a STUN Binding
 * indication from the shared socket to the peer's direct candidates whose
 * pairs have not succeeded, every punchEvery while the link is not idle
 * (idle.go). The datagram opens this side's
 * firewall for the peer's next check; the peer's ICE mux drops the
 * indication. At most punchTargetsMax candidates, each a few dozen bytes.
 */

import (
	"net"
	"net/netip"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
)

const (
	punchEvery      = 2 * time.Second
	punchTargetsMax = 8
)

// punchMsg is the datagram: a STUN Binding indication with a fingerprint.
var punchMsg = stun.MustBuild(stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.TransactionID, stun.Fingerprint).Raw

// punchTargets lists the remote addresses of direct pairs that have not
// succeeded (and not failed): where a datagram from this side could open
// a path the peer's checks cannot yet reach.
func punchTargets(v pairsView) []netip.AddrPort {
	var out []netip.AddrPort
	for i := range v.pairs {
		p := &v.pairs[i]
		if p.relayed() || !p.remote.Addr.IsValid() {
			continue
		}
		switch p.state {
		case ice.CandidatePairStateSucceeded, ice.CandidatePairStateFailed:
			continue
		}
		dup := false
		for _, a := range out {
			dup = dup || a == p.remote.Addr
		}
		if !dup && len(out) < punchTargetsMax {
			out = append(out, p.remote.Addr)
		}
	}
	return out
}

// punch sends the indications when this side is controlled and its link is
// relayed (see the top of this file). Runs on the link's goroutine.
func (l *Link) punch(now time.Time) {
	o := &l.o
	s := o.sess
	if s == nil || o.controlling || o.idle.idle || l.m.muxc == nil || now.Sub(s.lastPunch) < punchEvery {
		// An idle link does not look for a better path (idle.go).
		return
	}
	v := readPairs(s.agent)
	if sel := v.selectedPair(); sel == nil || !sel.relayed() {
		return
	}
	s.lastPunch = now
	for _, a := range punchTargets(v) {
		_, _ = l.m.muxc.WriteTo(punchMsg, net.UDPAddrFromAddrPort(a))
	}
}
