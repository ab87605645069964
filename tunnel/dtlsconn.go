package tunnel

/* A session's ICE connection: DTLS control traffic and relayed records
 *
 * Everything pion's agent delivers on the session's ice.Conn comes through
 * one goroutine, the session's ICE reader (iceReadLoop):
 *
 *   - data records: they arrive here only on relayed paths (direct ones
 *     reach the socket readers first, demux.go); opened in place with the
 *     ICE reader's own Opener (slot slotICE) and delivered to the link as a
 *     batch of one (pion hands over one datagram per Read);
 *   - pion DTLS records: copied to the active DTLS transport's queue, which
 *     the pion dtls.Conn of that transport reads (handshake, alerts,
 *     control messages). A ClientHello arriving on the server side while
 *     the active transport's handshake is complete starts a rekey
 *     (keys.go): a new transport takes the records from then on.
 *
 * dtlsTransport is the net.PacketConn a pion dtls.Conn runs over: reads
 * from its queue (with read deadlines, which pion uses to interrupt
 * reads), writes through ice.Conn.Write. A retired transport (after a
 * rekey) drops writes, so the old conn's close_notify never leaves.
 *
 * Each established dtls.Conn has a control reader (ctrlLoop) that reads it
 * for control messages and notices the peer closing the session.
 */

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/transport/v5/deadline"

	"github.com/meshd/meshd/tunnel/record"
)

// dtlsTransport carries one pion dtls.Conn over the session's ice.Conn.
type dtlsTransport struct {
	ice      *ice.Conn
	counters *counters
	q        chan ctrlDatagram
	closed   chan struct{}
	once     sync.Once
	rd       *deadline.Deadline

	established atomic.Bool // its handshake completed (it is, or was, the control channel)
	retired     atomic.Bool // superseded by a rekey: writes are dropped
}

var _ net.PacketConn = (*dtlsTransport)(nil)

func newDTLSTransport(c *ice.Conn, counters *counters) *dtlsTransport {
	return &dtlsTransport{ice: c, counters: counters, q: make(chan ctrlDatagram, ctrlQueueLen), closed: make(chan struct{}), rd: deadline.New()}
}

// push queues a copy of a DTLS datagram; never blocks.
func (t *dtlsTransport) push(b []byte) {
	if len(b) > maxCtrlDatagram {
		t.counters.malformed.Add(1)
		return
	}
	buf := ctrlPool.Get().(*[]byte)
	n := copy(*buf, b)
	select {
	case t.q <- ctrlDatagram{buf: buf, n: n}:
	default:
		ctrlPool.Put(buf)
		t.counters.ctrlDropped.Add(1)
	}
}

// timeoutError is returned by reads past the read deadline.
type timeoutError struct{}

func (timeoutError) Error() string   { return "tunnel: DTLS transport read deadline exceeded" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func (t *dtlsTransport) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case <-t.rd.Done():
		return 0, nil, timeoutError{}
	default:
	}
	select {
	case d := <-t.q:
		n := copy(b, (*d.buf)[:d.n])
		ctrlPool.Put(d.buf)
		return n, t.remoteAddr(), nil
	case <-t.closed:
		return 0, nil, net.ErrClosed
	case <-t.rd.Done():
		return 0, nil, timeoutError{}
	}
}

func (t *dtlsTransport) WriteTo(b []byte, _ net.Addr) (int, error) {
	if t.retired.Load() {
		return len(b), nil
	}
	select {
	case <-t.closed:
		return 0, net.ErrClosed
	default:
	}
	return t.ice.Write(b)
}

// Close ends reads; pion calls it when its conn closes. Idempotent.
func (t *dtlsTransport) Close() error {
	t.once.Do(func() { close(t.closed) })
	return nil
}

// retire marks the transport superseded and closes it.
func (t *dtlsTransport) retire() {
	t.retired.Store(true)
	_ = t.Close()
}

func (t *dtlsTransport) LocalAddr() net.Addr {
	if a := t.ice.LocalAddr(); a != nil {
		return a
	}
	return &net.UDPAddr{}
}

func (t *dtlsTransport) remoteAddr() net.Addr {
	if a := t.ice.RemoteAddr(); a != nil {
		return a
	}
	return &net.UDPAddr{}
}

func (t *dtlsTransport) SetDeadline(d time.Time) error     { t.rd.Set(d); return nil }
func (t *dtlsTransport) SetReadDeadline(d time.Time) error { t.rd.Set(d); return nil }
func (t *dtlsTransport) SetWriteDeadline(time.Time) error  { return nil }

// iceReadLoop is the session's ICE reader (see the file comment). It
// returns when the agent closes.
func (l *Link) iceReadLoop(s *session) {
	rx := newRxBatch(1)
	var c rxCounts
	for {
		n, err := s.iceConn.Read(rx.recvViews[0])
		if err != nil {
			return
		}
		b := rx.recvViews[0][:n]
		switch {
		case record.IsDataRecord(b):
			openInto(rx, l, 0, n, slotICE, &c)
			rx.deliver()
		case n > 0 && b[0] >= rfc7983DTLSFirstByte && b[0] <= rfc7983DTLSLastByte:
			if !validDTLSFrame(b) {
				c.malformed++
				break
			}
			t := s.active.Load()
			if !s.controlling && t.established.Load() && isClientHello(b) {
				t2 := newDTLSTransport(s.iceConn, &l.m.counters)
				t2.push(b)
				s.active.Store(t2)
				l.post(s, evPeerRekey{gen: s.gen, t: t2})
				break
			}
			t.push(b)
		default:
			c.garbage++
		}
		c.flush(&l.m.counters)
	}
}

// startControlReader starts the control reader of an established conn.
func (l *Link) startControlReader(s *session, c *dtls.Conn, t *dtlsTransport) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		l.ctrlLoop(s, c, t)
	}()
}

// ctrlLoop reads the control conn until it closes: control messages go to
// the run goroutine, and the peer closing the session (close_notify, a
// fatal alert, the transport gone) ends it.
func (l *Link) ctrlLoop(s *session, c *dtls.Conn, t *dtlsTransport) {
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if t.retired.Load() || s.ctx.Err() != nil {
				return
			}
			if isConnClosed(err) {
				l.post(s, evReaderDone{gen: s.gen, err: err})
				return
			}
			// Non-fatal: a warning alert, an undecodable record.
			l.receiveErrors.Add(1)
			continue
		}
		kind, epoch, err := parseControl(buf[:n])
		if err != nil {
			l.receiveErrors.Add(1)
			continue
		}
		l.post(s, evControl{gen: s.gen, t: t, kind: kind, epoch: epoch})
	}
}

// handshake runs a DTLS handshake over t (the controlling side is the
// client) and returns the conn. The conn is recorded in the session first,
// so a teardown during the handshake closes it.
func (l *Link) handshake(s *session, t *dtlsTransport, p Peer, client, rekey bool) (*dtls.Conn, error) {
	m := l.m
	want := p.expect()
	if m.opts.Now != nil {
		want.Now = m.opts.Now()
	}
	suites, err := record.PreferredSuites(m.opts.Cipher)
	if err != nil {
		return nil, err
	}
	cred := m.cred.Load()
	shared := []dtls.Option{
		dtls.WithCertificates(cred.tls),
		// ECDHE with AEAD only, ECDSA-authenticated (pion also uses these
		// suites for Ed25519 certificates); the suite also picks the data
		// cipher (record.CipherForSuite).
		dtls.WithCipherSuites(suites...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		// pki.Verifier does the whole check (chain to the mesh CA, validity,
		// CRL, expected name and address) in VerifyPeerCertificate.
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(m.opts.Verifier.VerifyPeerCertificate(want, &s.peerCert)),
		dtls.WithFlightInterval(m.timers.FlightInterval),
		dtls.WithReplayProtectionWindow(ReplayWindow),
		dtls.WithLoggerFactory(m.pionLogs),
	}
	var c *dtls.Conn
	raddr := t.remoteAddr()
	if client {
		opts := make([]dtls.ClientOption, 0, len(shared))
		for _, o := range shared {
			opts = append(opts, o)
		}
		c, err = dtls.ClientWithOptions(t, raddr, opts...)
	} else {
		opts := make([]dtls.ServerOption, 0, len(shared)+1)
		for _, o := range shared {
			opts = append(opts, o)
		}
		opts = append(opts, dtls.WithClientAuth(dtls.RequireAnyClientCert))
		c, err = dtls.ServerWithOptions(t, raddr, opts...)
	}
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		_ = c.Close()
		return nil, context.Canceled
	}
	if rekey {
		s.rekeyConn = c
	} else {
		s.dconn = c
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, m.timers.HandshakeTimeout)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		return c, err
	}
	s.credGen.Store(cred.gen)
	if l.log.Enabled(s.ctx, slog.LevelDebug) && rekey {
		l.log.Debug("rekey handshake complete", "client", client)
	}
	return c, nil
}
