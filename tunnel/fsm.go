package tunnel

/* The link state machine
 *
 * One goroutine per link (run) owns everything in owner: the session, the
 * generation, timers, backoff and the path policy. Everyone else talks to it
 * through the inbox: decoded signals (Manager.HandleSignal), registry updates
 * (Manager.Link), and session events (pion callbacks, the handshake, reader
 * and signal-sender goroutines). Events carry their session generation and
 * are ignored once that session is gone. The run goroutine never calls
 * subscriber code (the notifier does) and never blocks on another goroutine
 * of the link except when tearing a session down.
 *
 * enter() is the single place state changes: it runs the exit and entry
 * actions (timers, teardown, backoff), updates the Status snapshot and
 * publishes the event.
 */

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshd/meshd/pki"
)

// owner is a link's control state. Only the run goroutine touches it.
type owner struct {
	state       State
	peer        Peer
	controlling bool
	gen         uint64   // generation of the current or last session; 0 before the first
	sess        *session // nil when there is none
	attempts    int      // consecutive failures, for backoff
	lastStart   time.Time
	timer       *time.Timer       // the current state's deadline
	pathTick    *time.Ticker      // connected: liveness, idleness and (controlling) path policy
	idle        idleTracker       // idle.go
	rekeyTick   *time.Ticker      // connected: rekey checks (keys.go)
	routeAddrs  [2]netip.AddrPort // current and previous direct address in the manager's route table
	policy      pathPolicy
	moveKey     string // pair the path policy last renominated to
	moveWhy     string // and why (a PathReason)
	early       earlyCandidates
	cands       remoteCandLimit // bound and pace of the peer's candidates (candlimit.go)
	logged      map[string]bool // failure reasons logged since the last success
	path        Path
	local       Candidate
	remote      Candidate
	selectedAt  time.Time // when the selected pair last changed (oneway.go)
	selectedKey string    // which pair that is, as pairTimes.selected names it
}

// earlyCandidates are candidates (controlled side) for a generation whose
// offer has not arrived yet.
type earlyCandidates struct {
	gen   uint64
	cands []string
	done  bool
}

// maxPendingCandidates bounds candidates buffered before a session starts
// checks; a peer has a handful (hosts, srflx, relays).
const maxPendingCandidates = 64

// maxLoggedReasons bounds the failure-reason memory.
const maxLoggedReasons = 32

func (l *Link) run() {
	o := &l.o
	o.timer = time.NewTimer(time.Hour)
	o.timer.Stop()
	defer o.timer.Stop()
	l.begin()
	for o.state != StateClosed {
		var pathC, rekeyC <-chan time.Time
		if o.pathTick != nil {
			pathC = o.pathTick.C
		}
		if o.rekeyTick != nil {
			rekeyC = o.rekeyTick.C
		}
		select {
		case <-l.ctx.Done():
			l.enter(StateClosed, nil)
		case m := <-l.inbox:
			l.handle(m)
		case <-o.timer.C:
			l.onDeadline()
		case <-pathC:
			l.onPathTick()
		case <-rekeyC:
			l.onRekeyTick()
		}
	}
}

// begin starts the first attempt: the controlling side offers, the
// controlled side asks for an offer.
func (l *Link) begin() {
	// Roles follow the current fingerprints; a live session kept its own
	// across a certificate renewal (renew.go), the next one may swap them.
	o := &l.o
	if c := o.peer.controlling(l.m.self().Fingerprint); c != o.controlling {
		o.controlling = c
		l.updateSnap(func(sn *snapshot) { sn.controlling = c })
	}
	if o.controlling {
		l.startAttempt()
	} else {
		l.askForSession()
	}
}

// retry starts the next attempt after a backoff.
func (l *Link) retry() { l.begin() }

// enter moves the link to next. err is the failure for StateFailed.
func (l *Link) enter(next State, err error) {
	o := &l.o
	prev := o.state
	connected := func(s State) bool { return s == StateConnected || s == StateDisconnected }
	if connected(prev) && !connected(next) {
		l.stopDataPath()
		if o.pathTick != nil {
			o.pathTick.Stop()
			o.pathTick = nil
		}
		if o.rekeyTick != nil {
			o.rekeyTick.Stop()
			o.rekeyTick = nil
		}
	}
	t := l.m.timers
	switch next {
	case StateChecking:
		o.timer.Reset(t.ConnectTimeout)
	case StateHandshaking:
		// Backstop only: the handshake has its own deadline.
		o.timer.Reset(t.HandshakeTimeout + time.Second)
	case StateConnected:
		o.timer.Stop()
		o.attempts = 0
		if o.pathTick == nil {
			o.policy.reset()
			o.idle.reset(time.Now(), l.dataCount())
			o.pathTick = time.NewTicker(max(t.KeepaliveInterval/3, 10*time.Millisecond))
		}
		if o.rekeyTick == nil {
			o.rekeyTick = time.NewTicker(t.rekeyCheckInterval())
		}
	case StateDisconnected:
		o.timer.Stop()
	case StateFailed:
		l.teardown(o.sess)
		o.sess = nil
		o.attempts++
		o.timer.Reset(backoff(o.attempts, t.RetryMin, t.RetryMax))
		l.logFailure(err)
	case StateClosed:
		l.teardown(o.sess)
		o.sess = nil
		o.timer.Stop()
		if o.pathTick != nil {
			o.pathTick.Stop()
			o.pathTick = nil
		}
		if o.rekeyTick != nil {
			o.rekeyTick.Stop()
			o.rekeyTick = nil
		}
	}
	o.state = next
	if !connected(next) {
		o.path, o.local, o.remote = PathNone, Candidate{}, Candidate{}
	}
	now := time.Now()
	l.updateSnap(func(sn *snapshot) {
		if sn.state != next {
			sn.since = now
		}
		sn.state = next
		if next == StateFailed {
			sn.failures++
			sn.lastErr = err
		}
		if o.sess == nil {
			sn.agent = nil
		}
		if !connected(next) {
			sn.path, sn.local, sn.remote, sn.relayServer, sn.idle = PathNone, Candidate{}, Candidate{}, "", false
		}
	})
	if prev != next {
		if l.log.Enabled(l.ctx, slog.LevelDebug) {
			l.log.Debug("link state", "from", prev, "to", next, "generation", o.gen)
		}
		l.m.notifier.publish(Event{
			Kind: EventState, Peer: l.name, Time: now, State: next, Prev: prev,
			Path: o.path, Local: o.local, Remote: o.remote, Err: err,
		})
	}
}

// logFailure logs why an attempt failed, once per distinct reason until the
// link next connects: a peer that stays offline, or keeps presenting the
// wrong certificate, is not logged on every retry.
func (l *Link) logFailure(err error) {
	if err == nil {
		return
	}
	o := &l.o
	key, refused := failureKey(err)
	if o.logged[key] {
		if l.log.Enabled(l.ctx, slog.LevelDebug) {
			l.log.Debug("link attempt failed again", "error", err, "attempt", o.attempts)
		}
		return
	}
	if o.logged == nil || len(o.logged) >= maxLoggedReasons {
		o.logged = make(map[string]bool)
	}
	o.logged[key] = true
	if refused {
		l.log.Warn("refused the peer's certificate", "reason", key, "error", err)
		return
	}
	l.log.Info("link attempt failed; retrying with backoff", "error", err)
}

// failureKey classifies a failure for logFailure; refused reports a
// certificate this node rejected.
func failureKey(err error) (key string, refused bool) {
	var ve *pki.VerifyError
	if errors.As(err, &ve) && ve.Reason != nil {
		return ve.Reason.Error(), true
	}
	for _, s := range []error{ErrSignaling, ErrTimeout, ErrICEFailed, ErrPeerRestart, ErrPeerClosed} {
		if errors.Is(err, s) {
			return s.Error(), false
		}
	}
	return err.Error(), false
}

// onDeadline handles the state timer.
func (l *Link) onDeadline() {
	o := &l.o
	switch o.state {
	case StateChecking:
		what := "no working ICE pair"
		switch {
		case o.sess == nil:
			what = "no offer from the peer"
		case o.sess.iceConn == nil:
			what = "no answer from the peer"
		case !o.sess.remoteDone:
			what = "no working ICE pair (the peer had not finished gathering candidates)"
		}
		l.enter(StateFailed, fmt.Errorf("%w after %v: %s", ErrTimeout, l.m.timers.ConnectTimeout, what))
	case StateHandshaking:
		l.enter(StateFailed, fmt.Errorf("%w: %w: no DTLS handshake", ErrHandshake, ErrTimeout))
	case StateFailed:
		l.retry()
	}
}

// startAttempt (controlling) starts a new session and offers it.
func (l *Link) startAttempt() {
	o := &l.o
	l.teardown(o.sess)
	o.sess = nil
	gen := max(o.gen+1, uint64(time.Now().UnixNano()))
	o.gen = gen
	l.gen.Store(gen)
	o.lastStart = time.Now()
	s, err := l.newSession(gen)
	if err != nil {
		l.enter(StateFailed, err)
		return
	}
	o.sess = s
	l.updateSnap(func(sn *snapshot) {
		sn.generation, sn.agent = gen, s.agent
		sn.attempts++
	})
	l.send(signal{kind: kindOffer, generation: gen, ufrag: s.localUfrag, pwd: s.localPwd})
	l.enter(StateChecking, nil)
	if err := s.agent.GatherCandidates(); err != nil {
		l.enter(StateFailed, fmt.Errorf("tunnel: gather candidates: %w", err))
	}
}

// askForSession (controlled) asks the peer for an offer and waits for it.
func (l *Link) askForSession() {
	o := &l.o
	l.teardown(o.sess)
	o.sess = nil
	o.lastStart = time.Now()
	sig := signal{kind: kindRestart, generation: o.gen, reason: restartFailed}
	if o.gen == 0 {
		sig.reason = restartNoSession
	}
	l.send(sig)
	l.enter(StateChecking, nil)
}

// send queues a signal for the sender goroutine. A full queue fails the
// attempt like a send error would.
func (l *Link) send(sig signal) {
	payload, err := sig.marshal()
	if err != nil {
		// Only our own, already validated values go in, so this is a bug;
		// the attempt then times out and the link retries.
		l.log.Error("cannot encode a signal", "kind", sig.kind, "error", err)
		return
	}
	select {
	case l.out <- outSignal{sig: sig, payload: payload}:
	default:
		l.inboxEvent(evSignalFailed{gen: sig.generation, kind: sig.kind, err: errors.New("send queue full")})
	}
}

// inboxEvent queues an event to ourselves without blocking (the run
// goroutine must never wait on its own inbox).
func (l *Link) inboxEvent(ev any) {
	select {
	case l.inbox <- ev:
	default:
	}
}

// handle dispatches one inbox message.
func (l *Link) handle(m any) {
	o := &l.o
	switch m := m.(type) {
	case msgSignal:
		l.handleSignal(m.sig)
	case msgUpdatePeer:
		l.handleUpdatePeer(m.peer)
	case msgRecheck:
		l.recheck()
	case msgRelaysChanged:
		l.onRelaysChanged()
	case evSignalFailed:
		if o.state == StateChecking && (m.gen == o.gen || m.kind == kindRestart) {
			l.enter(StateFailed, fmt.Errorf("%w: %s to %q: %w", ErrSignaling, m.kind, l.name, m.err))
		}
	}
	s := o.sess
	if s == nil {
		return
	}
	switch m := m.(type) {
	case evCandidate:
		if m.gen == s.gen {
			l.onLocalCandidate(s, m.cand)
		}
	case evICEState:
		if m.gen == s.gen {
			l.onICEState(s, m.state)
		}
	case evPairChanged:
		if m.gen == s.gen {
			l.refreshPath(s, readPairs(s.agent))
		}
	case evHandshake:
		if m.gen == s.gen && o.state == StateHandshaking {
			l.onHandshake(s, m)
		}
	case evRekeyDone:
		if m.gen == s.gen {
			l.onRekeyDone(s, m)
		} else {
			closeRekey(m)
		}
	case evPeerRekey:
		if m.gen == s.gen {
			l.onPeerRekey(s, m.t)
		} else {
			_ = m.t.Close()
		}
	case evControl:
		if m.gen == s.gen {
			l.onControl(s, m)
		}
	case evReaderDone:
		if m.gen == s.gen && (o.state == StateConnected || o.state == StateDisconnected) {
			err := fmt.Errorf("%w: %w", ErrPeerClosed, m.err)
			if !errors.Is(m.err, io.EOF) {
				err = fmt.Errorf("%w: DTLS read: %w", ErrICEFailed, m.err)
			}
			l.enter(StateFailed, err)
		}
	}
}

func (l *Link) onLocalCandidate(s *session, c ice.Candidate) {
	if c == nil {
		s.localDone = true
		l.send(signal{kind: kindEndOfCandidates, generation: s.gen})
		return
	}
	str := c.Marshal()
	if checkCandidate(str) != nil {
		return
	}
	s.localCands = append(s.localCands, str)
	l.send(signal{kind: kindCandidate, generation: s.gen, candidate: str})
}

func (l *Link) onICEState(s *session, st ice.ConnectionState) {
	o := &l.o
	s.iceState = st
	switch st {
	case ice.ConnectionStateConnected:
		switch o.state {
		case StateChecking:
			if s.iceConn != nil && !s.handshaking {
				l.refreshPath(s, readPairs(s.agent))
				l.startHandshake(s, o.peer, o.controlling)
				l.enter(StateHandshaking, nil)
			}
		case StateDisconnected:
			l.enter(StateConnected, nil)
		}
	case ice.ConnectionStateDisconnected:
		if o.state == StateConnected {
			l.enter(StateDisconnected, nil)
		}
	case ice.ConnectionStateFailed:
		switch o.state {
		case StateChecking, StateHandshaking, StateConnected, StateDisconnected:
			l.enter(StateFailed, fmt.Errorf("%w: consent lost on every candidate pair", ErrICEFailed))
		}
	}
}

func (l *Link) onHandshake(s *session, ev evHandshake) {
	o := &l.o
	if ev.err != nil {
		l.enter(StateFailed, fmt.Errorf("%w: %w", ErrHandshake, ev.err))
		return
	}
	if err := l.startDataPath(s); err != nil {
		l.enter(StateFailed, err)
		return
	}
	o.logged = nil
	now := time.Now()
	suite, peerFP := s.describe()
	l.updateSnap(func(sn *snapshot) {
		sn.handshakeDuration, sn.lastHandshake = ev.dur, now
		sn.cipherSuite, sn.peerFingerprint = suite, peerFP
		sn.peerCert = s.peerCert.Load()
	})
	v := readPairs(s.agent)
	l.refreshPath(s, v)
	next := StateConnected
	if s.iceState == ice.ConnectionStateDisconnected {
		next = StateDisconnected
	}
	l.enter(next, nil)
	attrs := []any{"path", o.path, "local", o.local, "remote", o.remote, "handshake", ev.dur.Round(time.Millisecond)}
	if sel := v.selectedPair(); sel != nil && sel.relayed() {
		attrs = append(attrs, "relay", relayServerFor(sel, s.servers))
	}
	l.log.Info("link up", attrs...)
}

// refreshPath updates the selected path from v and reports a change.
func (l *Link) refreshPath(s *session, v pairsView) {
	o := &l.o
	sel := v.selectedPair()
	l.setRoute(s, sel)
	if sel != nil {
		s.gate.setSelected(sel.remote.Addr, sel.local.Type == "relay")
	}
	path := sel.path()
	var local, remote Candidate
	if sel != nil {
		local, remote = sel.local, sel.remote
	}
	if path == o.path && local == o.local && remote == o.remote {
		return
	}
	prevPath, hadPath := o.path, o.path != PathNone
	o.path, o.local, o.remote = path, local, remote
	relay := relayServerFor(sel, s.servers)
	connected := o.state == StateConnected || o.state == StateDisconnected
	l.updateSnap(func(sn *snapshot) {
		sn.path, sn.local, sn.remote, sn.relayServer = path, local, remote, relay
		if connected && hadPath {
			sn.pathChanges++
		}
	})
	if connected && hadPath {
		reason := PathReasonICE
		switch {
		case sel != nil && sel.key == o.moveKey:
			reason = o.moveWhy
		case !o.controlling:
			reason = PathReasonPeer
		}
		o.moveKey = ""
		// The one log line of a path change, with its reason.
		l.log.Info("link path changed", "from", prevPath, "to", path, "local", local, "remote", remote, "why", PathReasonText(reason))
		l.m.notifier.publish(Event{
			Kind: EventPath, Peer: l.name, Time: time.Now(), State: o.state, Path: path, Local: local, Remote: remote, Reason: reason,
		})
	}
}

// onPathTick runs on a connected link: liveness of the selected pair (in
// place of pion's timers), idleness (idle.go) and, on the controlling side
// of an active link, the path policy.
func (l *Link) onPathTick() {
	o := &l.o
	s := o.sess
	if s == nil {
		return
	}
	t := l.m.timers
	now := time.Now()
	pt := selectedHeard(s.agent)
	heard, elsewhere := pt.heard, pt.elsewhere
	was := o.idle.idle
	idle, woke := o.idle.observe(now, l.dataCount(), heard, elsewhere, t)
	s.gate.setIdle(idle)
	if idle != was {
		l.updateSnap(func(sn *snapshot) { sn.idle = idle })
		if idle && l.log.Enabled(l.ctx, slog.LevelDebug) {
			l.log.Debug("link idle", "path", o.path, "local", o.local, "remote", o.remote)
		}
	}
	if woke {
		// The selected pair was not checked while idle: give it a
		// PathTimeout to answer before the policy calls it dead.
		o.policy.grace(now)
		if l.log.Enabled(l.ctx, slog.LevelDebug) {
			l.log.Debug("link active", "heard", now.Sub(heard).Round(time.Millisecond), "data", o.idle.lastData.Equal(now))
		}
	}
	if idle {
		// Silence up to IdleKeepalive is expected; longer wakes the link.
		return
	}
	if st := liveness(now, heard, o.idle.activeSince, t); st != s.iceState {
		l.onICEState(s, st)
		if o.sess != s {
			return
		}
	}
	var v pairsView
	if o.path == PathRelay && now.Sub(heard) >= t.PathTimeout {
		if v = readPairs(s.agent); relayLost(now, heard, o.idle.activeSince, o.path, o.controlling, v, t) {
			l.log.Info("the relayed path went silent and no other pair answers; restarting ICE", "local", o.local, "remote", o.remote, "heard", now.Sub(heard).Round(time.Millisecond))
			l.relayFailover()
			return
		}
	}
	if pt.selected != o.selectedKey {
		// Read from the agent, not from refreshPath: pion switches its
		// selected pair before the evPairChanged that tells us is handled.
		o.selectedKey, o.selectedAt = pt.selected, now
	}
	if oneWay(now, pt, latest(o.idle.activeSince, o.selectedAt), t) {
		l.log.Info("the peer's packets arrive but the selected pair stopped answering ours (the peer's address changed under it); restarting ICE",
			"local", o.local, "remote", o.remote, "heard", now.Sub(pt.heard).Round(time.Millisecond), "answered", now.Sub(pt.answered).Round(time.Millisecond))
		l.restartFor(ErrPathOneWay)
		return
	}
	if !o.controlling {
		return
	}
	if v.pairs == nil {
		v = readPairs(s.agent)
	}
	l.refreshPath(s, v)
	target, why := o.policy.decide(now, v, t)
	if target == nil {
		return
	}
	if err := renominate(s.agent, target); err != nil {
		l.log.Debug("renomination failed", "error", err)
		return
	}
	o.moveKey, o.moveWhy = target.key, why
	// "link path changed" follows once the agent has moved.
	l.log.Debug("moving the link to another path", "why", PathReasonText(why), "path", target.path(), "local", target.local, "remote", target.remote)
}

// dataCount is the number of data records the link sent and received.
func (l *Link) dataCount() uint64 {
	return l.packetsSent.Load() + l.packetsReceived.Load()
}

// pairTimes is what the agent last heard on the selected pair.
type pairTimes struct {
	// heard: a check from the peer, an answer to one of ours, or a packet
	// through the ICE connection (DTLS). pion credits every data packet to
	// the selected pair, from whichever address it came.
	heard time.Time
	// answered: an answer to one of our own checks, the only proof that
	// what this side sends on the pair arrives.
	answered time.Time
	// elsewhere: the latest check the peer sent from another address (it
	// roamed, or is checking pairs this side does not use): an idle link
	// must answer those at the active pace.
	elsewhere time.Time
	// rebound: the latest check the peer sent to the selected pair's
	// socket from a peer-reflexive address other than the selected one:
	// the peer's NAT gave its flow a new mapping (oneway.go). A check from
	// one of its signalled candidates (its relay, say) is not that: the
	// peer is checking another pair.
	rebound time.Time
	// selected names the selected pair (its candidates' IDs).
	selected string
}

// selectedHeard is when the agent last heard from the selected pair (zero
// if no pair is selected). A pair that is the same path on the wire counts
// as the selected pair (a server-reflexive local candidate sends from its
// host base, so its pair with the same remote address carries the same
// datagrams): the idle gate lets one check to the selected remote address
// out per IdleKeepalive, whichever of those pairs pion wrote it for, and
// its answer proves the path.
func selectedHeard(a *ice.Agent) pairTimes {
	sel, ok := a.GetSelectedCandidatePairStats()
	if !ok {
		return pairTimes{}
	}
	remotes, prflx := map[string]string{}, map[string]bool{}
	for _, c := range a.GetRemoteCandidatesStats() {
		remotes[c.ID] = net.JoinHostPort(c.IP, strconv.Itoa(c.Port))
		prflx[c.ID] = c.CandidateType == ice.CandidateTypePeerReflexive
	}
	wire := map[string]string{}
	if locals, err := a.GetLocalCandidates(); err == nil {
		for _, c := range locals {
			wire[c.ID()] = localWire(c)
		}
	}
	return pairHeard(sel, a.GetCandidatePairsStats(), remotes, prflx, wire)
}

// pairHeard is selectedHeard over the agent's figures: the selected pair's
// stats, the check list's, the remote candidates' addresses by ID and the
// remote candidates that are peer-reflexive and the local candidates'
// sockets by ID (localWire).
func pairHeard(sel ice.CandidatePairStats, stats []ice.CandidatePairStats, remotes map[string]string, prflx map[string]bool, wire map[string]string) pairTimes {
	// The selected pair's own stats lack the check timestamps; the
	// check list has them.
	pt := pairTimes{heard: sel.LastPacketReceivedTimestamp, selected: sel.LocalCandidateID + "/" + sel.RemoteCandidateID}
	selRemote := remotes[sel.RemoteCandidateID]
	selWire, found := wire[sel.LocalCandidateID], false
	for _, st := range stats {
		same := st.LocalCandidateID == sel.LocalCandidateID && st.RemoteCandidateID == sel.RemoteCandidateID
		if same {
			found = true
		}
		if !same && (selWire == "" || wire[st.LocalCandidateID] != selWire || remotes[st.RemoteCandidateID] != selRemote) {
			continue
		}
		for _, t := range []time.Time{st.LastResponseTimestamp, st.LastRequestReceivedTimestamp, st.LastPacketReceivedTimestamp} {
			if t.After(pt.heard) {
				pt.heard = t
			}
		}
		if st.LastResponseTimestamp.After(pt.answered) {
			pt.answered = st.LastResponseTimestamp
		}
	}
	if !found {
		return pairTimes{heard: pt.heard, answered: pt.answered, selected: pt.selected}
	}
	for _, st := range stats {
		if remotes[st.RemoteCandidateID] == selRemote {
			continue
		}
		if st.LastRequestReceivedTimestamp.After(pt.elsewhere) {
			pt.elsewhere = st.LastRequestReceivedTimestamp
		}
		if prflx[st.RemoteCandidateID] && selWire != "" && wire[st.LocalCandidateID] == selWire && st.LastRequestReceivedTimestamp.After(pt.rebound) {
			pt.rebound = st.LastRequestReceivedTimestamp
		}
	}
	return pt
}

// localWire names the socket a local candidate's checks leave from: a
// host candidate's own address, a server-reflexive one's base (its related
// address); a relayed candidate has a socket of its own (its ID).
func localWire(c ice.Candidate) string {
	switch c.Type() {
	case ice.CandidateTypeHost:
		return net.JoinHostPort(c.Address(), strconv.Itoa(c.Port()))
	case ice.CandidateTypeServerReflexive:
		if r := c.RelatedAddress(); r != nil {
			return net.JoinHostPort(r.Address, strconv.Itoa(r.Port))
		}
	}
	return "id:" + c.ID()
}

// recheck verifies the connected peer's certificate again (a newer CRL, or
// time passing its expiry) and ends the session if it no longer passes; the
// next handshake then refuses the peer and the link stays down.
func (l *Link) recheck() {
	o := &l.o
	s := o.sess
	if s == nil || (o.state != StateConnected && o.state != StateDisconnected) {
		return
	}
	nc := s.peerCert.Load()
	if nc == nil {
		return
	}
	want := o.peer.expect()
	if l.m.opts.Now != nil {
		want.Now = l.m.opts.Now()
	}
	if _, err := l.m.opts.Verifier.Verify([][]byte{nc.Cert.Raw}, want); err != nil {
		l.enter(StateFailed, fmt.Errorf("%w: the connected peer's certificate no longer verifies: %w", ErrHandshake, err))
	}
}

func (l *Link) handleUpdatePeer(p Peer) {
	o := &l.o
	if p.equal(o.peer) {
		return
	}
	if sameIdentity(p, o.peer) && o.sess != nil && o.sess.keys != nil &&
		(o.state == StateConnected || o.state == StateDisconnected) {
		// The peer renewed its certificate: the live session stays, and
		// the peer's rekey handshake presents the new one (renew.go).
		o.peer = p
		l.updateSnap(func(sn *snapshot) { sn.peer = p.clone() })
		return
	}
	o.peer = p
	o.controlling = p.controlling(l.m.self().Fingerprint)
	l.updateSnap(func(sn *snapshot) {
		sn.peer, sn.controlling = p.clone(), o.controlling
	})
	// The handshake verifies against the peer as it was; start over at
	// once with the new expectation (and possibly the other role).
	l.enter(StateFailed, fmt.Errorf("%w: the peer's registry record changed", ErrPeerRestart))
	o.timer.Reset(0)
}

// handleSignal applies one signal from the peer.
func (l *Link) handleSignal(sig signal) {
	o := &l.o
	if o.state == StateClosed {
		return
	}
	if o.controlling {
		switch sig.kind {
		case kindAnswer:
			l.onAnswer(sig)
		case kindCandidate, kindEndOfCandidates:
			if s := o.sess; s != nil && sig.generation == s.gen {
				l.onRemoteCandidate(s, sig)
			} else {
				l.nudgeStale()
			}
		case kindRestart:
			l.onRestartRequest(sig)
		case kindOffer:
			l.m.logOnce("role:"+l.name, "the peer sent an ICE offer but this node is the controlling side; "+
				"the two nodes disagree about certificate fingerprints (a stale registry record?)", "peer", l.name)
		}
		return
	}
	switch sig.kind {
	case kindOffer:
		l.onOffer(sig)
	case kindCandidate, kindEndOfCandidates:
		if s := o.sess; s != nil && sig.generation == s.gen {
			l.onRemoteCandidate(s, sig)
			return
		}
		if sig.generation > o.gen {
			if o.early.gen != sig.generation {
				o.early = earlyCandidates{gen: sig.generation}
			}
			if sig.kind == kindEndOfCandidates {
				o.early.done = true
			} else if len(o.early.cands) < maxPendingCandidates {
				o.early.cands = append(o.early.cands, sig.candidate)
			}
		}
	case kindAnswer, kindRestart:
		l.m.logOnce("role:"+l.name, "the peer sent an ICE "+sig.kind.String()+" but this node is the controlled side; "+
			"the two nodes disagree about certificate fingerprints (a stale registry record?)", "peer", l.name)
	}
}

// nudgeStale (controlling) reacts to signals of another generation: if the
// current offer has not been answered, the peer may have missed it.
func (l *Link) nudgeStale() {
	o := &l.o
	if o.state == StateChecking && o.sess != nil && o.sess.iceConn == nil {
		l.resend(o.sess, kindOffer)
	}
}

// resend repeats a session's offer or answer and its candidates (both
// sides treat duplicates as no-ops).
func (l *Link) resend(s *session, kind signalKind) {
	l.send(signal{kind: kind, generation: s.gen, ufrag: s.localUfrag, pwd: s.localPwd})
	for _, c := range s.localCands {
		l.send(signal{kind: kindCandidate, generation: s.gen, candidate: c})
	}
	if s.localDone {
		l.send(signal{kind: kindEndOfCandidates, generation: s.gen})
	}
}

func (l *Link) onAnswer(sig signal) {
	o := &l.o
	s := o.sess
	if s == nil || sig.generation != s.gen {
		l.nudgeStale()
		return
	}
	if s.iceConn != nil || o.state != StateChecking {
		return // duplicate
	}
	conn, err := s.agent.StartDial(sig.ufrag, sig.pwd)
	if err != nil {
		l.enter(StateFailed, fmt.Errorf("tunnel: start ICE checks: %w", err))
		return
	}
	s.iceConn = conn
	for _, c := range s.pending {
		l.addRemoteCandidate(s, c)
	}
	s.pending = nil
}

func (l *Link) onOffer(sig signal) {
	o := &l.o
	if s := o.sess; s != nil && s.gen == sig.generation {
		// A repeated offer: the peer may have missed our answer.
		l.resend(s, kindAnswer)
		return
	}
	live := o.sess != nil && o.state != StateFailed
	if sig.generation <= o.gen && live {
		return // an old offer; we are on a newer session
	}
	l.teardown(o.sess)
	o.sess = nil
	o.gen = sig.generation
	l.gen.Store(o.gen)
	o.lastStart = time.Now()
	s, err := l.newSession(o.gen)
	if err != nil {
		l.enter(StateFailed, err)
		return
	}
	o.sess = s
	l.updateSnap(func(sn *snapshot) {
		sn.generation, sn.agent = s.gen, s.agent
		sn.attempts++
	})
	conn, err := s.agent.StartAccept(sig.ufrag, sig.pwd)
	if err != nil {
		l.enter(StateFailed, fmt.Errorf("tunnel: start ICE checks: %w", err))
		return
	}
	s.iceConn = conn
	if o.early.gen == s.gen {
		for _, c := range o.early.cands {
			l.addRemoteCandidate(s, c)
		}
		s.remoteDone = o.early.done
	}
	o.early = earlyCandidates{}
	l.send(signal{kind: kindAnswer, generation: s.gen, ufrag: s.localUfrag, pwd: s.localPwd})
	l.enter(StateChecking, nil)
	if err := s.agent.GatherCandidates(); err != nil {
		l.enter(StateFailed, fmt.Errorf("tunnel: gather candidates: %w", err))
	}
}

func (l *Link) onRemoteCandidate(s *session, sig signal) {
	if sig.kind == kindEndOfCandidates {
		s.remoteDone = true
		return
	}
	if s.iceConn == nil {
		if len(s.pending) < maxPendingCandidates {
			s.pending = append(s.pending, sig.candidate)
		}
		return
	}
	l.addRemoteCandidate(s, sig.candidate)
}

func (l *Link) addRemoteCandidate(s *session, str string) {
	c, err := ice.UnmarshalCandidate(str)
	if err != nil {
		l.log.Debug("ignoring a bad remote candidate", "candidate", str, "error", err)
		return
	}
	switch l.o.cands.admit(s.gen, str, time.Now()) {
	case candDuplicate:
		return
	case candOverCap, candOverRate:
		l.m.counters.candidatesDropped.Add(1)
		l.m.logOnce("candidates:"+l.name, "the peer sends more ICE candidates than a link takes; the rest are dropped (counted)",
			"peer", l.name, "perSession", maxRemoteCandidates, "perSecond", candidateRate)
		return
	}
	if err := s.agent.AddRemoteCandidate(c); err != nil {
		l.log.Debug("ignoring a remote candidate", "candidate", str, "error", err)
	}
}

// onRestartRequest (controlling): the peer has no session, or its session
// failed.
func (l *Link) onRestartRequest(sig signal) {
	o := &l.o
	s := o.sess
	switch o.state {
	case StateChecking:
		if s != nil && s.iceConn == nil {
			l.resend(s, kindOffer) // not answered yet: the peer may have missed the offer
			return
		}
		if sig.generation == o.gen || sig.generation == 0 {
			l.restartSoon()
		}
	case StateHandshaking, StateConnected, StateDisconnected:
		if sig.generation == o.gen || sig.generation == 0 {
			l.restartSoon()
		}
	case StateFailed, StateNew:
		// The peer is reachable now: cut the backoff short.
		l.restartSoon()
	}
}

// restartSoon starts a new attempt now, or RetryMin after the previous one
// if that was more recent, so a peer cannot make us restart in a loop.
func (l *Link) restartSoon() { l.restartFor(ErrPeerRestart) }

// restartFor fails the current attempt for err (unless it failed already)
// and starts the next one now, or RetryMin after the previous start if that
// was more recent.
func (l *Link) restartFor(err error) {
	o := &l.o
	wait := time.Until(o.lastStart.Add(l.m.timers.RetryMin))
	if o.state != StateFailed {
		l.enter(StateFailed, err)
	}
	o.timer.Reset(max(wait, 0))
}
