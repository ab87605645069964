package tunnel

/* Which relay carries a relayed link
 *
 * A link gathers a relay candidate on every TURN server the daemon lists:
 * the coordinators' and the member relays of the registry. The round trip
 * of a relayed pair is the sum of the legs through its relay (this node →
 * relay → peer and back), which ICE measures on every pair it keeps
 * checking. While the link is relayed and no direct pair qualifies, the
 * path policy (path.go) moves it to another relayed pair that is clearly
 * faster: its RTT at most relayGainRatio of the selected pair's and at
 * least relayGainMin lower, continuously (the same pair, alive, the
 * fastest) for UpgradeHold. The margin and the hold are the hysteresis: two
 * relays of about the same RTT never trade the link, and a single fast
 * sample moves nothing. A relay that dies is left by the path-failed rule
 * (the best alive pair, lowest RTT first) or relayLost (relayfail.go).
 *
 * Capacity: a member relay refuses allocations beyond its announced
 * capacity (486), so a full relay yields no candidate and the links that
 * gather later use the others.
 */

import "time"

// PathReasonRelay: the link was relayed and another relayed pair has
// answered for UpgradeHold with a clearly lower RTT (a better relay).
const PathReasonRelay = "better_relay"

const (
	// relayGainRatio and relayGainMin: how much faster another relayed
	// pair must be to take the link.
	relayGainRatio = 0.7
	relayGainMin   = 5 * time.Millisecond
)

// relayChoice is the path policy's memory of a faster relayed pair.
type relayChoice struct {
	key   string    // the pair that has been clearly faster
	since time.Time // since when, continuously
}

// clearlyFaster reports whether a pair of RTT cand should replace one of
// RTT sel (both measured).
func clearlyFaster(cand, sel time.Duration) bool {
	return cand > 0 && sel > 0 && float64(cand) <= relayGainRatio*float64(sel) && sel-cand >= relayGainMin
}

// betterRelay returns the relayed pair to move a healthy relayed selected
// pair to, or nil: the fastest alive relayed pair, once it has been that and
// clearly faster than sel for UpgradeHold.
func (p *pathPolicy) betterRelay(now time.Time, v pairsView, sel *pairView, t Timers) *pairView {
	var best *pairView
	for i := range v.pairs {
		pv := &v.pairs[i]
		if pv.key == sel.key || !pv.relayed() || !clearlyFaster(pv.rtt, sel.rtt) {
			continue
		}
		if _, alive := p.aliveSince[pv.key]; !alive {
			continue
		}
		if best == nil || pv.rtt < best.rtt {
			best = pv
		}
	}
	switch {
	case best == nil:
		p.relay = relayChoice{}
		return nil
	case p.relay.key != best.key:
		p.relay = relayChoice{key: best.key, since: now}
		return nil
	case now.Sub(p.relay.since) < t.UpgradeHold:
		return nil
	}
	p.relay = relayChoice{}
	return best
}
