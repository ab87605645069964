package tunnel

/* Data keys and rekeying
 *
 * DTLS authenticates the peer and agrees keys; it carries no packets. When
 * a session's handshake completes, both sides derive the data-record keys
 * of epoch record.FirstEpoch from it with the RFC 5705 exporter
 * (record.DeriveFromState; the DTLS client seals with the client half), and
 * the dtls.Conn stays open as the session's control channel: alerts,
 * close_notify, and the control messages below.
 *
 * Rekey: a fresh DTLS handshake on the same ICE connection, same roles.
 * The rule that keeps traffic flowing: a side switches its send key to
 * epoch N+1 only once the peer can open N+1, i.e. has at least staged it.
 * A staged epoch is derived but not installed: the side still seals and
 * opens N, and a record of N+1 that authenticates under the staged keys
 * (checked on a copy) installs them on the spot (openPending).
 *
 *   client (ICE-controlling)                server (controlled)
 *   NeedsRekey (timer or record count),
 *   or the server's rekey-request  ───►
 *   new transport; DTLS records now go
 *   to it; ClientHello ─────────────────►  ICE reader: a ClientHello while
 *                                          the control conn is established →
 *                                          new transport, new server handshake
 *        ◄───────── handshake ──────────►
 *                                          done (first): stages N+1,
 *                          ◄─────────────  keys-staged(N+1)
 *   done: stages N+1
 *   keys-staged (or stageWait later):
 *   installs N+1 (seals N+1, opens N+1
 *   and N for the overlap),
 *   keys-installed(N+1) ────────────────►  installs N+1 on the first of: a
 *                                          record of N+1 that authenticates,
 *                                          keys-installed, RekeyOverlap/2
 *   both retire the old dtls.Conn quietly (its transport drops writes).
 *
 * The fallbacks only fire when control messages are lost: the server
 * finished its handshake before the client, so it has staged N+1 long before
 * the client's stageWait ends; the client has staged N+1 before the server's
 * RekeyOverlap/2 ends, and accepts N until its overlap ends. Nonces never
 * repeat: each epoch has its own keys and IVs from its own handshake, and
 * record.Session never reuses a sequence number under a key. A failed rekey
 * handshake fails the session on the client (a full restart with backoff);
 * the server goes back to its current control conn.
 *
 * Control messages (DTLS application data on the control conn), version 1:
 *
 *   byte 0: version (1)   byte 1: kind   bytes 2-3: epoch (big-endian)
 *   kind 1 keys-installed: the client installed the epoch (seals under it)
 *   kind 2 rekey-request:  the server's send key needs a rekey (its current epoch)
 *   kind 3 keys-staged:    the server staged the epoch (can open it)
 *
 * Unknown versions and kinds are ignored (counted as receive errors).
 */

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/meshd/meshd/tunnel/record"
)

// keyState is a session's data keys: the record session and one Opener per
// receive slot. Published through Link.keys; the pointer is swapped only
// when a new ICE session starts (rekeys happen inside rs).
type keyState struct {
	l       *Link
	rs      *record.Session
	openers [rxSlotsN]*record.Opener
	// pending are the staged keys of the next epoch, between a rekey
	// handshake completing and their installation (see the file comment).
	pending atomic.Pointer[pendingKeys]
	// installMu serializes installing a staged epoch (readers and the run
	// goroutine may race to it); never taken for records of known epochs.
	installMu sync.Mutex
}

// pendingKeys are derived but not installed. probe is a throwaway session
// from the same exported material, for proving that a record of the new
// epoch is authentic before installing.
type pendingKeys struct {
	epoch  uint16
	keys   *record.Keys
	probe  *record.Session
	openrs [rxSlotsN]*record.Opener
}

// recordOptions are the record-session options of every link.
func (m *Manager) recordOptions() record.Options {
	return record.Options{
		Overlap:           m.timers.RekeyOverlap,
		RekeyAfterTime:    m.timers.RekeyInterval,
		RekeyAfterRecords: m.opts.RekeyAfterRecords,
	}
}

// exportState returns the connection state of a finished handshake.
func exportState(c *dtls.Conn) (*dtls.State, error) {
	st, ok := c.ConnectionState()
	if !ok {
		return nil, fmt.Errorf("%w: no connection state after the handshake", ErrHandshake)
	}
	return &st, nil
}

// newKeyState derives a session's first data keys from its handshake.
func (l *Link) newKeyState(c *dtls.Conn, client bool) (*keyState, error) {
	st, err := exportState(c)
	if err != nil {
		return nil, err
	}
	keys, err := record.DeriveFromState(st, client, record.FirstEpoch)
	if err != nil {
		return nil, fmt.Errorf("%w: deriving data keys: %w", ErrHandshake, err)
	}
	rs, err := record.NewSession(keys, l.m.recordOptions())
	if err != nil {
		return nil, fmt.Errorf("%w: data keys: %w", ErrHandshake, err)
	}
	ks := &keyState{l: l, rs: rs}
	for i := range ks.openers {
		ks.openers[i] = rs.NewOpener()
	}
	return ks, nil
}

// newPending derives the next epoch's keys (and their probe) from a rekey
// handshake; client is this side's DTLS role.
func (l *Link) newPending(st *dtls.State, client bool, epoch uint16) (*pendingKeys, error) {
	keys, err := record.DeriveFromState(st, client, epoch)
	if err != nil {
		return nil, err
	}
	probeKeys, err := record.DeriveFromState(st, client, epoch)
	if err != nil {
		return nil, err
	}
	probe, err := record.NewSession(probeKeys, l.m.recordOptions())
	if err != nil {
		return nil, err
	}
	p := &pendingKeys{epoch: epoch, keys: keys, probe: probe}
	for i := range p.openrs {
		p.openrs[i] = probe.NewOpener()
	}
	return p, nil
}

// openPending handles a record of an epoch the keys do not have yet: if
// it is the staged epoch and authenticates under the staged keys (checked
// on a copy in scratch), the staged keys are installed and the record is
// opened for real. Called by readers; it takes installMu only on this
// path, a few records per rekey.
func (ks *keyState) openPending(rec []byte, slot int, scratch []byte) ([]byte, error) {
	if len(rec) < record.HeaderLen || len(rec) > len(scratch) {
		return nil, record.ErrUnknownEpoch
	}
	epoch := recordEpoch(rec)
	p := ks.pending.Load()
	if p == nil || epoch != p.epoch {
		if epoch == ks.rs.Epoch() { // installed since the first try
			return ks.openers[slot].OpenInPlace(rec)
		}
		return nil, record.ErrUnknownEpoch
	}
	probe := scratch[:len(rec)]
	copy(probe, rec)
	if _, err := p.openrs[slot].OpenInPlace(probe); err != nil {
		return nil, err
	}
	ks.install(p)
	return ks.openers[slot].OpenInPlace(rec)
}

// install switches to staged keys p unless that was done already, and
// reports whether this call did it. When it returns, p is installed (by
// this call or another). Safe from any goroutine.
func (ks *keyState) install(p *pendingKeys) bool {
	ks.installMu.Lock()
	defer ks.installMu.Unlock()
	if ks.pending.Load() != p {
		return false
	}
	err := ks.rs.Rekey(p.keys)
	ks.pending.Store(nil) // after Rekey: readers that saw p find the epoch installed
	p.probe.Close()
	if err != nil {
		return false
	}
	ks.l.rekeys.Add(1)
	return true
}

// close drops the keys (teardown).
func (ks *keyState) close() {
	ks.installMu.Lock()
	defer ks.installMu.Unlock()
	if p := ks.pending.Swap(nil); p != nil {
		p.probe.Close()
	}
	ks.rs.Close()
}

// Control messages.
const (
	ctrlVersion       = 1
	ctrlKeysInstalled = 1
	ctrlRekeyRequest  = 2
	ctrlKeysStaged    = 3
	ctrlLen           = 4
)

var errBadControl = errors.New("tunnel: malformed control message")

func marshalControl(kind byte, epoch uint16) []byte {
	return []byte{ctrlVersion, kind, byte(epoch >> 8), byte(epoch)}
}

func parseControl(b []byte) (kind byte, epoch uint16, err error) {
	if len(b) != ctrlLen || b[0] != ctrlVersion || b[1] < ctrlKeysInstalled || b[1] > ctrlKeysStaged {
		return 0, 0, errBadControl
	}
	return b[1], uint16(b[2])<<8 | uint16(b[3]), nil
}

// rekeyCheckInterval paces the rekey checks of a connected link: often
// enough that the record-count limit (minutes of traffic at line rate) and
// the server's install fallback are noticed in time.
func (t Timers) rekeyCheckInterval() time.Duration {
	return min(max(t.RekeyInterval/8, 10*time.Millisecond), time.Second)
}

// stageWait is how long the client waits for keys-staged before it
// installs a new epoch anyway (the message was lost; the server staged the
// epoch before the client could finish its handshake).
func (t Timers) stageWait() time.Duration {
	return min(t.RekeyOverlap/4, 4*t.FlightInterval)
}

// rekeyRequestEvery bounds how often the server asks for a rekey.
func (t Timers) rekeyRequestEvery() time.Duration {
	return max(t.rekeyCheckInterval()*4, t.FlightInterval*4)
}

// Rekey events, posted to the run goroutine.
type (
	evRekeyDone struct {
		gen     uint64
		t       *dtlsTransport
		c       *dtls.Conn
		pending *pendingKeys // the next epoch, already staged
		err     error
		dur     time.Duration
	}
	// evPeerRekey: the ICE reader saw the peer start a handshake on an
	// established session and moved DTLS records to t.
	evPeerRekey struct {
		gen uint64
		t   *dtlsTransport
	}
	evControl struct {
		gen   uint64
		t     *dtlsTransport
		kind  byte
		epoch uint16
	}
)

// onRekeyTick runs the rekey checks of a connected session: the staged
// epoch's fallback deadline, and whether the keys need a rekey.
func (l *Link) onRekeyTick() {
	o := &l.o
	s := o.sess
	if s == nil || s.keys == nil {
		return
	}
	ks := s.keys
	now := time.Now()
	// The tick every connected link has; punching needs no ticker of its own.
	l.punch(now)
	// While a rekey handshake runs, a pending epoch is the one it is
	// staging, whose deadline onRekeyDone has yet to set.
	p := ks.pending.Load()
	if p != nil && !s.rekeying && now.After(s.installAt) {
		l.installStaged(s, p)
		p = nil
	}
	// A renewed certificate (renew.go) needs a rekey as much as worn keys.
	renewed := s.credGen.Load() != l.m.cred.Load().gen
	if p != nil || s.rekeying || (!renewed && !ks.rs.NeedsRekey()) {
		return
	}
	if o.controlling {
		l.startRekey(s)
		return
	}
	if now.Sub(s.lastRekeyRequest) >= l.m.timers.rekeyRequestEvery() {
		s.lastRekeyRequest = now
		l.writeControl(s, ctrlRekeyRequest, ks.rs.Epoch())
	}
}

// installStaged installs staged keys from the run goroutine; the client
// then tells the server, which may not have seen a record of the new epoch.
func (l *Link) installStaged(s *session, p *pendingKeys) {
	if s.keys.install(p) && l.o.controlling {
		l.writeControl(s, ctrlKeysInstalled, p.epoch)
	}
}

// writeControl sends a control message on the session's control conn.
func (l *Link) writeControl(s *session, kind byte, epoch uint16) {
	s.mu.Lock()
	c := s.dconn
	s.mu.Unlock()
	if c == nil {
		return
	}
	if _, err := c.Write(marshalControl(kind, epoch)); err != nil && l.log.Enabled(l.ctx, slog.LevelDebug) {
		l.log.Debug("control message not sent", "kind", kind, "error", err)
	}
}

// startRekey (client) starts a rekey handshake unless one is running or
// the previous epoch is still staged.
func (l *Link) startRekey(s *session) {
	if s.rekeying || s.keys == nil || s.keys.pending.Load() != nil {
		return
	}
	t := newDTLSTransport(s.iceConn, &l.m.counters)
	s.active.Store(t) // the peer's answers go to the new handshake
	l.startRekeyHandshake(s, t, true)
}

// onPeerRekey (server): the peer started a rekey handshake.
func (l *Link) onPeerRekey(s *session, t *dtlsTransport) {
	o := &l.o
	if o.controlling || s.keys == nil || s.rekeying || (o.state != StateConnected && o.state != StateDisconnected) {
		_ = t.Close()
		s.active.CompareAndSwap(t, s.ctrlT)
		return
	}
	// The client only rekeys after it installed the previous epoch.
	if p := s.keys.pending.Load(); p != nil {
		s.keys.install(p)
	}
	l.startRekeyHandshake(s, t, false)
}

// startRekeyHandshake runs a rekey handshake over t on its own goroutine,
// which stages the next epoch's keys as soon as the handshake completes;
// the server then says so at once (keys-staged), before the run goroutine
// gets to it.
func (l *Link) startRekeyHandshake(s *session, t *dtlsTransport, client bool) {
	s.rekeying = true
	s.rekeyT = t
	p, ks := l.o.peer, s.keys
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		start := time.Now()
		c, err := l.handshake(s, t, p, client, true)
		var pend *pendingKeys
		if err == nil {
			var st *dtls.State
			if st, err = exportState(c); err == nil {
				if pend, err = l.newPending(st, client, ks.rs.NextEpoch()); err == nil {
					ks.pending.Store(pend)
					if !client {
						_, _ = c.Write(marshalControl(ctrlKeysStaged, pend.epoch))
					}
				}
			}
		}
		l.post(s, evRekeyDone{gen: s.gen, t: t, c: c, pending: pend, err: err, dur: time.Since(start)})
	}()
}

// onRekeyDone installs (client) or stages (server) the new epoch and makes
// the new conn the control channel.
func (l *Link) onRekeyDone(s *session, ev evRekeyDone) {
	o := &l.o
	s.rekeying = false
	s.rekeyT = nil
	s.mu.Lock()
	s.rekeyConn = nil
	s.mu.Unlock()
	fail := func(err error) {
		if ev.c != nil {
			_ = ev.c.Close()
		}
		_ = ev.t.Close()
		s.active.CompareAndSwap(ev.t, s.ctrlT)
		if o.controlling {
			l.enter(StateFailed, fmt.Errorf("%w: rekey: %w", ErrHandshake, err))
			return
		}
		if l.log.Enabled(l.ctx, slog.LevelDebug) {
			l.log.Debug("the peer's rekey handshake failed; keeping the current keys", "error", err)
		}
	}
	if ev.err != nil {
		fail(ev.err)
		return
	}
	if s.keys == nil || (o.state != StateConnected && o.state != StateDisconnected) {
		fail(errors.New("the session is not connected"))
		return
	}
	if ev.pending == nil {
		fail(errors.New("no keys staged"))
		return
	}
	epoch := ev.pending.epoch
	if o.controlling {
		s.installAt = time.Now().Add(l.m.timers.stageWait())
	} else {
		s.installAt = time.Now().Add(l.m.timers.RekeyOverlap / 2)
	}
	// The new conn becomes the control channel; the old one goes quietly
	// (its transport drops the close_notify, which the peer's new conn
	// could not read anyway).
	old := s.ctrlT
	ev.t.established.Store(true)
	s.ctrlT = ev.t
	s.mu.Lock()
	oldConn := s.dconn
	s.dconn = ev.c
	s.mu.Unlock()
	old.retire()
	if oldConn != nil {
		_ = oldConn.Close()
	}
	l.startControlReader(s, ev.c, ev.t)
	suite, peerFP := s.describe()
	now := time.Now()
	l.updateSnap(func(sn *snapshot) {
		sn.lastHandshake, sn.cipherSuite, sn.peerFingerprint = now, suite, peerFP
		sn.peerCert = s.peerCert.Load()
	})
	if l.log.Enabled(l.ctx, slog.LevelDebug) {
		l.log.Debug("rekey handshake done; next epoch staged", "epoch", epoch, "handshake", ev.dur.Round(time.Millisecond))
	}
}

// onControl applies a control message from the peer.
func (l *Link) onControl(s *session, ev evControl) {
	if s.keys == nil || ev.t != s.ctrlT {
		return
	}
	p := s.keys.pending.Load()
	switch ev.kind {
	case ctrlKeysInstalled, ctrlKeysStaged:
		// keys-installed reaches the server, keys-staged the client: either
		// way the peer can open the staged epoch now.
		if p != nil && p.epoch == ev.epoch {
			l.installStaged(s, p)
		}
	case ctrlRekeyRequest:
		if l.o.controlling {
			l.startRekey(s)
		}
	}
}

// closeRekey releases what a rekey of a session that is gone made.
func closeRekey(ev evRekeyDone) {
	if ev.c != nil {
		_ = ev.c.Close()
	}
	_ = ev.t.Close()
}
