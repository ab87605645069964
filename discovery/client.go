package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/pki"
)

// ClientOptions configure a node's session client.
type ClientOptions struct {
	// Credentials are the node's certificate and key. Must not be nil.
	Credentials *pki.Credentials
	// Verifier is the mesh's verification policy, shared with tunnel so that
	// CRLs received here apply to every handshake. Must not be nil.
	Verifier *pki.Verifier
	// Coordinators are session addresses ("host:port") in order of
	// preference. Must not be empty.
	Coordinators []string
	// CoordinatorNames, if not empty, pins the coordinators this node
	// accepts by certificate name (join.coordinator_names): a coordinator
	// certificate with another name is refused (ErrCoordinatorNotPinned).
	// Empty = any certificate of the mesh with the coordinator role.
	CoordinatorNames []string
	// Info is what the node advertises at start (UpdateRecord changes it).
	Info LocalInfo
	// StateDir holds the registry cache (CacheFile, mode 0600). "" = no cache.
	StateDir string
	// OnSignal receives signals from other nodes, in order, on one goroutine
	// of its own; it should hand them off quickly (signals beyond
	// SignalQueue waiting are dropped and counted). nil drops signals.
	OnSignal func(from string, payload []byte)
	// Logger; nil discards.
	Logger *slog.Logger

	// DialTimeout bounds TCP connect + TLS handshake. Zero = 10s.
	DialTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered exponential backoff
	// between connection attempts. Zero = 250ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// ConflictBackoffMin and ConflictBackoffMax bound the backoff after a
	// coordinator refused the session because another host holds this
	// node's session (ErrDuplicateIdentity): the first retry comes after
	// ConflictBackoffMin (a restarted node whose old session is being closed
	// gets in then), later ones after the coordinator's retry-after hint or
	// the doubled delay, whichever is longer, never beyond
	// ConflictBackoffMax. Zero = 1s and 60s.
	ConflictBackoffMin, ConflictBackoffMax time.Duration
	// SignalQueue is how many inbound signals may wait for OnSignal. Zero = 1024.
	SignalQueue int
	// CacheDelay coalesces cache writes after registry changes. Zero = 2s.
	CacheDelay time.Duration
	// CRLCheckInterval paces noticing a CRL installed in Verifier by someone
	// else (it is then announced and passed to the coordinator), and the
	// check for peers absent beyond AbsenceGrace. Zero = 1s.
	CRLCheckInterval time.Duration
	// AbsenceGrace is how long a peer may be missing from the coordinators'
	// snapshots before the node drops it (ReasonGone): a restarted
	// coordinator (or one the node fails over to that has not caught up)
	// answers with what has registered so far, and the peers still
	// reconnecting must not be dropped, nor their links closed, meanwhile.
	// Only while a session is up does the time count; an Entry of the peer
	// ends it. A Remove, a tombstone or a revocation still drops a peer at
	// once. Zero = 2m (the reconnect backoff is at most 30s by default).
	AbsenceGrace time.Duration
}

// maxChangeBacklog is how many changes may wait for subscribers before the
// client stops reading its coordinator session (see Client.run). A whole
// registry arriving at once (one SnapshotEnd, up to 2×MaxRegistryEntries
// changes) is applied in full, and the frames after it wait until
// subscribers are back under this; in steady state only a coordinator
// flooding changes faster than subscribers take them meets it.
const maxChangeBacklog = MaxRegistryEntries

// ChangeKind says what a Change is about.
type ChangeKind uint8

const (
	// PeerAdded: a node appeared (Peer is its record).
	PeerAdded ChangeKind = iota + 1
	// PeerUpdated: a node's record or presence changed (Peer is the new one).
	PeerUpdated
	// PeerRemoved: a node left, was revoked, expired, or is no longer in the
	// registry (Peer is the last record seen; Reason says which).
	PeerRemoved
	// CRLUpdated: a newer CRL was installed in the Verifier (CRL is set).
	// Links to revoked peers should be closed; PeerRemoved changes follow for
	// revoked nodes in the registry.
	CRLUpdated
	// TURNUpdated: new TURN credentials (TURN is set).
	TURNUpdated
)

func (k ChangeKind) String() string {
	switch k {
	case PeerAdded:
		return "added"
	case PeerUpdated:
		return "updated"
	case PeerRemoved:
		return "removed"
	case CRLUpdated:
		return "crl"
	case TURNUpdated:
		return "turn"
	default:
		return fmt.Sprintf("change-%d", uint8(k))
	}
}

// Removal reasons carried by PeerRemoved changes.
const (
	ReasonLeft    = "left"    // the node left (signed tombstone)
	ReasonRevoked = "revoked" // its certificate was revoked
	ReasonExpired = "expired" // offline too long, or its certificate expired
	ReasonGone    = "gone"    // missing from the coordinators' snapshots for longer than AbsenceGrace
)

// Change is one registry event delivered to subscribers.
type Change struct {
	Kind   ChangeKind
	Peer   Record           // PeerAdded, PeerUpdated, PeerRemoved
	Reason string           // PeerRemoved
	CRL    *pki.CRL         // CRLUpdated
	TURN   *TURNCredentials // TURNUpdated
}

// Status is the client's session state.
type Status struct {
	Connected   bool
	Coordinator string    // coordinator name (from its Welcome), "" if not connected
	Address     string    // address of the current (or last tried) coordinator
	Since       time.Time // when the current session was established
	LastError   error     // last session failure, nil if none yet
	LastErrorAt time.Time
	Failovers   uint64 // sessions established after a lost one
	Peers       int    // peers known (excluding self)
	// Conflict is set while coordinators refuse this node because another
	// host holds its session (ErrDuplicateIdentity); zero otherwise. It is
	// cleared when a session is established.
	Conflict Conflict
}

// Conflict describes coordinators refusing this node because another host
// holds a live session with its name: usually a machine cloned with this
// node's certificate and key. The established session keeps the name; this
// node retries with backoff and gets in once that session ends.
type Conflict struct {
	// Holder is the address ("ip:port") of the host holding the session, as
	// the coordinator tier sees it; "" if the coordinator did not say.
	Holder string
	// Coordinator names the coordinator that refused (its certificate's
	// name), or its address.
	Coordinator string
	Refusals    uint64    // refusals since the last established session
	First, Last time.Time // first and latest of them
}

// Active reports whether the node is being refused.
func (c Conflict) Active() bool { return c.Refusals > 0 }

// String says what happened in one line, or "" when there is no conflict.
func (c Conflict) String() string {
	if !c.Active() {
		return ""
	}
	who := "another host"
	if c.Holder != "" {
		who += " at " + c.Holder
	}
	return who + " is using this node's identity (refused by coordinator " + c.Coordinator + ")"
}

// Client is a node's session to the coordinator tier: it registers the node's
// signed record, keeps a verified copy of the registry (also cached on disk),
// routes signals, receives TURN credentials and passes CRLs on. It fails over
// between coordinators and keeps serving its last registry meanwhile.
//
// Goroutines: run (owns the registry, the session and pending signals), one
// dialer per attempt, one reader + one writer per session, the change
// notifier and the signal deliverer.
type Client struct {
	// Immutable after New.
	opts      ClientOptions
	log       *slog.Logger
	name      string
	cachePath string

	// Lifecycle.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	done      chan struct{}
	startOnce sync.Once
	closeOnce sync.Once
	started   atomic.Bool

	cmds       chan func()
	dialResult chan dialResult
	changes    *notifier[Change]
	signals    chan signalIn

	// creds is the node's certificate and key (opts.Credentials until
	// SetCredentials swaps them); dials read it.
	creds atomic.Pointer[pki.Credentials]

	// Published for concurrent readers.
	peersPub  atomic.Pointer[[]*Record]
	statusPub atomic.Pointer[Status]
	turnPub   atomic.Pointer[TURNCredentials]

	rc              recordCounters
	framesBad       atomic.Uint64
	signalsDropped  atomic.Uint64
	failovers       atomic.Uint64
	versionsRefused atomic.Uint64
	dupRefusals     atomic.Uint64

	// Owned by the run goroutine.
	reg map[string]*Record // peers, excluding self; no tombstones
	// absent: peers held in reg that the last snapshot lacked, and since
	// when (dropped after AbsenceGrace unless an Entry confirms them).
	absent     map[string]time.Time
	local      *Record // the node's current signed record
	info       LocalInfo
	sess       *clientSession
	dialing    bool
	coordIdx   int
	attempts   int // consecutive failed attempts
	everUp     bool
	status     Status
	lastCRL    *pki.CRL
	leaving    chan error // Leave in progress, answered when the tombstone comes back
	ping       *time.Ticker
	regVersion uint64 // bumped on every registry change (cache writes)
	left       bool
	nextSigID  uint32
	// refusedHeld is the last version a coordinator claimed to hold that
	// this node refused to follow (logged once per value, not per retry).
	refusedHeld uint64
	// Duplicate-identity refusals: consecutive ones since the last session,
	// the latest retry-after hint, whether the next delay is theirs, and the
	// last conflict logged (logged once per distinct reason).
	dupStreak      int
	dupHint        time.Duration
	dupNext        bool
	conflictLogged string
	// changeBacklog: while more changes than this wait for subscribers, the
	// run loop stops taking frames from the session (backpressure), so a
	// coordinator cannot grow the queue faster than subscribers drain it.
	changeBacklog int
}

type signalIn struct {
	from    string
	payload []byte
}

// NewClient validates opts and signs the node's initial record; it starts
// nothing.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.Credentials == nil || opts.Credentials.Cert == nil || opts.Credentials.Key == nil {
		return nil, errors.New("discovery: client needs credentials (certificate, key)")
	}
	if opts.Verifier == nil {
		return nil, errors.New("discovery: client needs a pki verifier")
	}
	if len(opts.Coordinators) == 0 {
		return nil, errors.New("discovery: client needs at least one coordinator address")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&opts.DialTimeout, 10*time.Second)
	setDefault(&opts.BackoffMin, 250*time.Millisecond)
	setDefault(&opts.BackoffMax, 30*time.Second)
	setDefault(&opts.ConflictBackoffMin, time.Second)
	setDefault(&opts.ConflictBackoffMax, time.Minute)
	opts.ConflictBackoffMin = min(opts.ConflictBackoffMin, opts.ConflictBackoffMax)
	setDefault(&opts.CacheDelay, 2*time.Second)
	setDefault(&opts.CRLCheckInterval, time.Second)
	setDefault(&opts.AbsenceGrace, 2*time.Minute)
	if opts.SignalQueue <= 0 {
		opts.SignalQueue = 1024
	}
	opts.Coordinators = append([]string(nil), opts.Coordinators...)
	name := opts.Credentials.Cert.Identity.Name
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		opts:       opts,
		log:        opts.Logger.With("node", name),
		name:       name,
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		cmds:       make(chan func()),
		dialResult: make(chan dialResult),
		changes:    newNotifier[Change](),
		signals:    make(chan signalIn, opts.SignalQueue),
		reg:        map[string]*Record{},
		absent:     map[string]time.Time{},
		info:       opts.Info,

		changeBacklog: maxChangeBacklog,
	}
	if opts.StateDir != "" {
		c.cachePath = filepath.Join(opts.StateDir, CacheFile)
	}
	rec, err := newLocalRecord(opts.Credentials, opts.Info, nextVersion(0, time.Now()), false)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("discovery: node record: %w", err)
	}
	c.local = rec
	c.creds.Store(opts.Credentials)
	c.publishPeers()
	c.publishStatus()
	return c, nil
}

// Start loads the cached registry (verifying every record) and starts
// connecting. Peers() serves the cached registry at once.
func (c *Client) Start(ctx context.Context) error {
	err := errors.New("discovery: client already started")
	c.startOnce.Do(func() {
		if c.ctx.Err() != nil {
			err = ErrClosed
			return
		}
		err = nil
		c.loadCache()
		c.started.Store(true)
		c.wg.Add(2)
		go c.run()
		go func() { defer c.wg.Done(); c.changes.run(c.ctx) }()
		if c.opts.OnSignal != nil {
			c.wg.Add(1)
			go c.deliverSignals()
		}
	})
	return err
}

// Close stops the client without leaving the mesh (the record stays,
// offline; see Leave). The cache is written first. Idempotent. It waits for
// the client's goroutines, so it must not be called from a Subscribe or
// OnSignal callback.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		if c.started.Load() {
			_ = c.do(context.Background(), func() { c.writeCache() })
		}
		c.cancel()
		c.wg.Wait()
		close(c.done)
	})
	<-c.done
	return nil
}

// Wait returns a channel closed when the client has stopped.
func (c *Client) Wait() <-chan struct{} { return c.done }

// Name is this node's name.
func (c *Client) Name() string { return c.name }

// Peers returns the verified records of every other node in the registry
// (no tombstones), sorted by name. The result is the caller's.
func (c *Client) Peers() []Record {
	p := c.peersPub.Load()
	out := make([]Record, len(*p))
	for i, r := range *p {
		out[i] = r.Clone()
	}
	return out
}

// Peer returns one peer's record.
func (c *Client) Peer(name string) (Record, bool) {
	p := *c.peersPub.Load()
	i := sort.Search(len(p), func(i int) bool { return p[i].Name >= name })
	if i < len(p) && p[i].Name == name {
		return p[i].Clone(), true
	}
	return Record{}, false
}

// Subscribe registers fn for registry changes and returns a function that
// unregisters it. Changes are delivered in order on one goroutine; fn must
// not call back into blocking Client methods for long. Subscribe before
// Start to see the cached registry arrive as PeerAdded changes.
func (c *Client) Subscribe(fn func(Change)) (unsubscribe func()) {
	return c.changes.subscribe(fn)
}

// Status returns the session state.
func (c *Client) Status() Status { return *c.statusPub.Load() }

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{
		RecordsStale:        c.rc.stale.Load(),
		RecordsBadSignature: c.rc.badSig.Load(),
		RecordsInvalid:      c.rc.invalid.Load(),
		RecordsMalformed:    c.rc.malformed.Load(),
		RecordsOverLimit:    c.rc.overLimit.Load(),
		FramesMalformed:     c.framesBad.Load(),
		VersionsRefused:     c.versionsRefused.Load(),
		SignalsDropped:      c.signalsDropped.Load(),
		Failovers:           c.failovers.Load(),
		DuplicateRefusals:   c.dupRefusals.Load(),
	}
}

// clearTURN forgets the TURN credentials of an earlier session (their
// coordinator's TURN URLs): TURNCredentials then has no URLs, and a
// TURNUpdated change with empty credentials tells the daemon.
func (c *Client) clearTURN() {
	if p := c.turnPub.Load(); p == nil || len(p.URLs) == 0 {
		return
	}
	c.turnPub.Store(&TURNCredentials{})
	c.changes.push(Change{Kind: TURNUpdated, TURN: &TURNCredentials{}})
}

// TURNCredentials returns the latest TURN credentials, and false if none
// were received yet (they may have expired if no coordinator has been
// reachable for long; check Expires).
func (c *Client) TURNCredentials() (TURNCredentials, bool) {
	p := c.turnPub.Load()
	if p == nil {
		return TURNCredentials{}, false
	}
	t := *p
	t.URLs = append([]string(nil), p.URLs...)
	return t, true
}

// SendSignal sends an opaque payload to node to through the coordinators. It
// returns once the target's coordinator queued it on the target's session,
// or with an error: a *SignalError wrapping ErrUnknownPeer, ErrPeerOffline,
// ErrRateLimited or ErrPayloadTooLarge; ErrNotConnected (wrapped) when no
// session is up; the context's error. Safe for concurrent use.
func (c *Client) SendSignal(ctx context.Context, to string, payload []byte) error {
	if len(payload) > MaxSignalPayload {
		return &SignalError{To: to, Reason: fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, len(payload), MaxSignalPayload)}
	}
	if to == "" || len(to) > maxNameLen {
		return &SignalError{To: to, Reason: ErrUnknownPeer}
	}
	res := make(chan error, 1)
	err := c.do(ctx, func() {
		s := c.sess
		if s == nil || !s.welcomed {
			res <- ErrNotConnected
			return
		}
		c.nextSigID++
		if c.nextSigID == 0 {
			c.nextSigID = 1
		}
		s.pending[c.nextSigID] = res
		s.send(signalFrame(c.nextSigID, to, payload))
	})
	if err != nil {
		return err
	}
	select {
	case err := <-res:
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrNotConnected):
			return fmt.Errorf("discovery: signal to %q: %w", to, err)
		default:
			return &SignalError{To: to, Reason: err}
		}
	case <-ctx.Done():
		return fmt.Errorf("discovery: signal to %q: %w", to, ctx.Err())
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// UpdateRecord re-signs the node's record with new information (a newer
// version) and publishes it when connected, else at the next registration.
func (c *Client) UpdateRecord(info LocalInfo) error {
	if err := checkRoutes(info.Routes, c.creds.Load().Cert.Identity.Subnets); err != nil {
		return err
	}
	var err error
	if derr := c.do(context.Background(), func() {
		rec, e := newLocalRecord(c.creds.Load(), info, c.nextVersion(), false)
		if e != nil {
			err = e
			return
		}
		c.info, c.local = info, rec
		if c.sess != nil && c.sess.welcomed {
			c.sess.send(recordFrame(frameRecord, rec))
		}
	}); derr != nil {
		return derr
	}
	return err
}

// SetCredentials replaces the node's certificate and key (a renewal: same
// name). The record is re-signed with the new
// certificate, and the coordinator session is re-established with it at
// once — a coordinator accepts a record only with the certificate of the
// session carrying it. The node is offline in the registry for the moment
// that takes; peers keep their connected links meanwhile.
func (c *Client) SetCredentials(creds *pki.Credentials) error {
	if creds == nil || creds.Cert == nil || creds.Key == nil {
		return errors.New("discovery: SetCredentials needs a certificate and key")
	}
	if old := c.creds.Load().Cert.Identity.Name; creds.Cert.Identity.Name != old {
		return fmt.Errorf("discovery: the new certificate is for %q, not %q", creds.Cert.Identity.Name, old)
	}
	var err error
	if derr := c.do(context.Background(), func() {
		if e := checkRoutes(c.info.Routes, creds.Cert.Identity.Subnets); e != nil {
			err = e
			return
		}
		rec, e := newLocalRecord(creds, c.info, c.nextVersion(), c.local.Left)
		if e != nil {
			err = e
			return
		}
		c.creds.Store(creds)
		c.local = rec
		if c.sess != nil && !c.left {
			c.endSession(errRenewed)
			c.startDial()
		}
	}); derr != nil {
		return derr
	}
	return err
}

// PublishCRL installs crl in the Verifier if it is CA-signed and newer, and
// passes the newest CRL to the coordinator, which spreads it mesh-wide.
func (c *Client) PublishCRL(crl *pki.CRL) error {
	if err := installCRL(c.opts.Verifier, crl); err != nil {
		return err
	}
	return c.do(context.Background(), func() {
		c.checkCRL()
		if s := c.sess; s != nil && s.welcomed && s.snapshot == nil {
			c.sendCRLUp(s)
		}
	})
}

// Leave publishes a signed tombstone (the node leaves the mesh: peers drop
// it until it registers again) and stops reconnecting. Close afterwards.
func (c *Client) Leave(ctx context.Context) error {
	res := make(chan error, 1)
	if err := c.do(ctx, func() {
		if c.sess == nil || !c.sess.welcomed {
			res <- fmt.Errorf("discovery: leave: %w", ErrNotConnected)
			return
		}
		tomb, err := newLocalRecord(c.creds.Load(), c.info, c.nextVersion(), true)
		if err != nil {
			res <- err
			return
		}
		c.local, c.left, c.leaving = tomb, true, res
		c.sess.send(recordFrame(frameLeave, tomb))
	}); err != nil {
		return err
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// do runs fn on the run goroutine.
func (c *Client) do(ctx context.Context, fn func()) error {
	if !c.started.Load() {
		return ErrClosed
	}
	return runOnOwner(ctx, c.ctx, c.cmds, fn)
}

// installCRL gives crl to v, which keeps it only if it is CA-signed and
// newer than the one it has; an older one is not an error.
func installCRL(v *pki.Verifier, crl *pki.CRL) error {
	if crl == nil {
		return errors.New("discovery: nil CRL")
	}
	if _, err := v.UpdateCRL(crl); err != nil {
		return fmt.Errorf("discovery: CRL not installed: %w", err)
	}
	return nil
}

// runOnOwner hands fn to the goroutine that reads cmds and waits until it
// has run. It gives up when the caller's ctx ends (before fn was taken) or
// when the owner stops (owner's ctx; ErrClosed). Client and Coordinator
// both keep their state on one such goroutine.
func runOnOwner(ctx, owner context.Context, cmds chan<- func(), fn func()) error {
	done := make(chan struct{})
	select {
	case cmds <- func() { fn(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-owner.Done():
		return ErrClosed
	}
	select {
	case <-done:
		return nil
	case <-owner.Done():
		return ErrClosed
	}
}

// nextVersion is the version of the node's next record (see the function
// of the same name). Versions are time-based: never above this node's clock
// unless a coordinator's stale answer (staleAnswer) moved them up, and then
// by at most MaxVersionSkew.
func (c *Client) nextVersion() uint64 { return nextVersion(c.local.Version, time.Now()) }

// deliverSignals calls OnSignal in order.
func (c *Client) deliverSignals() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case s := <-c.signals:
			c.opts.OnSignal(s.from, s.payload)
		}
	}
}

// publishPeers rebuilds the snapshot Peers() reads. Run goroutine only (and
// New, before any goroutine).
func (c *Client) publishPeers() {
	out := make([]*Record, 0, len(c.reg))
	for _, r := range c.reg {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	c.peersPub.Store(&out)
	c.status.Peers = len(out)
	c.publishStatus()
}

func (c *Client) publishStatus() {
	s := c.status
	c.statusPub.Store(&s)
}

// errRenewed ends a coordinator session so that the next one presents the
// renewed certificate (SetCredentials).
var errRenewed = errors.New("discovery: certificate renewed")
