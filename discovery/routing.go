package discovery

import (
	"errors"
	"sync"
	"time"
)

// routing.go: what the run goroutine does with gossip from other
// coordinators, and how signals travel between coordinators.
//
// Signal path: node A → A's coordinator (routeSignal). If B's session is
// local, the signal is queued on it and A gets an OK result. Otherwise it is
// forwarded with a forward id to B's coordinator over a reliable memberlist
// stream (peerSender); that coordinator delivers it (deliverForwarded) and
// answers with a result, which finishForward passes to A. Unknown targets,
// offline targets, unreachable coordinators and timeouts answer A with an
// error code.

// fwdSignal is a signal forwarded to another coordinator, awaiting its result.
type fwdSignal struct {
	s        *session
	id       uint32 // the node's signal id
	deadline time.Time
}

// handleGossip applies one inbound gossip item.
func (c *Coordinator) handleGossip(in gossipIn) {
	m, err := decodeGossip(in.msg)
	if err != nil {
		c.gossipMalformed.Add(1)
		c.log.Debug("malformed gossip message", "error", err)
		return
	}
	if in.state {
		if m.typ != gossipState {
			c.gossipMalformed.Add(1)
			return
		}
		c.mergeState(m)
		return
	}
	c.handleGossipMsg(m, false)
}

func (c *Coordinator) handleGossipMsg(m gossipMsg, nested bool) {
	now := time.Now()
	switch m.typ {
	case gossipEntry:
		o, err := c.reg.merge(m.entry, now)
		if err != nil && !errors.Is(err, ErrStaleRecord) {
			c.log.Debug("gossiped record rejected", "error", err)
		}
		if o.changed() {
			c.entryFromGossip(o)
		}
	case gossipPresence:
		if o := c.reg.mergePresence(m.name, m.pres, now); o.changed() {
			c.entryFromGossip(o)
		}
	case gossipSignal:
		c.deliverForwarded(m)
	case gossipSignalResult:
		c.finishForward(m.fwdID, m.code)
	case gossipDupQuery:
		c.answerDupQuery(m)
	case gossipDupAnswer:
		c.finishDupQuery(m.fwdID, dupAnswered, &m)
	case gossipHello:
		c.handleHello(m)
	case gossipRelays:
		c.handleRelays(m)
	case gossipCRL:
		if err := c.applyCRL(m.crl); err != nil {
			c.log.Debug("gossiped CRL rejected", "error", err)
		}
	case gossipBatch:
		if nested {
			c.gossipMalformed.Add(1)
			return
		}
		for _, b := range m.batch {
			inner, err := decodeGossip(b)
			if err != nil || inner.typ == gossipBatch || inner.typ == gossipState {
				c.gossipMalformed.Add(1)
				continue
			}
			c.handleGossipMsg(inner, true)
		}
	default:
		c.gossipMalformed.Add(1)
	}
}

// entryFromGossip propagates a change learnt from another coordinator to
// local sessions, passes small messages on epidemically (so a change that
// reached one coordinator reaches all even when the originator's own
// transmissions were lost) and checks local sessions against it.
func (c *Coordinator) entryFromGossip(o mergeOutcome) {
	e := o.entry
	c.stateDirty = true
	c.broadcastSessions(e.entryFrame())
	msg, name := e.gossipMsg(), "r:"+e.rec.Name
	if !o.record {
		msg, name = encodeGossipPresence(e.rec.Name, e.rec.Presence), "p:"+e.rec.Name
	}
	// Large messages came by reliable fan-out from their originator, which
	// reached every live member; only packet-sized ones are re-gossiped.
	if len(msg) <= c.bcastMax && c.queue.NumQueued() < spillDepth {
		c.queue.QueueBroadcast(&broadcast{name: name, msg: msg})
	}
	c.checkLocal(e)
}

// mergeState applies a push/pull state (anti-entropy). Changes go to local
// sessions but are not re-gossiped: push/pull reaches every member in turn.
func (c *Coordinator) mergeState(m gossipMsg) {
	if len(m.crl) > 0 {
		if err := c.applyCRL(m.crl); err != nil {
			c.log.Debug("CRL in push/pull state rejected", "error", err)
		}
	}
	now := time.Now()
	for _, in := range m.entries {
		o, _ := c.reg.merge(in, now)
		if o.changed() {
			c.stateDirty = true
			c.broadcastSessions(o.entry.entryFrame())
			c.checkLocal(o.entry)
		}
	}
}

// checkLocal reconciles a local session with a presence or record learnt from
// gossip that superseded what this coordinator held.
func (c *Coordinator) checkLocal(e *regEntry) {
	name := e.rec.Name
	s := c.sessions[name]
	if s == nil {
		return
	}
	p := e.rec.Presence
	drop := func(why string) {
		s.log.Info("closing superseded session", "reason", why)
		s.kill(CodeSuperseded, why)
		delete(c.sessions, name)
		s.registered = false
		c.nSessions.Store(int64(len(c.sessions)))
	}
	switch {
	case e.rec.Left:
		drop("the node left the mesh through another coordinator")
	case p.Coordinator == c.name && unixNano(p.Since) == unixNano(s.since):
		if !p.Online {
			// Another coordinator declared this live session offline (we
			// were unreachable); refute with a newer session start.
			np := Presence{Coordinator: c.name, Since: nextSince(p), Online: true, Changed: time.Now()}
			s.since = np.Since
			c.log.Info("refuting offline presence of a live session", "peer", name)
			c.entryChanged(c.reg.setPresence(name, np), false)
		}
	case presenceAfter(p, Presence{Coordinator: c.name, Since: s.since, Online: true}):
		drop("a newer session of this node is held by coordinator " + p.Coordinator)
	default:
		c.entryChanged(c.reg.setPresence(name, Presence{Coordinator: c.name, Since: s.since, Online: true, Changed: time.Now()}), false)
	}
}

// routeSignal handles a signal from a local session.
func (c *Coordinator) routeSignal(s *session, f frame) {
	reply := func(code signalCode) {
		if code != sigOK {
			c.sigFailed.Add(1)
		}
		s.send(signalResultFrame(f.id, code))
	}
	e := c.reg.get(f.name)
	switch {
	case e == nil || e.rec.Left:
		reply(sigUnknownPeer)
	case !e.rec.Presence.Online:
		reply(sigPeerOffline)
	case e.rec.Presence.Coordinator == c.name:
		t := c.sessions[f.name]
		if t == nil || !t.live {
			reply(sigPeerOffline)
			return
		}
		t.send(deliverFrame(s.name, f.payload))
		c.sigRouted.Add(1)
		reply(sigOK)
	default:
		// Only to a coordinator that proved the role (gossipauth.go).
		p := c.trustedPeer(e.rec.Presence.Coordinator)
		if p == nil {
			reply(sigPeerOffline)
			return
		}
		c.nextFwd++
		id := c.nextFwd
		c.fwd[id] = &fwdSignal{s: s, id: f.id, deadline: time.Now().Add(c.opts.SignalTimeout)}
		if !p.enqueue(outMsg{msg: encodeGossipSignal(id, c.name, s.name, f.name, f.payload), fwdID: id}) {
			delete(c.fwd, id)
			reply(sigPeerOffline)
			return
		}
		c.sigForwarded.Add(1)
	}
}

// deliverForwarded handles a signal another coordinator forwarded here.
// Signals from a member that has not proven the coordinator role are
// dropped and counted (gossipauth.go).
func (c *Coordinator) deliverForwarded(m gossipMsg) {
	if c.trustedPeer(m.origin) == nil {
		c.gossipRefused.Add(1)
		return
	}
	code := sigOK
	if t := c.sessions[m.to]; t != nil && t.live {
		t.send(deliverFrame(m.from, m.payload))
		c.sigRouted.Add(1)
	} else if e := c.reg.get(m.to); e == nil || e.rec.Left {
		code = sigUnknownPeer
	} else {
		code = sigPeerOffline
	}
	if p := c.trustedPeer(m.origin); p != nil {
		p.enqueue(outMsg{msg: encodeGossipSignalResult(m.fwdID, code)})
	}
}

// finishForward passes a forwarded signal's result to the node that sent it.
func (c *Coordinator) finishForward(id uint64, code signalCode) {
	f := c.fwd[id]
	if f == nil {
		return
	}
	delete(c.fwd, id)
	if code != sigOK {
		c.sigFailed.Add(1)
	}
	f.s.send(signalResultFrame(f.id, code))
}

func (c *Coordinator) expireForwards(now time.Time) {
	for id, f := range c.fwd {
		if now.After(f.deadline) {
			c.finishForward(id, sigPeerOffline)
		}
	}
}

// outMsg is one message for a peer coordinator; fwdID is set for signals
// this coordinator forwards, so that a failed send can answer the node.
type outMsg struct {
	msg   []byte
	fwdID uint64
}

// peerSender owns the reliable stream traffic to one other coordinator:
// messages are sent in order, batched while the previous send was in flight.
type peerSender struct {
	c    *Coordinator
	name string
	q    chan outMsg
	quit chan struct{}
	once sync.Once
}

func (c *Coordinator) newPeerSender(name string) *peerSender {
	p := &peerSender{c: c, name: name, q: make(chan outMsg, 4096), quit: make(chan struct{})}
	c.wg.Add(1)
	go p.run()
	return p
}

// enqueue never blocks; false means the queue is full.
func (p *peerSender) enqueue(m outMsg) bool {
	select {
	case p.q <- m:
		return true
	default:
		return false
	}
}

func (p *peerSender) stop() { p.once.Do(func() { close(p.quit) }) }

func (p *peerSender) run() {
	defer p.c.wg.Done()
	for {
		var batch []outMsg
		select {
		case <-p.quit:
			return
		case m := <-p.q:
			batch = append(batch, m)
		}
		size := len(batch[0].msg)
	fill:
		for len(batch) < maxBatchMessages && size < maxBatchBytes/2 {
			select {
			case m := <-p.q:
				batch = append(batch, m)
				size += len(m.msg)
			default:
				break fill
			}
		}
		if err := p.send(batch); err != nil {
			if p.c.ctx.Err() == nil {
				p.c.log.Debug("reliable send to coordinator failed", "member", p.name, "messages", len(batch), "error", err)
			}
			var ids []uint64
			for _, m := range batch {
				if m.fwdID != 0 {
					ids = append(ids, m.fwdID)
				}
			}
			if len(ids) > 0 {
				select {
				case p.c.fwdFailed <- ids:
				case <-p.c.ctx.Done():
				}
			}
		}
	}
}

var errNotMember = errors.New("discovery: coordinator is not a live member")

func (p *peerSender) send(batch []outMsg) error {
	node, ok := p.c.del.member(p.name)
	if !ok {
		return errNotMember
	}
	if len(batch) == 1 {
		return p.c.ml.SendReliable(node, batch[0].msg)
	}
	msgs := make([][]byte, len(batch))
	for i, m := range batch {
		msgs[i] = m.msg
	}
	return p.c.ml.SendReliable(node, encodeGossipBatch(msgs))
}
