package tunnel

/* Path selection (controlling side only)
 *
 * pion's agent keeps checking every candidate pair of a connected session
 * (WithAutomaticRenomination is enabled only for that: its own switching
 * rule never fires, see session.go) and its controlled side follows any
 * renomination. This file owns the switching rule, evaluated on the link's
 * run goroutine every KeepaliveInterval/3:
 *
 *   - a pair is alive if one of its checks was answered within PathTimeout;
 *   - if the selected pair is dead (and was selected at least PathTimeout
 *     ago), move to the best alive pair: direct before relay, then lower RTT
 *     (a dead direct path reaches the relay within about
 *     PathTimeout + KeepaliveInterval/3 + one round trip);
 *   - if the selected pair is relayed and a direct pair has been alive for
 *     UpgradeHold, move to it;
 *   - if the selected pair is direct over IPv4 and a direct IPv6 pair has
 *     been alive for UpgradeHold with an RTT no worse (rttNotWorse), move
 *     to it, once per session: after that only a dead pair moves the link,
 *     so it never flaps between families (a dead IPv6 pair falls back to
 *     the best alive one, IPv4 included, and stays there);
 *   - among pairs of one rank, IPv6 wins over IPv4 when its RTT is no
 *     worse, else the lower RTT wins;
 *   - after a renomination, wait for it to take effect (or PathTimeout).
 *
 * DTLS is unaffected: ice.Conn stays the same object across pair changes.
 */

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pion/ice/v4"
)

// pairView is one candidate pair as the policy and Status see it.
type pairView struct {
	key           string // local candidate ID "|" remote candidate ID
	localID       string
	remoteID      string
	local, remote Candidate
	state         ice.CandidatePairState
	nominated     bool
	selected      bool
	rtt           time.Duration
	lastResponse  time.Time
	lastRequest   time.Time // the peer's last check received on the pair
}

func (p *pairView) relayed() bool { return p.local.Type == "relay" || p.remote.Type == "relay" }

// v6 reports whether the pair's datagrams travel over IPv6 (the remote
// address's family; a relayed pair's is the relay's side).
func (p *pairView) v6() bool {
	a := p.remote.Addr.Addr()
	return a.Is6() && !a.Is4In6()
}

// rttNotWorse reports whether an IPv6 pair's RTT v6 is no worse than an
// IPv4 pair's v4: within an eighth of it plus a millisecond (the noise of
// single checks). An unmeasured RTT (0) is never "no worse".
func rttNotWorse(v6, v4 time.Duration) bool {
	return v6 > 0 && v4 > 0 && v6 <= v4+v4/8+time.Millisecond
}

func (p *pairView) path() Path {
	if p == nil {
		return PathNone
	}
	if p.relayed() {
		return PathRelay
	}
	return PathDirect
}

// rank orders pairs for selection: host-host, other direct, relayed.
func (p *pairView) rank() int {
	switch {
	case p.relayed():
		return 2
	case p.local.Type == "host" && p.remote.Type == "host":
		return 0
	default:
		return 1
	}
}

// better reports whether p should be preferred to q.
func (p *pairView) better(q *pairView) bool {
	if q == nil {
		return true
	}
	if p.rank() != q.rank() {
		return p.rank() < q.rank()
	}
	if p.v6() != q.v6() {
		v6, v4 := p, q
		if q.v6() {
			v6, v4 = q, p
		}
		v6Wins := rttNotWorse(v6.rtt, v4.rtt) || (v4.rtt == 0 && v6.rtt > 0)
		return v6Wins == p.v6()
	}
	pr, qr := p.rtt, q.rtt
	if pr == 0 {
		pr = time.Hour
	}
	if qr == 0 {
		qr = time.Hour
	}
	return pr < qr
}

type pairsView struct {
	pairs []pairView
}

func (v pairsView) selectedPair() *pairView {
	for i := range v.pairs {
		if v.pairs[i].selected {
			return &v.pairs[i]
		}
	}
	return nil
}

func (v pairsView) status() []PairStatus {
	if len(v.pairs) == 0 {
		return nil
	}
	out := make([]PairStatus, 0, len(v.pairs))
	for _, p := range v.pairs {
		out = append(out, PairStatus{
			Local: p.local, Remote: p.remote, State: p.state.String(),
			Nominated: p.nominated, Selected: p.selected, RTT: p.rtt, LastResponse: p.lastResponse,
		})
	}
	return out
}

// readPairs collects the agent's candidate pairs with their candidates.
// Safe from any goroutine; a closed agent yields an empty view.
func readPairs(a *ice.Agent) pairsView {
	stats := a.GetCandidatePairsStats()
	if len(stats) == 0 {
		return pairsView{}
	}
	sel, hasSel := a.GetSelectedCandidatePairStats()
	cands := make(map[string]Candidate)
	for _, c := range a.GetLocalCandidatesStats() {
		cands["l"+c.ID] = candidateFromStats(c)
	}
	for _, c := range a.GetRemoteCandidatesStats() {
		cands["r"+c.ID] = candidateFromStats(c)
	}
	v := pairsView{pairs: make([]pairView, 0, len(stats))}
	for _, s := range stats {
		v.pairs = append(v.pairs, pairView{
			key:          s.LocalCandidateID + "|" + s.RemoteCandidateID,
			localID:      s.LocalCandidateID,
			remoteID:     s.RemoteCandidateID,
			local:        cands["l"+s.LocalCandidateID],
			remote:       cands["r"+s.RemoteCandidateID],
			state:        s.State,
			nominated:    s.Nominated,
			selected:     hasSel && s.LocalCandidateID == sel.LocalCandidateID && s.RemoteCandidateID == sel.RemoteCandidateID,
			rtt:          time.Duration(s.CurrentRoundTripTime * float64(time.Second)),
			lastResponse: s.LastResponseTimestamp,
			lastRequest:  s.LastRequestReceivedTimestamp,
		})
	}
	return v
}

func candidateFromStats(c ice.CandidateStats) Candidate {
	out := Candidate{Type: c.CandidateType.String(), RelayProtocol: c.RelayProtocol}
	if ip, err := netip.ParseAddr(c.IP); err == nil && c.Port >= 0 && c.Port <= 65535 {
		out.Addr = netip.AddrPortFrom(ip.Unmap(), uint16(c.Port))
	}
	return out
}

// pathPolicy is the switching rule's memory. Owned by the run goroutine.
type pathPolicy struct {
	aliveSince map[string]time.Time
	selKey     string    // selected pair at the last evaluation
	selAt      time.Time // when it became selected (as observed)
	pending    string    // pair renominated to, until it is selected
	pendingAt  time.Time
	familyDone bool        // the one IPv4-to-IPv6 move of this session is spent
	relay      relayChoice // a faster relayed pair (relaychoice.go)
}

func (p *pathPolicy) reset() { *p = pathPolicy{} }

// grace treats the selected pair as just selected: after an idle spell its
// last answer is old because it was not asked, not because it is dead.
func (p *pathPolicy) grace(now time.Time) {
	p.selAt, p.pending = now, ""
}

// decide returns the pair to renominate to, and why (a PathReason), or nil.
func (p *pathPolicy) decide(now time.Time, v pairsView, t Timers) (*pairView, string) {
	if p.aliveSince == nil {
		p.aliveSince = make(map[string]time.Time)
	}
	alive := func(pv *pairView) bool {
		return !pv.lastResponse.IsZero() && now.Sub(pv.lastResponse) <= t.PathTimeout
	}
	present := make(map[string]bool, len(v.pairs))
	for i := range v.pairs {
		pv := &v.pairs[i]
		present[pv.key] = true
		if alive(pv) {
			if _, ok := p.aliveSince[pv.key]; !ok {
				p.aliveSince[pv.key] = now
			}
		} else {
			delete(p.aliveSince, pv.key)
		}
	}
	for k := range p.aliveSince {
		if !present[k] {
			delete(p.aliveSince, k)
		}
	}

	sel := v.selectedPair()
	if sel == nil {
		return nil, ""
	}
	if sel.key != p.selKey {
		p.selKey, p.selAt = sel.key, now
		if sel.key == p.pending {
			p.pending = ""
		}
	}
	if p.pending != "" && now.Sub(p.pendingAt) < t.PathTimeout {
		return nil, ""
	}
	p.pending = ""

	var best *pairView
	if alive(sel) || now.Sub(p.selAt) < t.PathTimeout {
		if !sel.relayed() {
			if best = p.preferV6(now, v, sel, t); best == nil {
				return nil, ""
			}
			p.pending, p.pendingAt = best.key, now
			return best, PathReasonIPv6
		}
		for i := range v.pairs {
			pv := &v.pairs[i]
			since, ok := p.aliveSince[pv.key]
			if pv.relayed() || !ok || now.Sub(since) < t.UpgradeHold || !pv.better(best) {
				continue
			}
			best = pv
		}
		if best == nil {
			if best = p.betterRelay(now, v, sel, t); best == nil { // relaychoice.go
				return nil, ""
			}
			p.pending, p.pendingAt = best.key, now
			return best, PathReasonRelay
		}
		p.pending, p.pendingAt = best.key, now
		return best, PathReasonDirect
	}
	for i := range v.pairs {
		pv := &v.pairs[i]
		if pv.key == sel.key || !alive(pv) || !pv.better(best) {
			continue
		}
		best = pv
	}
	if best == nil {
		return nil, ""
	}
	p.pending, p.pendingAt = best.key, now
	return best, PathReasonFailed
}

// preferV6 returns the direct IPv6 pair to move a healthy direct IPv4
// selected pair to (the lowest RTT of those alive for UpgradeHold whose
// RTT is no worse), or nil; at most once per session.
func (p *pathPolicy) preferV6(now time.Time, v pairsView, sel *pairView, t Timers) *pairView {
	if p.familyDone || sel.v6() {
		return nil
	}
	var best *pairView
	for i := range v.pairs {
		pv := &v.pairs[i]
		since, ok := p.aliveSince[pv.key]
		if pv.relayed() || !pv.v6() || !ok || now.Sub(since) < t.UpgradeHold || !rttNotWorse(pv.rtt, sel.rtt) {
			continue
		}
		if best == nil || pv.rtt < best.rtt {
			best = pv
		}
	}
	if best != nil {
		p.familyDone = true
	}
	return best
}

// renominate asks the (controlling) agent to nominate target. pion's
// RenominateCandidate reads the agent's check list, which its task loop
// owns; UpdateOptions runs option functions on that loop, so the call is
// made from there.
func renominate(a *ice.Agent, target *pairView) error {
	locals, err := a.GetLocalCandidates()
	if err != nil {
		return err
	}
	remotes, err := a.GetRemoteCandidates()
	if err != nil {
		return err
	}
	var local, remote ice.Candidate
	for _, c := range locals {
		if c.ID() == target.localID {
			local = c
		}
	}
	for _, c := range remotes {
		if c.ID() == target.remoteID {
			remote = c
		}
	}
	if local == nil || remote == nil {
		return ice.ErrCandidatePairNotFound
	}
	return a.UpdateOptions(func(agent *ice.Agent) error {
		return agent.RenominateCandidate(local, remote)
	})
}

// relayServerFor names the TURN server behind a relayed pair: the
// configured URL whose host is the relay address and whose transport is the
// one the allocation really uses (the local candidate's RelayProtocol: a
// server is often listed over UDP and over TCP), else the relay address
// itself.
func relayServerFor(p *pairView, servers []ICEServer) string {
	if p == nil || !p.relayed() {
		return ""
	}
	c := p.remote
	if p.local.Type == "relay" {
		c = p.local
		label := ""
		for _, s := range servers {
			u, err := parseICEURL(s)
			if err != nil || (u.Scheme.String() != "turn" && u.Scheme.String() != "turns") {
				continue
			}
			ip, err := netip.ParseAddr(u.Host)
			if err != nil || ip.Unmap() != c.Addr.Addr() {
				continue
			}
			// host:port/transport reads like the peer-side form below; the
			// full URL is in the daemon's config.
			transport := u.Proto.String()
			if u.Scheme.String() == "turns" {
				transport = "tls"
			}
			l := netip.AddrPortFrom(ip.Unmap(), uint16(u.Port)).String() + "/" + transport
			if c.RelayProtocol == "" || transport == c.RelayProtocol {
				return l
			}
			if label == "" {
				label = l
			}
		}
		if label != "" {
			// No URL of that transport on the relay's host (pion's
			// candidate says otherwise): the server, with the transport
			// the allocation uses.
			return label[:strings.LastIndexByte(label, '/')+1] + c.RelayProtocol
		}
	}
	if !c.Addr.IsValid() {
		return ""
	}
	// The peer's relay: all we know is the address it relays from.
	return c.Addr.Addr().String() + ":" + strconv.Itoa(int(c.Addr.Port())) + " (peer's relay)"
}
