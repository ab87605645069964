package discovery

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/pki"
	"golang.org/x/time/rate"
)

// A node session as the coordinator serves it:
//
//	serveConn (one goroutine): TLS handshake → pki check of the client
//	  certificate (refusal carries the reason in an error frame) → read loop:
//	  decode, rate-limit, verify records → events to the run loop.
//	writer (one goroutine): drains the send queue into the TLS connection;
//	  on kill writes what is queued plus the final error frame, then closes.
//	run loop: registration, registry changes, routing; it only ever queues
//	  frames (never blocks on a session) and kills sessions that cannot keep up.

type sessEvKind uint8

const (
	evRecord sessEvKind = iota + 1
	evLeave
	evSignal
	evCRL
	evClosed
)

type sessionEvent struct {
	s    *session
	kind sessEvKind
	rec  *Record // record, leave: verified
	f    frame   // signal, crl
	err  error   // closed: why
}

// outItem is one entry of a session's send queue: one frame or a batch of
// frames that must stay together (a snapshot). Frames are shared between
// sessions and never modified.
type outItem struct {
	frame []byte
	bulk  [][]byte
}

// sendQueue is a session's outbound queue. A slice rather than a buffered
// channel: thousands of mostly idle sessions should not each hold a
// preallocated queue, and the writer takes everything queued at once.
type sendQueue struct {
	mu    sync.Mutex
	items []outItem // guarded by mu
	max   int
	wake  chan struct{} // cap 1
}

// push queues it; false means the queue is full.
func (q *sendQueue) push(it outItem) bool {
	q.mu.Lock()
	if len(q.items) >= q.max {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, it)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// take swaps the queued items out, reusing buf's storage for the queue.
func (q *sendQueue) take(buf []outItem) []outItem {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	clear(buf)
	q.items = buf[:0]
	return out
}

type session struct {
	c      *Coordinator
	conn   *tls.Conn
	remote string
	log    *slog.Logger
	out    sendQueue
	quit   chan struct{} // closed by kill
	once   sync.Once
	final  []byte // error frame written last; set before quit is closed

	writerDone chan struct{}

	// lastRead is when the reader last took a frame (unix ns), keepalives
	// included (they never reach the run loop). Written by the reader, read
	// by the run loop to tell a live holder from a dead one (duplicate.go).
	lastRead atomic.Int64

	// Immutable after the handshake.
	name string
	cert *pki.NodeCert

	// Owned by the run goroutine.
	registered  bool
	live        bool      // snapshot queued; receives changes
	since       time.Time // presence session start
	turnExpires time.Time
	probeStart  time.Time // another connection claimed this node then; zero = no probe running (duplicate.go)
	dupQuery    *dupQuery // registration waits for the coordinator holding this node's session
}

// send queues a frame; a session whose queue is full is closed (the node
// reconnects and starts over from a snapshot). Safe from any goroutine.
func (s *session) send(frame []byte) { s.enqueue(outItem{frame: frame}) }

func (s *session) enqueue(it outItem) {
	select {
	case <-s.quit:
		return
	default:
	}
	if !s.out.push(it) {
		s.kill(CodeOverloaded, "session send queue full: the node is not reading fast enough")
	}
}

// kill ends the session; a non-zero code sends a final error frame. Safe
// from any goroutine; only the first call counts.
func (s *session) kill(code ErrorCode, text string) {
	var final []byte
	if code != 0 {
		final = errorFrame(code, 0, text)
	}
	s.end(final)
}

// end ends the session with final (nil = none) as its last frame. Safe from
// any goroutine; only the first call (of end or kill) counts.
func (s *session) end(final []byte) {
	s.once.Do(func() {
		s.final = final
		close(s.quit)
		// Unblock a writer stuck on a peer that does not read.
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	})
}

func (s *session) killed() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

// writer drains the send queue. When the session is killed it writes what
// is still queued and the final error frame, then half-closes (TLS
// close_notify) so that the node reads the reason before EOF; serveConn
// closes the connection once the reader is done, so that unread input never
// turns the close into a reset that would swallow the reason.
func (s *session) writer(timeout time.Duration) {
	defer s.c.wg.Done()
	defer close(s.writerDone)
	// flush writes items through a pooled buffer, borrowed only while
	// writing: idle sessions hold none.
	flush := func(items []outItem, final []byte) error {
		bw := writerPool.Get().(*bufio.Writer)
		bw.Reset(s.conn)
		defer func() {
			bw.Reset(nil)
			writerPool.Put(bw)
		}()
		for _, it := range items {
			if it.frame != nil {
				if _, err := bw.Write(it.frame); err != nil {
					return err
				}
			}
			for _, f := range it.bulk {
				if _, err := bw.Write(f); err != nil {
					return err
				}
			}
		}
		if final != nil {
			if _, err := bw.Write(final); err != nil {
				return err
			}
		}
		return bw.Flush()
	}
	var spare []outItem
	for {
		select {
		case <-s.out.wake:
			items := s.out.take(spare)
			_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
			err := flush(items, nil)
			spare = items
			if err != nil {
				s.kill(0, "")
				_ = s.conn.Close()
				if !s.c.closing() {
					s.log.Debug("session write failed", "error", err)
				}
				return
			}
		case <-s.quit:
			// What was queued before the kill (a Leave's tombstone, a
			// Remove) still goes out, then the reason.
			if flush(s.out.take(nil), s.final) != nil {
				_ = s.conn.Close()
				return
			}
			_ = s.conn.CloseWrite()
			// Give the node a moment to read and hang up; the reader then
			// ends at EOF or at this deadline.
			_ = s.conn.SetReadDeadline(time.Now().Add(time.Second))
			return
		}
	}
}

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

func (c *Coordinator) closing() bool { return c.ctx.Err() != nil }

// refuse writes an error frame on a connection that has no session yet and
// closes it gracefully.
func refuse(conn *tls.Conn, code ErrorCode, text string) {
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write(errorFrame(code, 0, text)); err == nil {
		_ = conn.CloseWrite()
		drain(conn)
	}
	_ = conn.Close()
}

// drain reads and discards what the peer still sends (bounded in time and
// size) so that closing does not reset the connection before the peer has
// read our last frame.
func drain(conn net.Conn) {
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(conn, 1<<20))
}

// serveConn handshakes one node connection and runs its read loop. src's
// admission slot is held until the TLS handshake ends.
func (c *Coordinator) serveConn(raw net.Conn, src netip.Addr) {
	defer c.wg.Done()
	remote := raw.RemoteAddr().String()
	log := c.log.With("remote", remote)
	stop := context.AfterFunc(c.ctx, func() { _ = raw.Close() })
	defer stop()

	conn := tls.Server(raw, c.tlsConf)
	hctx, cancel := context.WithTimeout(c.ctx, c.opts.HandshakeTimeout)
	err := conn.HandshakeContext(hctx)
	cancel()
	c.adm.release(src)
	if err != nil {
		c.sessRefused.Add(1)
		if !c.closing() {
			log.Info("node session handshake failed", "error", err)
		}
		_ = raw.Close()
		return
	}
	cs := conn.ConnectionState()
	if cs.NegotiatedProtocol != sessionALPN {
		c.sessRefused.Add(1)
		log.Warn("refused node session: not a meshd session (ALPN)", "alpn", cs.NegotiatedProtocol)
		refuse(conn, CodeProtocol, "expected ALPN "+sessionALPN)
		return
	}
	nc, err := verifyCert(c.opts.Verifier, cs.PeerCertificates[0].Raw, time.Now())
	if err != nil {
		c.sessRefused.Add(1)
		log.Warn("refused node session: certificate rejected", "peer", cs.PeerCertificates[0].Subject.CommonName, "reason", err)
		refuse(conn, CodeCertificateRejected, err.Error())
		return
	}
	log = log.With("peer", nc.Identity.Name)
	if n := c.nconns.Add(1); n > int64(c.opts.MaxSessions) {
		c.nconns.Add(-1)
		c.sessRefused.Add(1)
		log.Warn("refused node session: too many sessions", "limit", c.opts.MaxSessions)
		refuse(conn, CodeOverloaded, fmt.Sprintf("coordinator holds its maximum of %d sessions", c.opts.MaxSessions))
		return
	}
	defer c.nconns.Add(-1)

	s := &session{
		c:      c,
		conn:   conn,
		remote: remote,
		log:    log,
		out:    sendQueue{max: c.opts.SendQueue, wake: make(chan struct{}, 1)},
		quit:   make(chan struct{}),
		name:   nc.Identity.Name,
		cert:   nc,

		writerDone: make(chan struct{}),
	}
	s.lastRead.Store(time.Now().UnixNano())
	c.wg.Add(1)
	go s.writer(3 * c.opts.KeepaliveInterval)
	err = c.readLoop(s)
	s.kill(0, "")
	<-s.writerDone
	if s.final != nil {
		drain(conn)
	}
	_ = conn.Close()
	select {
	case c.events <- sessionEvent{s: s, kind: evClosed, err: err}:
	case <-c.ctx.Done():
	}
}

// Per-session rate limits of the frame kinds other than signals (whose
// bucket is CoordinatorOptions.FrameRate/FrameBurst), each well above what a
// node sends: a node pings once per keepalive interval (5 s), re-signs its
// record when an address changes (a few a minute when roaming), and passes
// on a CRL only when a newer one reaches it. docs/protocol.md, "Limits".
const (
	pingRate, pingBurst     = 2, 10  // frames/s, burst
	recordRate, recordBurst = 1, 20  // Record and Leave together
	crlRate, crlBurst       = 0.2, 4 // one every 5 s
)

// sessionLimits are one session's token buckets and its flood accounting;
// owned by the session's reader.
type sessionLimits struct {
	ping, record, signal, crl *rate.Limiter

	windowStart time.Time
	dropped     int  // frames dropped in the window
	weight      int  // their flood weight (floodWeight)
	told        bool // the node was told about a drop in this window
}

// floodWeight is what one dropped frame counts towards FloodDrops, in
// tenths: a dropped Ping, Record, Leave or CRL counts fully (a node sends
// those rarely and never in bursts), a dropped Signal a tenth. A node that
// starts thousands of links at once meets the signal bucket legitimately:
// each of those links backs off after its "rate limited" result, so the
// drops stay far below ten times FloodDrops, while a node that ignores the
// results reaches it within seconds.
func floodWeight(t frameType) int {
	if t == frameSignal {
		return 1
	}
	return 10
}

func (c *Coordinator) newSessionLimits() *sessionLimits {
	return &sessionLimits{
		ping:   rate.NewLimiter(pingRate, pingBurst),
		record: rate.NewLimiter(recordRate, recordBurst),
		signal: rate.NewLimiter(rate.Limit(c.opts.FrameRate), c.opts.FrameBurst),
		crl:    rate.NewLimiter(crlRate, crlBurst),
	}
}

// allow takes a token for a frame of kind t (unknown kinds pass: the read
// loop refuses them).
func (l *sessionLimits) allow(t frameType, now time.Time) bool {
	var lim *rate.Limiter
	switch t {
	case framePing:
		lim = l.ping
	case frameRecord, frameLeave:
		lim = l.record
	case frameSignal:
		lim = l.signal
	case frameCRL:
		lim = l.crl
	default:
		return true
	}
	return lim.AllowN(now, 1)
}

// drop accounts one dropped frame of kind t; flooding says the session's
// weighted drops reached maxDrops within window; tell says to send the node a
// rate-limit error (once per window, so that a flood is not answered frame
// by frame).
func (l *sessionLimits) drop(t frameType, now time.Time, window time.Duration, maxDrops int) (tell, flooding bool) {
	if now.Sub(l.windowStart) > window {
		l.windowStart, l.dropped, l.weight, l.told = now, 0, 0, false
	}
	l.dropped++
	l.weight += floodWeight(t)
	tell = !l.told
	l.told = true
	return tell, l.weight >= 10*maxDrops
}

// readLoop reads frames until the session ends and returns why.
func (c *Coordinator) readLoop(s *session) error {
	// Nodes send small frames; larger reads bypass the buffer.
	br := bufio.NewReaderSize(s.conn, 2<<10)
	lim := c.newSessionLimits()
	var hdr [frameHeaderLen]byte
	regDeadline := time.Now().Add(c.opts.HandshakeTimeout)
	registered := false
	for {
		deadline := regDeadline
		if registered {
			deadline = time.Now().Add(3 * c.opts.KeepaliveInterval)
		}
		_ = s.conn.SetReadDeadline(deadline)
		f, err := readFrame(br, &hdr)
		if err != nil {
			return c.readError(s, err, registered)
		}
		now := time.Now()
		s.lastRead.Store(now.UnixNano())
		if !lim.allow(f.typ, now) {
			c.fc.rateLimited.Add(1)
			tell, flooding := lim.drop(f.typ, now, c.opts.FloodWindow, c.opts.FloodDrops)
			if flooding {
				c.floodClosed.Add(1)
				err := fmt.Errorf("%w: %d frames dropped by the rate limits within %v (last: %s)", ErrRateLimited, lim.dropped, c.opts.FloodWindow, f.typ)
				s.log.Warn("closing node session: flooding", "error", err)
				s.kill(CodeFlooding, err.Error())
				return err
			}
			if f.typ == frameSignal {
				// The node waits for each signal's result.
				s.send(signalResultFrame(f.id, sigRateLimited))
			} else if tell {
				s.send(errorFrame(CodeRateLimited, 0, f.typ.String()+" frame dropped: rate limit exceeded"))
			}
			continue
		}
		ev := sessionEvent{s: s, f: f}
		switch f.typ {
		case framePing:
			s.send(pingFrame(framePong, f.nonce))
			continue
		case frameRecord, frameLeave:
			rec, err := c.verifySessionRecord(s, f)
			if err != nil {
				c.rc.count(err)
				s.log.Warn("refused node record", "reason", err)
				s.kill(CodeInvalidRecord, err.Error())
				return err
			}
			ev.rec, ev.kind = rec, evRecord
			if rec.Left {
				ev.kind = evLeave
			}
			registered = true
		case frameSignal:
			ev.kind = evSignal
		case frameCRL:
			if !registered {
				c.fc.malformed.Add(1)
				err := fmt.Errorf("%w: CRL before registration", ErrMalformed)
				s.log.Info("closing node session: protocol error", "error", err)
				s.kill(CodeProtocol, err.Error())
				return err
			}
			// Verified here, off the run loop, once per distinct CRL.
			installed, repeat, err := c.crls.verifyCRL(c.opts.Verifier, f.crl)
			if repeat {
				c.crlRepeats.Add(1)
			} else if err != nil {
				s.log.Warn("CRL from node rejected", "reason", err)
			}
			if !installed {
				continue
			}
			ev.kind = evCRL
		default:
			c.fc.malformed.Add(1)
			err := fmt.Errorf("%w: %s frame is not sent by nodes", ErrMalformed, f.typ)
			s.log.Info("closing node session: protocol error", "error", err)
			s.kill(CodeProtocol, err.Error())
			return err
		}
		select {
		case c.events <- ev:
		case <-s.quit:
			return ErrClosed
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
}

// readError classifies why reading stopped, counts and reports it.
func (c *Coordinator) readError(s *session, err error, registered bool) error {
	switch {
	case errors.Is(err, ErrFrameTooLarge), errors.Is(err, ErrUnsupportedVersion), errors.Is(err, ErrMalformed):
		c.fc.count(err)
		code := CodeProtocol
		if errors.Is(err, ErrUnsupportedVersion) {
			code = CodeUnsupportedVersion
		}
		s.log.Info("closing node session: bad frame", "error", err)
		s.kill(code, err.Error())
	case s.killed() || c.closing():
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		s.log.Debug("node closed the session")
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if registered {
				err = fmt.Errorf("no keepalive for %v: %w", 3*c.opts.KeepaliveInterval, err)
			} else {
				err = fmt.Errorf("no registration within %v: %w", c.opts.HandshakeTimeout, err)
			}
		}
		s.log.Info("node session lost", "error", err)
	}
	return err
}

// verifySessionRecord verifies a record a node sent on its own session: it
// must be signed by, and carry, the session's certificate.
func (c *Coordinator) verifySessionRecord(s *session, f frame) (*Record, error) {
	rec, err := verifyRecord(c.opts.Verifier, f.raw, time.Now())
	if err != nil {
		return nil, err
	}
	if rec.Cert.Fingerprint != s.cert.Fingerprint {
		return nil, &RecordError{Name: rec.Name, Reason: fmt.Errorf("%w: record certificate is not the session certificate", ErrInvalidRecord)}
	}
	if rec.Left != (f.typ == frameLeave) {
		return nil, &RecordError{Name: rec.Name, Reason: fmt.Errorf("%w: tombstone flag does not match the %s frame", ErrInvalidRecord, f.typ)}
	}
	return rec, nil
}

// handleSessionEvent runs on the run goroutine.
func (c *Coordinator) handleSessionEvent(ev sessionEvent) {
	s := ev.s
	switch ev.kind {
	case evClosed:
		c.sessionClosed(s, ev.err)
		return
	case evCRL:
		// Installed by the session's reader; propagate it.
		c.checkCRL()
		return
	}
	if s.killed() {
		return
	}
	switch ev.kind {
	case evRecord:
		c.acceptRecord(s, ev.rec)
	case evLeave:
		c.acceptLeave(s, ev.rec)
	case evSignal:
		if !s.registered {
			c.fc.malformed.Add(1)
			s.kill(CodeProtocol, "signal before registration")
			return
		}
		c.routeSignal(s, ev.f)
	}
}

func (c *Coordinator) acceptRecord(s *session, rec *Record) {
	if q := s.dupQuery; q != nil {
		// Registration waits for the holder's coordinator; the newest
		// record is the one registered if it lets this session in.
		q.rec = rec
		return
	}
	cur := c.reg.get(rec.Name)
	if s.registered {
		if cur == nil {
			// Dropped meanwhile (revoked or expired): register afresh.
			s.registered, s.live = false, false
		} else {
			e, err := c.reg.acceptLocal(rec, cur.rec.Presence)
			if err != nil {
				s.send(errorFrame(CodeStaleRecord, cur.rec.Version, err.Error()))
				return
			}
			if !e.rec.sameSigned(cur.rec) {
				s.log.Debug("node record updated", "version", rec.Version)
				c.entryChanged(e, true)
			}
			return
		}
	}
	// Checked before the record touches the registry: a second host with
	// this node's identity must not replace the established session's
	// record, nor its session (duplicate.go).
	if c.refuseDuplicate(s, rec, true) {
		return
	}
	c.register(s, rec)
}

// register makes s the node's session: the record is stored with a new
// presence, a previous session of the node is closed as superseded, and the
// snapshot is queued.
func (c *Coordinator) register(s *session, rec *Record) {
	if c.opts.Verifier.IsRevoked(s.cert.Cert.SerialNumber) {
		// A CRL installed after the certificate and record were checked
		// (while the registration waited for a DupAnswer, or the event
		// for the run loop): checkCRL closed the registered sessions only.
		c.sessRefused.Add(1)
		s.log.Warn("refused node session: certificate revoked since it was checked")
		s.kill(CodeRevoked, "certificate revoked")
		return
	}
	now := time.Now()
	cur := c.reg.get(rec.Name)
	var prev Presence
	if cur != nil {
		prev = cur.rec.Presence
	}
	pres := Presence{Coordinator: c.name, Since: nextSince(prev), Online: true, Changed: now}
	e, err := c.reg.acceptLocal(rec, pres)
	if errors.Is(err, ErrLimitExceeded) {
		c.refuseFull(s, err)
		return
	}
	if err != nil {
		s.send(errorFrame(CodeStaleRecord, cur.rec.Version, err.Error()))
		return
	}
	if old := c.sessions[rec.Name]; old != nil && old != s {
		old.kill(CodeSuperseded, "a newer session of this node registered")
	}
	c.sessions[rec.Name] = s
	s.registered, s.since = true, pres.Since
	c.nSessions.Store(int64(len(c.sessions)))
	c.entryChanged(e, cur == nil || !e.rec.sameSigned(cur.rec))
	c.sendSnapshot(s, e.rec.Version, now)
	s.live = true
	s.log.Info("node registered", "version", rec.Version)
}

// refuseFull ends the session of a node the registry has no room for
// (overloaded: the node tries another coordinator, with backoff).
func (c *Coordinator) refuseFull(s *session, err error) {
	s.log.Warn("refused node: registry full", "limit", MaxRegistryEntries)
	s.kill(CodeOverloaded, err.Error())
}

// sendSnapshot queues Welcome, the CRL, TURN credentials and the registry as
// one item, so that no change can slip in between.
func (c *Coordinator) sendSnapshot(s *session, version uint64, now time.Time) {
	items := [][]byte{welcomeFrame(c.name, unixNano(s.since), c.opts.KeepaliveInterval, version)}
	if crl := c.opts.Verifier.CRL(); crl != nil {
		if len(crl.Raw) <= MaxFrameSize {
			items = append(items, crlFrame(crl.Raw))
		} else {
			s.log.Error("CRL larger than a session frame; not sent", "bytes", len(crl.Raw))
		}
	}
	if creds, ok := c.turn.credentials(s.name, now, c.otherRelayURLs()); ok {
		items = append(items, turnFrame(creds))
		s.turnExpires = creds.Expires
	}
	entries := c.reg.sortedEntries()
	items = append(items, snapshotBeginFrame(len(entries)))
	for _, e := range entries {
		items = append(items, e.entryFrame())
	}
	items = append(items, encodeFrame(frameSnapshotEnd, nil))
	s.enqueue(outItem{bulk: items})
}

func (c *Coordinator) acceptLeave(s *session, rec *Record) {
	cur := c.reg.get(rec.Name)
	pres := Presence{Coordinator: c.name, Since: s.since, Changed: time.Now()}
	if cur != nil && !s.registered {
		pres = cur.rec.Presence
		pres.Online, pres.Changed = false, time.Now()
	}
	e, err := c.reg.acceptLocal(rec, pres)
	if errors.Is(err, ErrLimitExceeded) {
		c.refuseFull(s, err)
		return
	}
	if err != nil {
		have := uint64(0)
		if cur != nil {
			have = cur.rec.Version
		}
		s.send(errorFrame(CodeStaleRecord, have, err.Error()))
		return
	}
	s.log.Info("node left the mesh", "version", rec.Version)
	c.entryChanged(e, true)
	if c.sessions[rec.Name] == s {
		delete(c.sessions, rec.Name)
		c.nSessions.Store(int64(len(c.sessions)))
	}
	s.registered = false
	s.kill(0, "")
}

func (c *Coordinator) sessionClosed(s *session, err error) {
	c.sessClosed.Add(1)
	for id, f := range c.fwd {
		if f.s == s {
			delete(c.fwd, id)
		}
	}
	if q := s.dupQuery; q != nil {
		delete(c.dupQueries, q.id)
		s.dupQuery = nil
	}
	delete(c.probing, s)
	if c.dropSession(s) {
		s.log.Info("node session closed", "reason", err)
	}
}

// dropSession removes s from the session table and marks the node offline,
// unless s is not (or no longer) the node's registered session.
func (c *Coordinator) dropSession(s *session) bool {
	if !s.registered || c.sessions[s.name] != s {
		return false
	}
	delete(c.sessions, s.name)
	c.nSessions.Store(int64(len(c.sessions)))
	if e := c.reg.get(s.name); e != nil {
		p := e.rec.Presence
		if p.Online && p.Coordinator == c.name && unixNano(p.Since) == unixNano(s.since) {
			p.Online, p.Changed = false, time.Now()
			c.entryChanged(c.reg.setPresence(s.name, p), false)
		}
	}
	return true
}

// refreshTURN re-issues TURN credentials at half-life.
func (c *Coordinator) refreshTURN(now time.Time) {
	half := c.turn.ttl() / 2
	others := c.otherRelayURLs()
	for _, s := range c.sessions {
		if !s.live || s.turnExpires.IsZero() || now.Before(s.turnExpires.Add(-half)) {
			continue
		}
		if creds, ok := c.turn.credentials(s.name, now, others); ok {
			s.send(turnFrame(creds))
			s.turnExpires = creds.Expires
		}
	}
}
