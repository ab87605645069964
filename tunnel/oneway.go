package tunnel

/* One-way paths
 *
 * A NAT in front of the peer can forget the mapping the selected pair runs
 * on (its conntrack flushed, a router reboot, a CGNAT timeout) while the
 * peer keeps sending. The peer's packets then reach this node from a new
 * address: pion learns it as a peer-reflexive candidate and answers the
 * peer's checks there (so the peer's side of the pair looks alive), and
 * through a relay it even credits the peer's data to the selected pair.
 * But what this side sends still goes to the forgotten mapping and is
 * dropped. The controlling side sees no fault and the controlled one
 * cannot renominate. Before this rule such a link waited for ICE's
 * timers (DisconnectedTimeout + FailedTimeout, 10 s by default) and, while
 * the peer's relayed data kept arriving, for ever (a relayed pair whose
 * peer sat behind a flushed symmetric NAT: over a minute in the lab).
 *
 * The proof that a pair carries this side's packets is an answer to this
 * side's own checks (both roles check the selected pair every
 * KeepaliveInterval). oneWay fires when the peer checks the selected
 * pair's socket from a new, peer-reflexive address but those answers
 * stopped for
 * PathTimeout + KeepaliveInterval: one check later than the controlling
 * side's path policy moves a link off a pair that stopped answering, so a
 * policy move (which changes the selected pair on both sides) goes first.
 * The link then restarts ICE: the new session's checks run from the
 * peer's current address.
 */

import (
	"errors"
	"time"
)

// ErrPathOneWay: the peer's packets arrived but the selected pair stopped
// carrying this side's, so the link restarted ICE.
var ErrPathOneWay = errors.New("tunnel: the selected pair stopped carrying this side's packets (the peer's address changed)")

// oneWay reports whether the selected pair only works towards this side:
// the peer checked the pair's socket from a new, peer-reflexive mapping
// within PathTimeout, but none of this side's checks on the pair was
// answered for PathTimeout + KeepaliveInterval since the later of the
// last answer and since: when the link became active (an idle link sends
// no checks, so its silence does not count) or its selected pair changed
// (the controlled side checks only the selected pair, so a pair the peer
// moved the link to may have no answer of this side's yet). The peer's
// data alone is no proof of a new mapping: pion credits it to the
// selected pair whichever pair it came by.
func oneWay(now time.Time, pt pairTimes, since time.Time, t Timers) bool {
	if pt.rebound.IsZero() || now.Sub(pt.rebound) >= t.PathTimeout {
		return false
	}
	return now.Sub(latest(pt.answered, since)) >= t.PathTimeout+t.KeepaliveInterval
}

// latest is the later of a and b.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
