package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// duplicate.go: two hosts with one identity (a VM cloned with its
// /etc/meshd). Without this, each host's registration superseded the
// other's session, which reconnected and superseded it back, forever: both
// failed over many times a second and the genuine node's links flapped.
//
// The rule (docs/protocol.md, "Duplicate identities"): the established
// session wins. A connection that registers a node whose session is held
// and alive is refused with CodeDuplicateIdentity, naming the holder's
// address as its coordinator sees it; nothing of the newcomer reaches the
// registry.
//
//   - Held here: this coordinator decides at once.
//   - Held by another live coordinator (the registry's presence says which):
//     the registration waits for that coordinator's answer to a DupQuery
//     (at most dupQueryTimeout, well inside the node's own patience). A
//     coordinator that cannot be reached holds nothing that matters (its
//     sessions are being marked offline): the node registers. One that is
//     reachable but does not answer in time gets the node refused as
//     overloaded (it retries elsewhere), not as a duplicate: nothing says
//     it is one.
//
// "Alive" is decided by the coordinator holding the session, the only one
// that can see it: a live node pings every keepalive interval, so a session
// silent for holderSilence (two intervals) while another connection claims
// its node is presumed dead and closed as superseded; the claimant gets in
// at its next attempt. That is what lets a node that restarted after a crash
// or roamed to a new address back in while its old session is still open
// here: within two keepalive intervals of its last ping instead of the
// three after which the session would time out anyway. A claim also sends
// the holder an unsolicited Pong (harmless to any node): if the holder's
// host rebooted, its kernel answers with a reset and the old session ends
// at once. Refusals carry a retry-after hint (when the probe will be
// decided); refused nodes back off exponentially up to a cap.
//
// Each refusal is counted (SessionsDuplicate); the refusing coordinator
// logs it once per (node, claimant host, holder) and then at debug level.

// dupQuery is a registration waiting for the coordinator that holds the
// node's session to say whether it still does.
type dupQuery struct {
	id       uint64
	s        *session
	rec      *Record // the newest record the session sent
	holder   string  // coordinator holding the session
	deadline time.Time
}

const (
	// dupQueryTimeout bounds how long a registration waits for the holder's
	// coordinator (a healthy cluster answers in milliseconds). A node waits
	// for its Welcome for its dial timeout (10 s by default).
	dupQueryTimeout = time.Second
	// dupLogTTL: a refusal already logged is logged again after this long
	// (a clone still running a day later is worth another line).
	dupLogTTL = time.Hour
	// maxDupLogged bounds the log-once memory; past it, it starts over.
	maxDupLogged = 4096
)

// holderSilence is how long a session may stay silent while another
// connection claims its node before it is presumed dead: two keepalive
// intervals, so one lost or late ping does not cost the genuine node its
// session.
func (c *Coordinator) holderSilence() time.Duration { return 2 * c.opts.KeepaliveInterval }

// refuseDuplicate decides whether s, not registered yet, may register rec:
// false lets it (no live session of the node is held anywhere known); true
// means s was refused, or waits for the answer of the coordinator holding
// the node's session (only when askRemote). Run goroutine only.
func (c *Coordinator) refuseDuplicate(s *session, rec *Record, askRemote bool) bool {
	now := time.Now()
	if old := c.sessions[rec.Name]; old != nil && old != s && !old.killed() {
		alive, retry := c.probeHolder(old, s.remote, now)
		if !alive {
			return false
		}
		c.refuse(s, old.remote, c.name, retry)
		return true
	}
	if !askRemote {
		return false
	}
	e := c.reg.get(rec.Name)
	if e == nil || e.rec.Left || !e.rec.Presence.Online || e.rec.Presence.Coordinator == c.name {
		// Online here without a session is a presence this coordinator
		// has not yet marked offline: nothing holds the node.
		return false
	}
	holder := e.rec.Presence.Coordinator
	p := c.trustedPeer(holder)
	if p == nil {
		// Not a live member (its sessions are being marked offline), or
		// not a proven coordinator, whose claim blocks nobody.
		return false
	}
	c.nextFwd++
	q := &dupQuery{id: c.nextFwd, s: s, rec: rec, holder: holder, deadline: now.Add(c.dupQueryTimeout())}
	if !p.enqueue(outMsg{msg: encodeGossipDupQuery(q.id, c.name, rec.Name, s.remote), fwdID: q.id}) {
		c.unverified(s, holder)
		return true
	}
	c.dupQueries[q.id] = q
	s.dupQuery = q
	s.log.Debug("node's session is held by another coordinator; asking it", "holderCoordinator", holder)
	return true
}

func (c *Coordinator) dupQueryTimeout() time.Duration {
	return min(dupQueryTimeout, c.opts.HandshakeTimeout/4)
}

// probeHolder reports whether the established session s is alive now that a
// connection from claimant claims its node, and when that will be decided if
// it cannot tell yet. A session already silent for holderSilence is
// presumed dead and dropped here. Run goroutine only.
func (c *Coordinator) probeHolder(s *session, claimant string, now time.Time) (alive bool, retry time.Duration) {
	last := time.Unix(0, s.lastRead.Load())
	until := last.Add(c.holderSilence())
	if !now.Before(until) {
		c.presumeDead(s, now)
		return false, 0
	}
	if s.probeStart.IsZero() || last.After(s.probeStart) {
		s.probeStart = now
		c.probing[s] = struct{}{}
		// A host that rebooted answers this with a reset.
		s.send(pingFrame(framePong, 0))
		s.log.Debug("another connection claims this node; watching its session", "claimant", claimant, "silentFor", now.Sub(last).Round(time.Millisecond))
	}
	// One sweep after the decision, so that the retry finds it made.
	return true, until.Sub(now) + c.opts.SweepInterval
}

// checkProbes decides the running probes: a session that sent anything
// since its node was claimed is alive; one silent for holderSilence is
// presumed dead. Called by sweep.
func (c *Coordinator) checkProbes(now time.Time) {
	for s := range c.probing {
		if c.sessions[s.name] != s || s.killed() {
			delete(c.probing, s)
			s.probeStart = time.Time{}
			continue
		}
		last := time.Unix(0, s.lastRead.Load())
		switch {
		case last.After(s.probeStart):
			delete(c.probing, s)
			s.probeStart = time.Time{}
			s.log.Debug("claimed session is alive: it kept its session")
		case !now.Before(last.Add(c.holderSilence())):
			c.presumeDead(s, now)
		}
	}
}

// presumeDead closes an established session that stayed silent while
// another connection claimed its node; the claimant registers at its next
// attempt. A node that is alive after all gets "superseded" and reconnects
// (then it is the claimant).
func (c *Coordinator) presumeDead(s *session, now time.Time) {
	delete(c.probing, s)
	s.probeStart = time.Time{}
	silent := now.Sub(time.Unix(0, s.lastRead.Load())).Round(time.Millisecond)
	c.holdersDead.Add(1)
	s.log.Warn("closing a silent session: another connection claims this node", "silentFor", silent)
	s.kill(CodeSuperseded, fmt.Sprintf("no keepalive for %v while another connection claimed this node; session presumed dead", silent))
	c.dropSession(s)
	s.registered, s.live = false, false
}

// answerDupQuery answers another coordinator asking whether this one still
// holds a node's session (a connection there claims the node).
func (c *Coordinator) answerDupQuery(m gossipMsg) {
	if c.trustedPeer(m.origin) == nil {
		// Not a proven coordinator: no answer (gossipauth.go).
		c.gossipRefused.Add(1)
		return
	}
	held, holder, retry := false, "", time.Duration(0)
	if s := c.sessions[m.to]; s != nil && s.registered && !s.killed() {
		if alive, r := c.probeHolder(s, m.addr, time.Now()); alive {
			held, holder, retry = true, s.remote, r
		}
	}
	c.log.Debug("answered a duplicate-identity query", "peer", m.to, "from", m.origin, "claimant", m.addr, "held", held)
	if p := c.trustedPeer(m.origin); p != nil {
		p.enqueue(outMsg{msg: encodeGossipDupAnswer(m.fwdID, held, holder, retry)})
	}
}

// dupOutcome says how a DupQuery ended without an answer.
type dupOutcome uint8

const (
	dupAnswered    dupOutcome = iota // ans says
	dupUnreachable                   // the send to the holder's coordinator failed
	dupTimedOut                      // sent, but no answer within dupQueryTimeout
)

// finishDupQuery ends query id: with the holder coordinator's answer ans,
// or without one (how says why).
func (c *Coordinator) finishDupQuery(id uint64, how dupOutcome, ans *gossipMsg) {
	q := c.dupQueries[id]
	if q == nil {
		return
	}
	delete(c.dupQueries, id)
	s := q.s
	s.dupQuery = nil
	if s.killed() {
		return
	}
	switch {
	case how == dupTimedOut:
		c.unverified(s, q.holder)
	case how == dupUnreachable:
		s.log.Info("coordinator holding this node's session is unreachable; registering the node here", "holderCoordinator", q.holder)
		if !c.refuseDuplicate(s, q.rec, false) {
			c.register(s, q.rec)
		}
	case ans.held:
		holder := ""
		if ap, err := netip.ParseAddrPort(ans.addr); err == nil {
			holder = ap.String()
		}
		c.refuse(s, holder, q.holder, ans.retry)
	default:
		// Not held there (any more). A session that registered here
		// meanwhile still counts, and so does one that gossip meanwhile
		// placed at yet another coordinator (asked in turn).
		askAgain := false
		if e := c.reg.get(q.rec.Name); e != nil && e.rec.Presence.Online && e.rec.Presence.Coordinator != q.holder {
			askAgain = true
		}
		if !c.refuseDuplicate(s, q.rec, askAgain) {
			c.register(s, q.rec)
		}
	}
}

// expireDupQueries answers queries whose deadline passed. Called by sweep.
func (c *Coordinator) expireDupQueries(now time.Time) {
	for id, q := range c.dupQueries {
		if now.After(q.deadline) {
			c.finishDupQuery(id, dupTimedOut, nil)
		}
	}
}

// unverified refuses s as overloaded: the coordinator holding its node's
// session did not answer (or could not be asked), so this one can tell
// neither a duplicate nor a stale presence. The node retries elsewhere with
// its usual backoff; by then the holder answers or is declared dead.
func (c *Coordinator) unverified(s *session, holder string) {
	c.sessRefused.Add(1)
	s.log.Info("refused node session: the coordinator holding its session did not answer", "holderCoordinator", holder)
	s.kill(CodeOverloaded, "coordinator "+holder+" holds a session of this node and did not answer in time; try again")
}

// refuse ends s with CodeDuplicateIdentity: holder ("ip:port", "" if not
// known) is the host holding the node's session at coordinator holderCoord;
// retry is when the holder's liveness will be decided.
func (c *Coordinator) refuse(s *session, holder, holderCoord string, retry time.Duration) {
	c.sessRefused.Add(1)
	c.dupRefused.Add(1)
	why := "another host is using this node's identity"
	if holder != "" {
		why = "another host at " + holder + " is using this node's identity"
	}
	why += " (its session is held by coordinator " + holderCoord + "); each host needs its own certificate and key"
	key := s.name + "|" + hostOf(s.remote) + "|" + holder
	if t, ok := c.dupLogged[key]; !ok || time.Since(t) > dupLogTTL {
		if len(c.dupLogged) >= maxDupLogged {
			clear(c.dupLogged)
		}
		c.dupLogged[key] = time.Now()
		s.log.Warn("refused node session: another host holds this node's session", "holder", holder, "holderCoordinator", holderCoord)
	} else {
		s.log.Debug("refused node session again: duplicate identity", "holder", holder, "holderCoordinator", holderCoord)
	}
	s.end(duplicateFrame(holder, retry, why))
}

// pruneDupLogged forgets refusals logged longer than dupLogTTL ago.
func (c *Coordinator) pruneDupLogged(now time.Time) {
	for k, t := range c.dupLogged {
		if now.Sub(t) > dupLogTTL {
			delete(c.dupLogged, k)
		}
	}
}

// duplicateFrame is the CodeDuplicateIdentity error frame: "version held"
// carries retry-after in milliseconds, the text is the holder's address
// ("-" if unknown), a space, and a sentence for people.
func duplicateFrame(holder string, retry time.Duration, why string) []byte {
	if holder == "" {
		holder = "-"
	}
	ms := uint64(min(max(retry, 0)/time.Millisecond, maxRetryHintMillis))
	return errorFrame(CodeDuplicateIdentity, ms, holder+" "+why)
}

// parseDuplicate reads a CodeDuplicateIdentity error frame (see
// duplicateFrame) into a RefusedError. A holder that is not an "ip:port"
// is dropped (the text is shown to people as it is).
func parseDuplicate(coordinator string, f frame) *RefusedError {
	e := &RefusedError{Coordinator: coordinator, Code: CodeDuplicateIdentity, Reason: f.text}
	if tok, rest, ok := strings.Cut(f.text, " "); ok {
		if ap, err := netip.ParseAddrPort(tok); err == nil {
			e.Holder, e.Reason = ap.String(), rest
		} else if tok == "-" {
			e.Reason = rest
		}
	}
	e.RetryAfter = time.Duration(min(f.version, maxRetryHintMillis)) * time.Millisecond
	return e
}

// hostOf is the host part of an "ip:port" (the whole string if it is not one).
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
