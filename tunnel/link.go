package tunnel

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/pki"
	"github.com/pion/ice/v4"
)

// inboxLen bounds messages queued to a link's run goroutine (signals and
// session events). Signals beyond it are dropped and counted; peers resend.
const inboxLen = 256

// outboxLen bounds signals queued for sending to the peer.
const outboxLen = 256

// Link is one peer's link: an ICE agent and a DTLS session over the pair it
// selects, restarted with backoff when they fail. It satisfies
// overlay.PeerConn (WriteBatch, SetReceiver). Links are made by
// Manager.Link and closed by Manager.Remove or Manager.Close.
//
// Lock order: Manager.mu before Link.mu; nothing is called out to while
// holding Link.mu. txMu, rxMu and the manager's routes.mu are leaves, taken
// once per batch (or per path change) with no other tunnel lock held. The
// receiver runs under rxMu, so it must not wait for another delivery of the
// same link.
type Link struct {
	// Immutable after newLink.
	m     *Manager
	name  string
	log   *slog.Logger
	inbox chan any        // to the run goroutine: signals and session events
	out   chan outSignal  // to the signal sender goroutine
	ctx   context.Context // canceled by close
	stop  context.CancelFunc
	done  chan struct{} // closed when every goroutine of the link has returned
	wg    sync.WaitGroup

	// Data path: atomics, read without locks. keys and route are both
	// non-nil while packets can flow.
	keys            atomic.Pointer[keyState]
	route           atomic.Pointer[route]
	recv            atomic.Pointer[receiver]
	bytesSent       atomic.Uint64
	bytesReceived   atomic.Uint64
	packetsSent     atomic.Uint64
	packetsReceived atomic.Uint64
	sendErrors      atomic.Uint64
	receiveErrors   atomic.Uint64
	rekeys          atomic.Uint64
	// txMu serializes WriteBatch calls (once per batch) and guards tx.
	txMu sync.Mutex
	tx   txState
	// rxMu makes receiver calls of this link take turns (once per batch).
	rxMu sync.Mutex
	// gen is the current session generation, for the sender to skip
	// signals of sessions that are gone.
	gen atomic.Uint64

	// mu guards snap (written by the run goroutine, read by Status).
	mu   sync.Mutex
	snap snapshot

	// Owned by the run goroutine (see fsm.go).
	o owner
}

// snapshot is the part of Status the run goroutine maintains.
type snapshot struct {
	peer              Peer
	state             State
	since             time.Time
	controlling       bool
	generation        uint64
	path              Path
	local, remote     Candidate
	relayServer       string
	idle              bool
	handshakeDuration time.Duration
	lastHandshake     time.Time
	cipherSuite       string
	peerFingerprint   string
	peerCert          *pki.NodeCert // what the peer presented in the last handshake, verified
	attempts          uint64
	failures          uint64
	pathChanges       uint64
	lastErr           error
	agent             *ice.Agent // current session's, for pair statistics
}

func newLink(m *Manager, p Peer) *Link {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Link{
		m:     m,
		name:  p.Name,
		log:   m.log.With("peer", p.Name),
		inbox: make(chan any, inboxLen),
		out:   make(chan outSignal, outboxLen),
		ctx:   ctx,
		stop:  cancel,
		done:  make(chan struct{}),
	}
	controlling := p.controlling(m.self().Fingerprint)
	l.o = owner{state: StateNew, peer: p.clone(), controlling: controlling}
	l.snap = snapshot{peer: p.clone(), state: StateNew, since: time.Now(), controlling: controlling}
	return l
}

// start launches the link's goroutines. Called once, by the manager.
func (l *Link) start() {
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		l.run()
	}()
	go func() {
		defer l.wg.Done()
		l.sendLoop()
	}()
	go func() {
		l.wg.Wait()
		close(l.done)
	}()
}

// close stops the link and waits for it; the run goroutine tears the
// session down (DTLS close_notify, ICE agent, TURN allocations).
func (l *Link) close(started bool) {
	l.stop()
	if started {
		<-l.done
	} else {
		close(l.done)
	}
}

// Name returns the peer's name.
func (l *Link) Name() string { return l.name }

// Peer returns the expected peer the link currently verifies against.
func (l *Link) Peer() Peer {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snap.peer.clone()
}

// State returns the link's current state.
func (l *Link) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snap.state
}

// Done is closed when the link has been closed and all its goroutines have
// returned.
func (l *Link) Done() <-chan struct{} { return l.done }

// Subscribe calls fn with every event of this link, in order, on the
// manager's notifier goroutine. The returned function unsubscribes.
func (l *Link) Subscribe(fn func(Event)) (unsubscribe func()) {
	name := l.name
	return l.m.notifier.subscribe(func(ev Event) {
		if ev.Peer == name {
			fn(ev)
		}
	})
}

// Status returns a snapshot of the link.
func (l *Link) Status() Status {
	l.mu.Lock()
	sn := l.snap
	l.mu.Unlock()
	st := Status{
		Peer:              l.name,
		State:             sn.state,
		Since:             sn.since,
		Controlling:       sn.controlling,
		Generation:        sn.generation,
		Path:              sn.path,
		Local:             sn.local,
		Remote:            sn.remote,
		RelayServer:       sn.relayServer,
		Idle:              sn.idle,
		BytesSent:         l.bytesSent.Load(),
		BytesReceived:     l.bytesReceived.Load(),
		PacketsSent:       l.packetsSent.Load(),
		PacketsReceived:   l.packetsReceived.Load(),
		SendErrors:        l.sendErrors.Load(),
		ReceiveErrors:     l.receiveErrors.Load(),
		HandshakeDuration: sn.handshakeDuration,
		LastHandshake:     sn.lastHandshake,
		CipherSuite:       sn.cipherSuite,
		PeerFingerprint:   sn.peerFingerprint,
		Attempts:          sn.attempts,
		Failures:          sn.failures,
		PathChanges:       sn.pathChanges,
		LastError:         sn.lastErr,
		Rekeys:            l.rekeys.Load(),
	}
	if ks := l.keys.Load(); ks != nil {
		if in, err := ks.rs.Info(); err == nil {
			st.DataCipher, st.Epoch, st.KeyAge = in.Cipher.String(), in.Epoch, in.Age
		}
	}
	if sn.agent != nil {
		// The agent is safe for concurrent use; if the session is being
		// torn down these return nothing.
		v := readPairs(sn.agent)
		st.Pairs = v.status()
		if sel := v.selectedPair(); sel != nil {
			st.RTT = sel.rtt
		}
	}
	return st
}

// updateSnap applies fn to the snapshot under mu. Run goroutine only.
func (l *Link) updateSnap(fn func(*snapshot)) {
	l.mu.Lock()
	fn(&l.snap)
	l.mu.Unlock()
}

// post delivers a session event to the run goroutine unless the session
// is gone (its context canceled) or the link closed. Called from pion
// callbacks and session goroutines; it never blocks the run goroutine.
func (l *Link) post(s *session, ev any) {
	select {
	case l.inbox <- ev:
	case <-s.ctx.Done():
	case <-l.ctx.Done():
	}
}

// deliverSignal hands a decoded signal to the run goroutine without
// blocking; false means the inbox was full.
func (l *Link) deliverSignal(sig signal) bool {
	select {
	case l.inbox <- msgSignal{sig: sig}:
		return true
	default:
		return false
	}
}

// updatePeer asks the run goroutine to verify against p from now on.
func (l *Link) updatePeer(p Peer) {
	select {
	case l.inbox <- msgUpdatePeer{peer: p.clone()}:
	case <-l.ctx.Done():
	}
}

// requestRecheck asks the run goroutine to re-verify the connected peer,
// without blocking (a full inbox means it is busy; the next periodic recheck
// catches up).
func (l *Link) requestRecheck() {
	select {
	case l.inbox <- msgRecheck{}:
	default:
	}
}

// outSignal is a signal queued for the sender goroutine.
type outSignal struct {
	sig     signal
	payload []byte
}

// sendLoop sends queued signals in order. Signals of a generation older
// than the link's current one are skipped (restart requests always go).
func (l *Link) sendLoop() {
	for {
		select {
		case <-l.ctx.Done():
			return
		case o := <-l.out:
			if o.sig.kind != kindRestart && o.sig.generation < l.gen.Load() {
				continue
			}
			ctx, cancel := context.WithTimeout(l.ctx, l.m.timers.SignalTimeout)
			err := l.m.opts.Signaler.SendSignal(ctx, l.name, o.payload)
			cancel()
			if err != nil && l.ctx.Err() == nil {
				select {
				case l.inbox <- evSignalFailed{gen: o.sig.generation, kind: o.sig.kind, err: err}:
				case <-l.ctx.Done():
					return
				}
			}
		}
	}
}

// links sorts by name.
func sortLinks(ls []*Link) {
	slices.SortFunc(ls, func(a, b *Link) int {
		switch {
		case a.name < b.name:
			return -1
		case a.name > b.name:
			return 1
		}
		return 0
	})
}
