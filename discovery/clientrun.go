package discovery

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/pki"
)

// clientSession is one TLS session to a coordinator. The reader and writer
// goroutines touch only conn, the channels and readTimeout; every other
// field belongs to the client's run goroutine.
type clientSession struct {
	addr        string
	conn        *tls.Conn
	coordCert   *pki.NodeCert
	out         chan []byte
	in          chan frame
	quit        chan struct{}
	readerDone  chan struct{}
	readErr     error // set by the reader before readerDone closes
	readTimeout atomic.Int64
	once        sync.Once

	// Run goroutine only.
	welcomed  bool
	coord     string
	since     time.Time
	keepalive time.Duration
	snapshot  map[string]*Record // non-nil while a snapshot is arriving
	snapCount uint32             // entries the snapshot announced (at most MaxRegistryEntries)
	snapGot   uint32             // entries it carried so far; never more than snapCount
	pending   map[uint32]chan error
	endErr    error    // why the run goroutine ended the session
	coordCRL  *big.Int // number of the newest CRL exchanged on this session
	turnSeen  bool     // the coordinator sent TURN credentials on this session
}

func (s *clientSession) close() {
	s.once.Do(func() {
		close(s.quit)
		_ = s.conn.Close()
	})
}

// send queues a frame; a session that cannot take more is closed.
func (s *clientSession) send(b []byte) {
	select {
	case s.out <- b:
	default:
		if s.endErr == nil {
			s.endErr = errors.New("discovery: session send queue full")
		}
		s.close()
	}
}

type dialResult struct {
	addr string
	conn *tls.Conn
	cert *pki.NodeCert
	err  error
}

// run is the owner of the client's state.
func (c *Client) run() {
	defer c.wg.Done()
	redial := time.NewTimer(time.Hour)
	redial.Stop()
	cacheTimer := time.NewTimer(time.Hour)
	cacheTimer.Stop()
	cacheArmed := false
	c.ping = time.NewTicker(time.Hour)
	defer c.ping.Stop()
	crlTick := time.NewTicker(c.opts.CRLCheckInterval)
	defer crlTick.Stop()
	defer func() {
		redial.Stop()
		cacheTimer.Stop()
		if c.sess != nil {
			c.endSession(ErrClosed)
		}
	}()

	c.startDial()
	for {
		var in <-chan frame
		var readerDone, drained <-chan struct{}
		if c.sess != nil {
			readerDone = c.sess.readerDone
			// Backpressure: while subscribers lag, frames wait in the
			// session (and then in TCP, and then in the coordinator's
			// send queue, which closes a session that does not read)
			// rather than as changes here. One frame adds at most
			// 2×MaxRegistryEntries changes (a snapshot's end), so the
			// queue stays below changeBacklog + 2×MaxRegistryEntries.
			if c.changes.backlog() <= c.changeBacklog {
				in = c.sess.in
			} else {
				drained = c.changes.drained
			}
		}
		changedBefore := c.regVersion
		select {
		case <-c.ctx.Done():
			return
		case r := <-c.dialResult:
			c.dialing = false
			c.dialed(r)
			if c.sess == nil && !c.left {
				redial.Reset(c.backoff())
			}
		case f := <-in:
			c.handleFrame(f)
			if c.sess != nil && c.sess.endErr != nil {
				c.endSession(c.sess.endErr)
			}
			if c.sess == nil && !c.left {
				redial.Reset(c.backoff())
			}
		case <-drained:
			// Subscribers caught up; the loop takes frames again.
		case <-readerDone:
			// The reader queued its last frames before it stopped (a
			// tombstone's echo, a refusal's reason): apply them first
			// (at most the channel's capacity, whatever the backlog).
			for empty := false; !empty && c.sess.endErr == nil; {
				select {
				case f := <-c.sess.in:
					c.handleFrame(f)
				default:
					empty = true
				}
			}
			err := c.sess.readErr
			if c.sess.endErr == nil && isFrameError(err) {
				c.framesBad.Add(1)
			}
			c.endSession(err)
			if !c.left {
				redial.Reset(c.backoff())
			}
		case <-redial.C:
			c.startDial()
		case <-c.ping.C:
			if c.sess != nil && c.sess.welcomed {
				c.sess.send(pingFrame(framePing, uint64(time.Now().UnixNano())))
			}
		case now := <-crlTick.C:
			c.checkCRL()
			c.sweepAbsent(now)
		case <-cacheTimer.C:
			cacheArmed = false
			c.writeCache()
		case fn := <-c.cmds:
			fn()
		}
		if c.regVersion != changedBefore && c.cachePath != "" && !cacheArmed {
			cacheArmed = true
			cacheTimer.Reset(c.opts.CacheDelay)
		}
	}
}

// isFrameError reports whether a session read failed on the coordinator's
// input (an oversized, unknown-version or malformed frame, a count over its
// limit) rather than on the connection.
func isFrameError(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrUnsupportedVersion)
}

// startDial tries the current coordinator in a goroutine of its own.
func (c *Client) startDial() {
	if c.dialing || c.sess != nil || c.left || c.ctx.Err() != nil {
		return
	}
	addr := c.opts.Coordinators[c.coordIdx%len(c.opts.Coordinators)]
	c.dialing = true
	c.status.Address = addr
	c.publishStatus()
	c.wg.Add(1)
	go c.dial(addr)
}

func (c *Client) dial(addr string) {
	defer c.wg.Done()
	var peer *pki.NodeCert
	conf := &tls.Config{
		Certificates: []tls.Certificate{c.creds.Load().TLSCertificate()},
		// Verification is pki's (VerifyPeerCertificate below), which checks
		// the chain to the mesh CA itself.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{sessionALPN},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return fmt.Errorf("%w: coordinator sent no certificate", ErrCertificateRejected)
			}
			nc, err := verifyCoordinatorCert(c.opts.Verifier, raw[0], time.Now(), c.opts.CoordinatorNames)
			if err != nil {
				return fmt.Errorf("%w: coordinator certificate: %w", ErrCertificateRejected, err)
			}
			peer = nc
			return nil
		},
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.DialTimeout)
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: conf}
	conn, err := d.DialContext(ctx, "tcp", addr)
	cancel()
	r := dialResult{addr: addr, err: err, cert: peer}
	if err == nil {
		r.conn = conn.(*tls.Conn)
		if p := r.conn.ConnectionState().NegotiatedProtocol; p != sessionALPN {
			_ = conn.Close()
			r.conn, r.err = nil, fmt.Errorf("discovery: %s is not a meshd coordinator (ALPN %q)", addr, p)
		}
	}
	select {
	case c.dialResult <- r:
	case <-c.ctx.Done():
		if r.conn != nil {
			_ = r.conn.Close()
		}
	}
}

// dialed starts a session on a fresh connection and registers.
func (c *Client) dialed(r dialResult) {
	if r.err != nil {
		c.attemptFailed(r.addr, r.err)
		return
	}
	s := &clientSession{
		addr:       r.addr,
		conn:       r.conn,
		coordCert:  r.cert,
		out:        make(chan []byte, 1024),
		in:         make(chan frame, 64),
		quit:       make(chan struct{}),
		readerDone: make(chan struct{}),
		pending:    map[uint32]chan error{},
	}
	s.readTimeout.Store(int64(c.opts.DialTimeout))
	c.sess = s
	c.wg.Add(2)
	go c.sessionReader(s)
	go c.sessionWriter(s)
	s.send(recordFrame(frameRecord, c.local))
	// Ping at a third of the coordinator's silence limit once welcomed;
	// until then this is just a placeholder period.
	c.ping.Reset(c.opts.DialTimeout)
	c.log.Debug("session established; registering", "coordinator", r.addr)
}

func (c *Client) sessionReader(s *clientSession) {
	defer c.wg.Done()
	defer close(s.readerDone)
	br := bufio.NewReaderSize(s.conn, 32<<10)
	var hdr [frameHeaderLen]byte
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(time.Duration(s.readTimeout.Load())))
		f, err := readFrame(br, &hdr)
		if err != nil {
			s.readErr = err
			return
		}
		select {
		case s.in <- f:
		case <-s.quit:
			s.readErr = ErrClosed
			return
		}
	}
}

func (c *Client) sessionWriter(s *clientSession) {
	defer c.wg.Done()
	bw := bufio.NewWriterSize(s.conn, 16<<10)
	for {
		select {
		case <-s.quit:
			return
		case b := <-s.out:
			_ = s.conn.SetWriteDeadline(time.Now().Add(c.opts.DialTimeout))
			_, err := bw.Write(b)
			for err == nil && len(s.out) > 0 {
				_, err = bw.Write(<-s.out)
			}
			if err == nil {
				err = bw.Flush()
			}
			if err != nil {
				s.close()
				return
			}
		}
	}
}

// endSession tears the current session down and records why.
func (c *Client) endSession(err error) {
	s := c.sess
	if s == nil {
		return
	}
	c.sess = nil
	s.close()
	if s.endErr != nil {
		err = s.endErr
	}
	lost := fmt.Errorf("%w: session to %s ended", ErrNotConnected, s.addr)
	for id, ch := range s.pending {
		ch <- lost
		delete(s.pending, id)
	}
	if c.leaving != nil {
		c.leaving <- fmt.Errorf("discovery: leave not confirmed before the session ended: %w", err)
		c.leaving = nil
	}
	wasUp := s.welcomed
	c.status.Connected, c.status.Coordinator = false, ""
	if c.ctx.Err() != nil || c.left {
		c.publishStatus()
		return
	}
	var refused *RefusedError
	c.dupNext = false
	switch {
	case errors.As(err, &refused) && refused.Code == CodeDuplicateIdentity:
		c.conflictRefused(s, refused)
		c.status.LastError, c.status.LastErrorAt = err, time.Now()
		// The coordinator is fine; the refusal is about this node. Stay
		// with it (another would refuse as well) and back off.
		c.publishStatus()
		return
	case errors.Is(err, errRenewed):
		// Not a failure: the same coordinator at once, with the new
		// certificate (SetCredentials).
		c.log.Info("certificate renewed; re-registering with it", "coordinator", s.addr)
		c.publishStatus()
		return
	case errors.As(err, &refused) && refused.Code.refusal():
		c.log.Error("coordinator refused the session", "coordinator", s.addr, "code", refused.Code.String(), "reason", refused.Reason)
	case wasUp:
		c.log.Warn("coordinator session lost; failing over", "coordinator", s.addr, "error", err)
	default:
		c.log.Warn("coordinator session failed before registration", "coordinator", s.addr, "error", err)
	}
	c.status.LastError, c.status.LastErrorAt = err, time.Now()
	if !wasUp {
		c.attempts++
	}
	c.coordIdx++
	c.publishStatus()
}

func (c *Client) attemptFailed(addr string, err error) {
	if c.ctx.Err() != nil {
		return
	}
	c.dupNext = false
	if errors.Is(err, ErrCertificateRejected) {
		c.log.Error("refusing coordinator: certificate rejected", "coordinator", addr, "reason", err)
	} else {
		c.log.Warn("could not reach coordinator", "coordinator", addr, "error", err)
	}
	c.status.LastError, c.status.LastErrorAt = err, time.Now()
	c.attempts++
	c.coordIdx++
	c.publishStatus()
}

// backoff is the delay before the next attempt: short and jittered when
// failing over from a working session, exponential per full round of failed
// attempts over the coordinator list, capped, with ±50% jitter so that the
// nodes of a lost coordinator do not reconnect in lockstep.
func (c *Client) backoff() time.Duration {
	if c.dupNext {
		return c.conflictBackoff()
	}
	n := len(c.opts.Coordinators)
	rounds := c.attempts / n
	d := c.opts.BackoffMin
	for i := 0; i < rounds && d < c.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.opts.BackoffMax)
	if c.attempts == 0 {
		return time.Duration(rand.Int64N(int64(d) + 1))
	}
	return d/2 + time.Duration(rand.Int64N(int64(d)/2+1))
}

// handleFrame applies one frame from the coordinator.
func (c *Client) handleFrame(f frame) {
	s := c.sess
	switch f.typ {
	case frameError:
		code := ErrorCode(f.code)
		switch code {
		case CodeStaleRecord:
			c.staleAnswer(s, f.version)
		case CodeRateLimited:
			c.log.Debug("coordinator rate-limited a frame", "detail", f.text)
		case CodeDuplicateIdentity:
			s.endErr = parseDuplicate(s.addr, f)
		default:
			s.endErr = &RefusedError{Coordinator: s.addr, Code: code, Reason: f.text}
		}
	case frameWelcome:
		c.welcome(s, f)
	case frameCRL:
		crl, err := pki.ParseCRLDER(f.crl)
		if err == nil {
			_, err = c.opts.Verifier.UpdateCRL(crl)
		}
		if err != nil {
			c.log.Warn("CRL from coordinator rejected", "coordinator", s.addr, "reason", err)
			return
		}
		if s.coordCRL == nil || crl.Number().Cmp(s.coordCRL) > 0 {
			s.coordCRL = crl.Number()
		}
		c.checkCRL()
	case frameTURN:
		s.turnSeen = true
		t := f.turn
		c.turnPub.Store(&t)
		tc := t
		c.changes.push(Change{Kind: TURNUpdated, TURN: &tc})
	case frameSnapshotBegin:
		if s.snapshot != nil {
			c.framesBad.Add(1)
			s.endErr = fmt.Errorf("%w: snapshot begin inside a snapshot", ErrMalformed)
			return
		}
		// f.count is at most MaxRegistryEntries (decodePayload), so this
		// map is at most ~0.5 MiB however hostile the coordinator.
		s.snapshot = make(map[string]*Record, f.count)
		s.snapCount, s.snapGot = f.count, 0
		if !s.turnSeen {
			// A coordinator sends its TURN credentials before the snapshot;
			// this one has none (its TURN is off). The credentials of the
			// previous session name another coordinator's TURN, which may be
			// gone or disabled: stop handing them to ICE.
			c.clearTURN()
		}
	case frameEntry:
		if s.snapshot != nil {
			// Counted before verification: entries beyond the announced
			// count are a protocol error whether or not they verify.
			if s.snapGot >= s.snapCount {
				c.framesBad.Add(1)
				s.endErr = fmt.Errorf("%w: %w: snapshot carries more entries than the %d it announced", ErrMalformed, ErrLimitExceeded, s.snapCount)
				return
			}
			s.snapGot++
		}
		rec := c.verifyEntry(f.entry)
		if rec == nil {
			return
		}
		if s.snapshot != nil {
			if old := s.snapshot[rec.Name]; old == nil || rec.Version >= old.Version {
				s.snapshot[rec.Name] = rec
			}
			return
		}
		c.applyEntry(rec)
	case frameSnapshotEnd:
		if s.snapshot == nil {
			c.framesBad.Add(1)
			s.endErr = fmt.Errorf("%w: snapshot end without begin", ErrMalformed)
			return
		}
		c.replaceRegistry(s, s.snapshot)
		s.snapshot = nil
		// A CRL this node learnt while away goes up, unless the coordinator
		// already sent one at least as new with the snapshot.
		c.sendCRLUp(s)
	case frameRemove:
		c.removePeer(f.name, f.version, removeReason(f.code).String())
	case frameDeliver:
		if c.opts.OnSignal == nil {
			c.signalsDropped.Add(1)
			return
		}
		select {
		case c.signals <- signalIn{from: f.name, payload: f.payload}:
		default:
			c.signalsDropped.Add(1)
		}
	case frameSignalResult:
		if ch := s.pending[f.id]; ch != nil {
			delete(s.pending, f.id)
			ch <- signalCode(f.code).err()
		}
	case framePong:
	default:
		c.framesBad.Add(1)
		s.endErr = fmt.Errorf("%w: %s frame is not sent by coordinators", ErrMalformed, f.typ)
	}
}

// staleAnswer handles a coordinator's "stale record, holding held": the
// coordinator holds a record of this node at least as new as the one sent
// (the clock stepped back, or a previous incarnation registered). The node
// signs above held and resends, but only while held is below versionLimit:
// a version further ahead is no record this node can have signed within
// MaxVersionSkew of its clock (receivers refuse those), so following it
// would hand the coordinator the node's version counter, up to 2^64 where
// it wraps. Then the node keeps its own version and ends the session; it
// fails over, and a coordinator that insists can at worst refuse service.
func (c *Client) staleAnswer(s *clientSession, held uint64) {
	if held >= c.local.Version {
		now := time.Now()
		if lim := versionLimit(now); held >= lim {
			c.versionsRefused.Add(1)
			if held != c.refusedHeld {
				c.refusedHeld = held
				c.log.Warn("coordinator claims a record version of this node too far in the future; not following it",
					"coordinator", s.addr, "held", held, "limit", lim, "version", c.local.Version)
			}
			s.endErr = fmt.Errorf("%w: coordinator %s claims to hold version %d of this node, beyond %d (now + %v); keeping version %d",
				ErrFutureVersion, s.addr, held, lim, MaxVersionSkew, c.local.Version)
			return
		}
		// held < lim, so held+1 neither wraps nor exceeds what receivers accept.
		rec, err := newLocalRecord(c.creds.Load(), c.info, max(held+1, c.nextVersion()), c.local.Left)
		if err != nil {
			s.endErr = err
			return
		}
		c.local = rec
		c.log.Info("coordinator holds a newer record of this node; re-signing", "held", held, "version", c.local.Version)
	}
	t := frameRecord
	if c.local.Left {
		t = frameLeave
	}
	s.send(recordFrame(t, c.local))
}

func (c *Client) welcome(s *clientSession, f frame) {
	if s.welcomed {
		return
	}
	s.welcomed = true
	s.coord, s.since = f.name, fromUnixNano(f.since)
	s.keepalive = f.period
	if s.keepalive <= 0 {
		s.keepalive = 5 * time.Second
	}
	s.readTimeout.Store(int64(3 * s.keepalive))
	if c.everUp {
		c.failovers.Add(1)
		c.status.Failovers = c.failovers.Load()
	}
	c.everUp = true
	c.attempts = 0
	if c.status.Conflict.Active() {
		c.log.Info("session established: no other host holds this node's session any more", "refusals", c.status.Conflict.Refusals)
	}
	c.status.Conflict, c.dupStreak, c.dupHint, c.conflictLogged = Conflict{}, 0, 0, ""
	c.status.Connected, c.status.Coordinator, c.status.Address, c.status.Since = true, f.name, s.addr, time.Now()
	c.publishStatus()
	c.log.Info("connected to coordinator", "coordinator", f.name, "address", s.addr, "version", f.version)
	c.ping.Reset(s.keepalive)
}

// verifyEntry verifies an entry's record, reusing the held record when the
// signed bytes are unchanged.
func (c *Client) verifyEntry(e rawEntry) *Record {
	if name, ok := peekRecordName(e.raw); ok {
		if name == c.name {
			// Our own record: the only news in it is the confirmation of a
			// Leave in progress.
			if c.leaving != nil && string(e.raw) == string(c.local.raw) {
				c.leaving <- nil
				c.leaving = nil
			}
			return nil
		}
		if cur := c.reg[name]; cur != nil && string(cur.raw) == string(e.raw) {
			return withPresence(cur, e.pres)
		}
	}
	rec, err := verifyRecord(c.opts.Verifier, e.raw, time.Now())
	if err != nil {
		c.rc.count(err)
		c.log.Debug("record from coordinator rejected", "error", err)
		return nil
	}
	rec.Presence = e.pres
	return rec
}

// applyEntry applies one record outside a snapshot.
func (c *Client) applyEntry(rec *Record) {
	cur := c.reg[rec.Name]
	if _, ok := c.absent[rec.Name]; ok {
		// The coordinator holds the peer (again): no longer absent.
		delete(c.absent, rec.Name)
		if cur != nil {
			c.log.Debug("absent peer confirmed by the coordinator", "peer", rec.Name)
		}
	}
	if cur != nil && rec.Version < cur.Version {
		c.rc.count(&RecordError{Name: rec.Name, Reason: ErrStaleRecord})
		return
	}
	if rec.Left {
		if cur != nil {
			c.dropPeer(cur, ReasonLeft)
		}
		return
	}
	if cur != nil && cur.sameSigned(rec) && cur.Presence == rec.Presence {
		return
	}
	if cur == nil && len(c.reg) >= MaxRegistryEntries {
		// No coordinator holds more; a coordinator sending more peers
		// one Entry at a time does not grow this node beyond it.
		c.rc.count(&RecordError{Name: rec.Name, Reason: fmt.Errorf("%w: %d peers held", ErrLimitExceeded, len(c.reg))})
		return
	}
	c.reg[rec.Name] = rec
	kind := PeerUpdated
	if cur == nil {
		kind = PeerAdded
	}
	c.changed(Change{Kind: kind, Peer: rec.Clone()})
}

// replaceRegistry installs a coordinator's full snapshot. Records held here
// in a newer version than the snapshot's are kept (a lagging coordinator
// after failover catches up by gossip). Peers the snapshot lacks are kept
// too, for AbsenceGrace (sweepAbsent): a restarted coordinator's snapshot
// holds only the nodes that have reconnected so far.
func (c *Client) replaceRegistry(s *clientSession, snap map[string]*Record) {
	now := time.Now()
	missing := 0
	for name := range c.reg {
		if snap[name] != nil {
			continue
		}
		if _, ok := c.absent[name]; !ok {
			c.absent[name] = now
			missing++
		}
	}
	if missing > 0 {
		c.log.Info("coordinator snapshot lacks peers; keeping them for the absence grace period",
			"coordinator", s.coord, "missing", missing, "absent", len(c.absent), "grace", c.opts.AbsenceGrace)
	}
	for _, rec := range snap {
		c.applyEntry(rec)
	}
}

// sweepAbsent drops the peers missing from the coordinators' registry for
// longer than AbsenceGrace. The time counts only while a session is up and
// past its snapshot: a disconnected node cannot tell absence from silence.
func (c *Client) sweepAbsent(now time.Time) {
	s := c.sess
	if len(c.absent) == 0 || s == nil || !s.welcomed || s.snapshot != nil {
		return
	}
	for name, since := range c.absent {
		if now.Sub(since) < c.opts.AbsenceGrace {
			continue
		}
		delete(c.absent, name)
		if rec := c.reg[name]; rec != nil {
			c.log.Info("peer absent from the coordinator's registry beyond the grace period", "peer", name, "coordinator", s.coord, "since", since.UTC())
			c.dropPeer(rec, ReasonGone)
		}
	}
}

func (c *Client) removePeer(name string, version uint64, reason string) {
	cur := c.reg[name]
	if cur == nil || (reason == ReasonLeft && version < cur.Version) {
		return
	}
	c.dropPeer(cur, reason)
}

func (c *Client) dropPeer(rec *Record, reason string) {
	delete(c.reg, rec.Name)
	delete(c.absent, rec.Name)
	c.log.Info("peer removed", "peer", rec.Name, "reason", reason)
	c.changed(Change{Kind: PeerRemoved, Peer: rec.Clone(), Reason: reason})
}

// changed publishes the registry and queues the change for subscribers.
func (c *Client) changed(ch Change) {
	c.regVersion++
	c.publishPeers()
	c.changes.push(ch)
}

// checkCRL announces a newer CRL in the Verifier (from the coordinator, from
// PublishCRL or installed by the daemon), drops revoked peers, and passes it
// to the coordinator.
func (c *Client) checkCRL() {
	cur := c.opts.Verifier.CRL()
	if cur == nil || (c.lastCRL != nil && cur.Number().Cmp(c.lastCRL.Number()) <= 0) {
		return
	}
	c.lastCRL = cur
	c.regVersion++
	c.log.Info("CRL updated", "number", cur.Number().String())
	c.changes.push(Change{Kind: CRLUpdated, CRL: cur})
	for _, rec := range c.reg {
		if c.opts.Verifier.IsRevoked(rec.Cert.Cert.SerialNumber) {
			c.dropPeer(rec, ReasonRevoked)
		}
	}
	if c.opts.Verifier.IsRevoked(c.creds.Load().Cert.Cert.SerialNumber) {
		c.log.Error("this node's certificate is revoked; coordinators will refuse it")
	}
	if s := c.sess; s != nil && s.welcomed && s.snapshot == nil {
		c.sendCRLUp(s)
	}
}

// sendCRLUp passes the verifier's CRL to the coordinator when it is newer
// than any the coordinator sent on this session (no echo of its own).
func (c *Client) sendCRLUp(s *clientSession) {
	cur := c.opts.Verifier.CRL()
	if cur == nil || len(cur.Raw) > MaxFrameSize || (s.coordCRL != nil && cur.Number().Cmp(s.coordCRL) <= 0) {
		return
	}
	s.coordCRL = cur.Number()
	s.send(crlFrame(cur.Raw))
}

// loadCache reads and verifies the cached registry (before run starts).
func (c *Client) loadCache() {
	if c.cachePath == "" {
		return
	}
	b, err := readCacheFile(c.cachePath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("registry cache unreadable; starting empty", "path", c.cachePath, "error", err)
		}
		return
	}
	crlDER, entries, err := decodeCache(b)
	if err != nil {
		c.log.Warn("registry cache invalid; starting empty", "path", c.cachePath, "error", err)
		return
	}
	if len(crlDER) > 0 {
		if crl, err := pki.ParseCRLDER(crlDER); err == nil {
			if _, err := c.opts.Verifier.UpdateCRL(crl); err != nil {
				c.log.Warn("cached CRL rejected", "error", err)
			}
		}
	}
	now := time.Now()
	for _, e := range entries {
		rec, err := verifyRecord(c.opts.Verifier, e.raw, now)
		if err != nil {
			c.rc.count(err)
			c.log.Info("cached record dropped", "error", err)
			continue
		}
		rec.Presence = e.pres
		if rec.Name == c.name {
			if rec.Version > c.local.Version {
				// Never publish below what the mesh already holds.
				if r, err := newLocalRecord(c.creds.Load(), c.info, rec.Version+1, false); err == nil {
					c.local = r
				}
			}
			continue
		}
		if !rec.Left {
			c.reg[rec.Name] = rec
			c.changes.push(Change{Kind: PeerAdded, Peer: rec.Clone()})
		}
	}
	c.lastCRL = c.opts.Verifier.CRL()
	c.publishPeers()
	c.log.Info("registry cache loaded", "peers", len(c.reg), "path", c.cachePath)
}

// writeCache stores the registry (and the node's own record) atomically.
func (c *Client) writeCache() {
	if c.cachePath == "" {
		return
	}
	recs := make([]*Record, 0, len(c.reg)+1)
	recs = append(recs, c.local)
	for _, r := range c.reg {
		recs = append(recs, r)
	}
	var crl []byte
	if cur := c.opts.Verifier.CRL(); cur != nil {
		crl = cur.Raw
	}
	if err := writeFileAtomic(c.cachePath, encodeCache(crl, recs, time.Now())); err != nil {
		c.log.Warn("could not write the registry cache", "path", c.cachePath, "error", err)
	}
}

// conflictRefused records a duplicate-identity refusal: counted, shown in
// Status().Conflict, logged once per distinct conflict (the refusals repeat
// at every retry; the log line should not).
func (c *Client) conflictRefused(s *clientSession, e *RefusedError) {
	c.dupRefusals.Add(1)
	c.dupStreak++
	c.dupHint, c.dupNext = e.RetryAfter, true
	if !s.welcomed {
		c.attempts++
	}
	coord := s.addr
	if s.coordCert != nil {
		coord = s.coordCert.Identity.Name
	}
	now := time.Now()
	cf := c.status.Conflict
	if !cf.Active() {
		cf.First = now
	}
	cf.Holder, cf.Coordinator, cf.Last = e.Holder, coord, now
	cf.Refusals++
	c.status.Conflict = cf
	if why := cf.String(); why != c.conflictLogged {
		c.conflictLogged = why
		c.log.Error("another host is using this node's identity: coordinator refused the session; retrying with backoff",
			"conflict", why, "coordinator", s.addr, "holder", e.Holder, "detail", e.Reason)
	} else {
		c.log.Debug("coordinator refused the session again: duplicate identity", "coordinator", s.addr, "holder", e.Holder, "refusals", cf.Refusals)
	}
}

// conflictBackoff is the delay after a duplicate-identity refusal: the
// first retry comes soon (a node that restarted while its old session was
// still being closed gets in then); later ones wait for the coordinator's
// hint (when it will know whether the holder is alive) or the doubled
// delay, whichever is longer, up to ConflictBackoffMax, plus up to 25%
// jitter. A clone thus knocks a handful of times a minute, not hundreds.
func (c *Client) conflictBackoff() time.Duration {
	d := c.opts.ConflictBackoffMin
	for i := 1; i < c.dupStreak && d < c.opts.ConflictBackoffMax; i++ {
		d *= 2
	}
	if c.dupStreak > 1 {
		d = max(d, c.dupHint)
	}
	d = min(d, c.opts.ConflictBackoffMax)
	return d + time.Duration(rand.Int64N(int64(d)/4+1))
}
