package discovery

import (
	"math/big"
	"time"
)

// replication.go: how the coordinator's run goroutine keeps its replica,
// its sessions and the other coordinators in step: housekeeping, change
// dissemination, membership reconciliation and CRL propagation.

// sweep is the periodic housekeeping of the run loop.
func (c *Coordinator) sweep() {
	now := time.Now()
	c.checkCRL()
	for _, r := range c.reg.sweepExpired(now) {
		c.log.Info("node record expired", "peer", r.rec.Name)
		c.broadcastSessions(removeFrame(r.rec.Name, r.rec.Version, r.why))
		c.stateDirty = true
	}
	c.reconcileMembers()
	c.retryHellos(now)
	c.refreshTURN(now)
	c.expireForwards(now)
	c.checkProbes(now)
	c.expireDupQueries(now)
	c.pruneDupLogged(now)
	c.expireStartGrace(now)
	if c.stateDirty {
		c.encodeState()
		c.cacheDirty = true
	}
	c.queueCache(now, false)
	c.nRecords.Store(int64(len(c.reg.entries)))
	c.nSessions.Store(int64(len(c.sessions)))
}

// encodeState refreshes what LocalState hands to push/pull.
func (c *Coordinator) encodeState() {
	var crl []byte
	if cur := c.opts.Verifier.CRL(); cur != nil {
		crl = cur.Raw
	}
	st := encodeGossipState(crl, c.reg.records())
	c.del.state.Store(&st)
	c.stateDirty = false
}

// reconcileMembers syncs peer senders with memberlist's live members and
// marks sessions held by departed coordinators offline.
func (c *Coordinator) reconcileMembers() {
	now := time.Now()
	alive := map[string]bool{}
	for _, m := range c.del.memberList() {
		alive[m.Name] = true
		if m.Name != c.name && c.peers[m.Name] == nil {
			p := c.newPeerSender(m.Name)
			c.peers[m.Name] = p
			// Prove our role to it first thing (gossipauth.go).
			c.sendHello(m.Name, p, now)
		}
	}
	c.nMembers.Store(int64(len(alive)))
	for name, p := range c.peers {
		if !alive[name] {
			p.stop()
			delete(c.peers, name)
			c.untrust(name)
		}
	}
	// A registration waiting for a coordinator that is gone goes ahead: the
	// sessions it held are being marked offline just below.
	for id, q := range c.dupQueries {
		if !alive[q.holder] {
			c.finishDupQuery(id, dupUnreachable, nil)
		}
	}
	for name, e := range c.reg.entries {
		p := e.rec.Presence
		if p.Online && p.Coordinator != c.name && !alive[p.Coordinator] {
			p.Online, p.Changed = false, now
			c.entryChanged(c.reg.setPresence(name, p), false)
		}
	}
}

// entryChanged tells live sessions and the other coordinators about e.
// record says whether the signed record changed (else only presence did).
func (c *Coordinator) entryChanged(e *regEntry, record bool) {
	if e == nil {
		return
	}
	c.stateDirty = true
	c.broadcastSessions(e.entryFrame())
	if record {
		c.disseminate("r:"+e.rec.Name, e.gossipMsg())
	} else {
		c.disseminate("p:"+e.rec.Name, encodeGossipPresence(e.rec.Name, e.rec.Presence))
	}
}

// broadcastSessions queues frame for every live session.
func (c *Coordinator) broadcastSessions(frame []byte) {
	for _, s := range c.sessions {
		if s.live {
			s.send(frame)
		}
	}
}

// spillDepth: beyond this many queued broadcasts (a burst of registrations),
// changes travel by reliable batched sends instead, which move a burst in a
// few round trips rather than one packet per gossip interval.
const spillDepth = 64

// disseminate sends a message to every other coordinator: on memberlist's
// broadcast queue when it fits a gossip packet, else reliably to each live
// member. Push/pull anti-entropy repairs anything lost either way.
func (c *Coordinator) disseminate(name string, msg []byte) {
	if len(msg) <= c.bcastMax && c.queue.NumQueued() < spillDepth {
		c.queue.QueueBroadcast(&broadcast{name: name, msg: msg})
		return
	}
	c.fanouts.Add(1)
	for name, p := range c.peers {
		if c.trusted[name] != nil {
			p.enqueue(outMsg{msg: msg})
		}
	}
}

// checkCRL propagates the verifier's CRL when it is newer than the last one
// this coordinator propagated (it may have been installed by a session, by
// gossip, by PublishCRL, or by the daemon directly), and drops revoked nodes.
func (c *Coordinator) checkCRL() {
	cur := c.opts.Verifier.CRL()
	if cur == nil || (c.lastCRL != nil && cur.Number().Cmp(c.lastCRL) <= 0) {
		return
	}
	c.lastCRL = new(big.Int).Set(cur.Number())
	c.crlsInstalled.Add(1)
	c.log.Info("CRL installed; propagating", "number", cur.Number().String(), "revoked", len(cur.List.RevokedCertificateEntries))
	c.disseminate("crl", encodeGossipCRL(cur.Raw))
	c.broadcastSessions(crlFrame(cur.Raw))
	for _, r := range c.reg.dropRevoked() {
		c.log.Warn("node revoked; record dropped", "peer", r.rec.Name, "serial", r.rec.Cert.Cert.SerialNumber.String())
		c.broadcastSessions(removeFrame(r.rec.Name, r.rec.Version, removeRevoked))
	}
	for name, nc := range c.trusted {
		if c.opts.Verifier.IsRevoked(nc.Cert.SerialNumber) {
			c.log.Warn("coordinator's certificate revoked; no longer trusted", "member", name)
			c.untrust(name)
		}
	}
	for name, s := range c.sessions {
		if c.opts.Verifier.IsRevoked(s.cert.Cert.SerialNumber) {
			c.log.Warn("closing session of revoked node", "peer", name)
			s.kill(CodeRevoked, "certificate revoked by CRL "+cur.Number().String())
			delete(c.sessions, name)
		}
	}
	c.stateDirty = true
}

// applyCRL installs a CRL received from gossip (verified once per distinct
// CRL, crlcache.go) and propagates it if it is newer.
func (c *Coordinator) applyCRL(der []byte) error {
	installed, repeat, err := c.crls.verifyCRL(c.opts.Verifier, der)
	if repeat {
		c.crlRepeats.Add(1)
	}
	if installed {
		c.checkCRL()
	}
	return err
}

// nextSince is the start of a new session for a node whose current presence
// is prev: now, but never at or before prev (a hybrid logical clock, so that
// clock skew between coordinators cannot order a newer session first).
func nextSince(prev Presence) time.Time {
	now := time.Now().UnixNano()
	if p := unixNano(prev.Since); now <= p {
		now = p + 1
	}
	return time.Unix(0, now)
}
