package tunnel

import "time"

// A remote candidate is the peer's to choose, and each one makes this node
// send STUN binding requests to the address it names (per local candidate,
// per check interval) and keep state for it. So the peer's candidates are
// bounded: a session takes at most maxRemoteCandidates distinct ones, and
// new ones are paced per peer by a token bucket that outlives sessions, so
// starting sessions in a loop does not lift the bound. What is refused is
// counted (Stats.CandidatesDropped) and logged once per peer.
const (
	// maxRemoteCandidates bounds the distinct remote candidates of one
	// session. A peer has a handful: a host candidate per uplink address,
	// server-reflexive ones, and a relayed one per TURN URL.
	maxRemoteCandidates = 32
	// candidateBurst and candidateRate are the per-peer token bucket of new
	// remote candidates: a burst of two full sessions, then candidateRate
	// per second, well above what backed-off restarts need.
	candidateBurst = 2 * maxRemoteCandidates
	candidateRate  = 8
)

// candVerdict is what remoteCandLimit.admit decided.
type candVerdict uint8

const (
	candNew       candVerdict = iota // add it
	candDuplicate                    // already added in this session: a no-op
	candOverCap                      // the session holds maxRemoteCandidates
	candOverRate                     // the peer's bucket is empty
)

// remoteCandLimit is a link's bound on remote candidates. Owned by the run
// goroutine.
type remoteCandLimit struct {
	gen    uint64              // session generation seen holds candidates of
	seen   map[string]struct{} // that session's added candidates; at most maxRemoteCandidates
	tokens float64
	last   time.Time // last refill; zero = never (a full bucket)
}

// admit decides on candidate str for session gen at now, and takes a token
// when it is new.
func (r *remoteCandLimit) admit(gen uint64, str string, now time.Time) candVerdict {
	if r.seen == nil || r.gen != gen {
		r.gen, r.seen = gen, make(map[string]struct{}, 8)
	}
	if _, ok := r.seen[str]; ok {
		return candDuplicate
	}
	if len(r.seen) >= maxRemoteCandidates {
		return candOverCap
	}
	if r.last.IsZero() {
		r.tokens = candidateBurst
	} else if d := now.Sub(r.last); d > 0 {
		r.tokens = min(candidateBurst, r.tokens+d.Seconds()*candidateRate)
	}
	r.last = now
	if r.tokens < 1 {
		return candOverRate
	}
	r.tokens--
	r.seen[str] = struct{}{}
	return candNew
}
