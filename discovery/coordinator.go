package discovery

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/meshd/meshd/pki"
)

// CoordinatorOptions configure a Coordinator.
type CoordinatorOptions struct {
	// Credentials are the coordinator's node certificate and key: the TLS
	// server certificate of node sessions, and by its name the coordinator's
	// memberlist name. Must not be nil; the certificate must carry the
	// coordinator role.
	Credentials *pki.Credentials
	// Verifier is the mesh's verification policy, shared with the rest of the
	// daemon so that a CRL installed anywhere applies everywhere. Must not be
	// nil.
	Verifier *pki.Verifier
	// Logger; nil discards.
	Logger *slog.Logger

	// ListenAddr is the TCP address node sessions connect to ("host:port";
	// port 0 picks one, see Addr). Must be set unless Listener is.
	ListenAddr string
	// Listener, if not nil, is used instead of ListenAddr. The coordinator
	// closes it.
	Listener net.Listener

	// GossipAddr is the UDP+TCP address memberlist binds ("host:port"; port
	// 0 picks one, see GossipAddr()). Ignored when GossipTransport is set.
	GossipAddr string
	// GossipAdvertise is the address other coordinators reach this one at
	// ("host:port"). "" = the bound address.
	GossipAdvertise string
	// GossipKey encrypts and authenticates all gossip (AES-GCM; 16, 24 or 32
	// bytes). Required: an unencrypted coordinator tier would let anyone who
	// can reach the port join it.
	GossipKey []byte
	// Label keeps meshes apart: memberlist drops packets and streams with a
	// different label. "" = "meshd/" + the first 16 hex digits of the CA
	// certificate's SHA-256, so meshes with different CAs never merge.
	Label string
	// Join lists other coordinators' gossip addresses ("host:port"). Start
	// tries each once; the coordinator retries missing ones every
	// RejoinInterval, which also heals partitions that outlast memberlist's
	// dead-node gossip. Empty = start a new cluster.
	Join []string
	// GossipTransport, if not nil, replaces memberlist's UDP/TCP transport
	// (tests inject faults with it). The coordinator shuts it down.
	GossipTransport memberlist.Transport
	// Timers tune memberlist; zero fields keep memberlist's LAN defaults.
	Timers GossipTimers

	// TombstoneTTL is how long a departed node's tombstone blocks its older
	// records. Zero = 24h.
	TombstoneTTL time.Duration
	// OfflineTTL is how long a record stays after its node's last session
	// ended. Zero = 72h.
	OfflineTTL time.Duration
	// KeepaliveInterval is how often nodes ping; a session silent for three
	// intervals is closed. Zero = 5s: a node whose address changed (roaming,
	// NAT flush) notices its dead session within 15 s and re-registers, which
	// it needs before it can signal new links. 1000 sessions cost the
	// coordinator 200 small frames a second.
	KeepaliveInterval time.Duration
	// HandshakeTimeout bounds the TLS handshake and, separately, the
	// registration after it. Zero = 10s.
	HandshakeTimeout time.Duration
	// MaxUnauthenticated bounds connections whose TLS handshake has not
	// completed; beyond it new connections are closed at accept. Zero = 256.
	MaxUnauthenticated int
	// MaxUnauthenticatedPerSource bounds them per source address (an IPv4
	// address or an IPv6 /64) once half of MaxUnauthenticated are taken,
	// so that one host cannot take every slot (admission.go). Zero = 16.
	MaxUnauthenticatedPerSource int
	// FrameRate and FrameBurst are the per-session token bucket for inbound
	// signals. Zero = 50 frames/s, burst 200. The other frame kinds have
	// fixed buckets (sessionLimits; docs/protocol.md, "Limits").
	FrameRate  float64
	FrameBurst int
	// FloodDrops: a session that has this many frames dropped by its rate
	// limits within FloodWindow is closed (CodeFlooding); a dropped Signal
	// counts a tenth (floodWeight). Zero = 500 in 10s.
	FloodDrops  int
	FloodWindow time.Duration
	// MaxSessions refuses sessions above this count (overloaded). Zero = 10000.
	MaxSessions int
	// SendQueue is how many frames may wait for one session before it is
	// closed as too slow (it reconnects and gets a fresh snapshot). Zero = 1024.
	SendQueue int
	// SweepInterval paces expiry, presence reconciliation, CRL checks, TURN
	// credential refresh and push/pull state encoding. Zero = 1s.
	SweepInterval time.Duration
	// RejoinInterval paces retries of Join addresses that are not live
	// members. Zero = 30s.
	RejoinInterval time.Duration
	// SignalTimeout bounds how long a forwarded signal waits for the other
	// coordinator's answer. Zero = 10s.
	SignalTimeout time.Duration

	// TURN configures the embedded STUN/TURN server and TURN credentials.
	TURN TURNOptions

	// StateDir, if not "", holds the coordinator's registry cache
	// (CoordinatorCacheFile, mode 0600), loaded at Start so that a restarted
	// coordinator answers with the whole registry (coordcache.go).
	StateDir string
	// StartGrace is how long after Start the nodes that a previous
	// incarnation held online stay online without a session, their chance
	// to reconnect. Zero = 1m.
	StartGrace time.Duration
}

// GossipTimers tune memberlist. Zero fields keep DefaultLANConfig values.
type GossipTimers struct {
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	GossipInterval   time.Duration
	PushPullInterval time.Duration
	TCPTimeout       time.Duration
	SuspicionMult    int
	RetransmitMult   int
	// GossipToTheDeadTime: how long dead members still receive gossip.
	GossipToTheDeadTime time.Duration
}

// Member is one coordinator of the gossip cluster.
type Member struct {
	Name string // coordinator node name
	Addr string // gossip address "ip:port"
}

// Coordinator is one member of the coordinator tier: it serves node sessions,
// replicates the registry with the other coordinators over memberlist, routes
// signals, propagates CRLs and runs the embedded STUN/TURN server.
//
// Goroutines: run (owns the registry, the session table and the forward
// table), accept, one serve + one writer per session, one sender per other
// coordinator, rejoin; memberlist's and pion's own.
type Coordinator struct {
	// Immutable after New.
	opts     CoordinatorOptions
	log      *slog.Logger
	name     string
	label    string
	tlsConf  *tls.Config
	bcastMax int // largest message put on memberlist's broadcast queue
	adm      *admission

	// Lifecycle.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	done      chan struct{}
	startOnce sync.Once
	closeOnce sync.Once
	started   atomic.Bool
	fatal     atomic.Pointer[error]

	// Set in Start before any goroutine runs; read-only afterwards.
	ln    net.Listener
	ml    *memberlist.Memberlist
	queue *memberlist.TransmitLimitedQueue
	del   *delegate
	turn  *turnService

	// Channels into the run loop.
	events    chan sessionEvent
	cmds      chan func()
	fwdFailed chan []uint64

	// Counters (atomic; read by Stats).
	rc              recordCounters
	fc              frameCounters
	gossipDropped   atomic.Uint64
	gossipMalformed atomic.Uint64
	gossipRefused   atomic.Uint64
	sessRefused     atomic.Uint64
	dupRefused      atomic.Uint64 // sessions refused: another host holds the node's session
	holdersDead     atomic.Uint64 // claimed sessions presumed dead and closed
	sessClosed      atomic.Uint64
	sigRouted       atomic.Uint64
	sigForwarded    atomic.Uint64
	sigFailed       atomic.Uint64
	crlsInstalled   atomic.Uint64
	nconns          atomic.Int64 // handshaken connections (for MaxSessions)
	unauthRefused   atomic.Uint64
	floodClosed     atomic.Uint64
	crlRepeats      atomic.Uint64
	crls            crlCache
	unauthLog       refusalLog
	nSessions       atomic.Int64
	nRecords        atomic.Int64
	nMembers        atomic.Int64
	fanouts         atomic.Uint64 // messages sent by reliable fan-out (tests)

	// Owned by the run goroutine.
	reg        *registry
	sessions   map[string]*session // registered sessions by node name
	fwd        map[uint64]*fwdSignal
	nextFwd    uint64
	peers      map[string]*peerSender // other live coordinators
	probing    map[*session]struct{}  // held sessions whose node another connection claims (duplicate.go)
	dupQueries map[uint64]*dupQuery   // registrations waiting for the holder's coordinator; ids shared with fwd
	dupLogged  map[string]time.Time   // duplicate refusals already logged (log once)
	lastCRL    *big.Int
	stateDirty bool
	// Members that proved the coordinator role (gossipauth.go), when this
	// coordinator last sent each its Hello, and the last refusal logged
	// per member.
	trusted        map[string]*pki.NodeCert
	helloSent      map[string]time.Time
	refusedMembers map[string]string
	// TURN URLs that trusted members announced, and Relays messages of
	// members not yet trusted (gossiprelays.go).
	memberRelays  map[string][]string
	pendingRelays map[string]gossipMsg
	// Registry cache (coordcache.go).
	startedAt   time.Time
	graceOver   bool
	cacheDirty  bool
	cacheQueued time.Time
	cacheOut    chan []byte // cap 1; nil without StateDir
}

// NewCoordinator validates opts and prepares a coordinator; it starts nothing.
func NewCoordinator(opts CoordinatorOptions) (*Coordinator, error) {
	if opts.Credentials == nil || opts.Credentials.Cert == nil || opts.Credentials.Key == nil || opts.Credentials.CA == nil {
		return nil, errors.New("discovery: coordinator needs credentials (CA, certificate, key)")
	}
	if opts.Verifier == nil {
		return nil, errors.New("discovery: coordinator needs a pki verifier")
	}
	if !opts.Credentials.Cert.Identity.Coordinator {
		return nil, fmt.Errorf("discovery: certificate of %q lacks the coordinator role (sign it with meshctl cert sign --coordinator): nodes would refuse its sessions: %w",
			opts.Credentials.Cert.Identity.Name, pki.ErrNotCoordinator)
	}
	if opts.ListenAddr == "" && opts.Listener == nil {
		return nil, errors.New("discovery: coordinator needs a session listen address")
	}
	if opts.GossipAddr == "" && opts.GossipTransport == nil {
		return nil, errors.New("discovery: coordinator needs a gossip address")
	}
	switch len(opts.GossipKey) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("discovery: gossip key must be 16, 24 or 32 bytes, got %d", len(opts.GossipKey))
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&opts.TombstoneTTL, 24*time.Hour)
	setDefault(&opts.OfflineTTL, 72*time.Hour)
	setDefault(&opts.KeepaliveInterval, 5*time.Second)
	setDefault(&opts.HandshakeTimeout, 10*time.Second)
	setDefault(&opts.SweepInterval, time.Second)
	setDefault(&opts.RejoinInterval, 30*time.Second)
	setDefault(&opts.SignalTimeout, 10*time.Second)
	setDefault(&opts.StartGrace, time.Minute)
	if opts.FrameRate <= 0 {
		opts.FrameRate = 50
	}
	if opts.FrameBurst <= 0 {
		opts.FrameBurst = 200
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 10000
	}
	if opts.FloodDrops <= 0 {
		opts.FloodDrops = 500
	}
	setDefault(&opts.FloodWindow, 10*time.Second)
	if opts.MaxUnauthenticated <= 0 {
		opts.MaxUnauthenticated = 256
	}
	if opts.MaxUnauthenticatedPerSource <= 0 {
		opts.MaxUnauthenticatedPerSource = 16
	}
	if opts.SendQueue <= 0 {
		opts.SendQueue = 1024
	}
	name := opts.Credentials.Cert.Identity.Name
	label := opts.Label
	if label == "" {
		sum := sha256.Sum256(opts.Credentials.CA.Raw)
		label = "meshd/" + hex.EncodeToString(sum[:8])
	}
	if len(label) > memberlist.LabelMaxSize {
		return nil, fmt.Errorf("discovery: gossip label longer than %d bytes", memberlist.LabelMaxSize)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Coordinator{
		opts:   opts,
		log:    opts.Logger.With("coordinator", name),
		name:   name,
		label:  label,
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		tlsConf: &tls.Config{
			Certificates: []tls.Certificate{opts.Credentials.TLSCertificate()},
			// The certificate is checked right after the handshake, by the
			// same pki policy, so that the refusal can tell the node why
			// (a TLS alert cannot carry the reason).
			ClientAuth: tls.RequireAnyClientCert,
			MinVersion: tls.VersionTLS13,
			NextProtos: []string{sessionALPN},
		},
		adm:       newAdmission(opts.MaxUnauthenticated, opts.MaxUnauthenticatedPerSource),
		events:    make(chan sessionEvent, 256),
		cmds:      make(chan func()),
		fwdFailed: make(chan []uint64, 16),
		sessions:  map[string]*session{},
		fwd:       map[uint64]*fwdSignal{},
		peers:     map[string]*peerSender{},

		probing:    map[*session]struct{}{},
		dupQueries: map[uint64]*dupQuery{},
		dupLogged:  map[string]time.Time{},

		trusted:        map[string]*pki.NodeCert{},
		helloSent:      map[string]time.Time{},
		refusedMembers: map[string]string{},
		memberRelays:   map[string][]string{},
		pendingRelays:  map[string]gossipMsg{},
	}
	c.reg = newRegistry(opts.Verifier, opts.TombstoneTTL, opts.OfflineTTL, &c.rc)
	if opts.StateDir != "" {
		c.cacheOut = make(chan []byte, 1)
	}
	if t := opts.TURN; t.enabled() && t.Secret == "" {
		c.log.Warn("TURN listeners without a secret: the embedded server answers STUN only")
	}
	return c, nil
}

// override sets *dst to v when v is set (positive): zero GossipTimers fields
// keep memberlist's defaults.
func override[T time.Duration | int](dst *T, v T) {
	if v > 0 {
		*dst = v
	}
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

// Start opens the session listener, the TURN server and the gossip cluster,
// joins the configured coordinators and starts serving. A failed Start leaves
// nothing running; call Close anyway.
func (c *Coordinator) Start(ctx context.Context) error {
	err := errors.New("discovery: coordinator already started")
	c.startOnce.Do(func() { err = c.start(ctx) })
	return err
}

func (c *Coordinator) start(ctx context.Context) (err error) {
	if c.ctx.Err() != nil {
		return ErrClosed
	}
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
			c.cancel()
		}
	}()
	c.ln = c.opts.Listener
	if c.ln == nil {
		lc := net.ListenConfig{}
		if c.ln, err = lc.Listen(ctx, listenNetwork("tcp", c.opts.ListenAddr), c.opts.ListenAddr); err != nil {
			return fmt.Errorf("discovery: session listener: %w", err)
		}
	}
	cleanup = append(cleanup, func() { _ = c.ln.Close() })

	if c.turn, err = newTURNService(c.opts.TURN, c.opts.Credentials.TLSCertificate(), c.log); err != nil {
		return err
	}
	cleanup = append(cleanup, func() { _ = c.turn.Close() })

	c.startedAt = time.Now()
	c.loadCache()
	if err := c.startGossip(); err != nil {
		return err
	}
	cleanup = append(cleanup, func() { _ = c.ml.Shutdown() })
	c.encodeState()

	if len(c.opts.Join) > 0 {
		if n, err := c.ml.Join(c.opts.Join); err != nil {
			c.log.Warn("could not join any coordinator yet; retrying in the background", "join", c.opts.Join, "error", err)
		} else {
			c.log.Info("joined coordinator cluster", "contacted", n, "members", c.ml.NumMembers())
		}
	}
	c.started.Store(true)
	c.wg.Add(3)
	go c.run()
	go c.acceptLoop()
	go c.rejoinLoop()
	if c.cacheOut != nil {
		c.wg.Add(1)
		go c.cacheWriter()
	}
	c.log.Info("coordinator started", "sessions", c.ln.Addr().String(), "gossip", c.GossipAddr(), "label", c.label)
	return nil
}

func (c *Coordinator) startGossip() error {
	conf := memberlist.DefaultLANConfig()
	conf.Name = c.name
	conf.Label = c.label
	conf.SecretKey = append([]byte(nil), c.opts.GossipKey...)
	conf.Logger = memberlistLogger(c.log)
	conf.DelegateProtocolVersion = gossipVersion
	conf.DelegateProtocolMin = gossipVersion
	conf.DelegateProtocolMax = gossipVersion
	// A coordinator that comes back on another address (DHCP, a new VM)
	// may reuse its name once the old incarnation has been dead this long.
	conf.DeadNodeReclaimTime = 30 * time.Second
	t := c.opts.Timers
	override(&conf.ProbeInterval, t.ProbeInterval)
	override(&conf.ProbeTimeout, t.ProbeTimeout)
	override(&conf.GossipInterval, t.GossipInterval)
	override(&conf.PushPullInterval, t.PushPullInterval)
	override(&conf.TCPTimeout, t.TCPTimeout)
	override(&conf.SuspicionMult, t.SuspicionMult)
	override(&conf.RetransmitMult, t.RetransmitMult)
	override(&conf.GossipToTheDeadTime, t.GossipToTheDeadTime)
	var advHost string
	advPort := -1
	if c.opts.GossipAdvertise != "" {
		host, port, err := splitHostPort(c.opts.GossipAdvertise)
		if err != nil {
			return fmt.Errorf("discovery: gossip advertise address: %w", err)
		}
		advHost, advPort = host, port
	}
	if c.opts.GossipTransport != nil {
		conf.Transport = c.opts.GossipTransport
	} else {
		host, port, err := splitHostPort(c.opts.GossipAddr)
		if err != nil {
			return fmt.Errorf("discovery: gossip address: %w", err)
		}
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() && ip.IsUnspecified() && advPort < 0 {
			addrs, err := net.InterfaceAddrs()
			if err != nil {
				return fmt.Errorf("discovery: gossip advertise address: %w", err)
			}
			adv, err := wildcardAdvertise(addrs)
			if err != nil {
				return err
			}
			conf.AdvertiseAddr = adv.String()
		}
		// Not memberlist's NetTransport: it allocates 64 KiB per datagram
		// received (gossipnet.go).
		gn, err := listenGossip(host, port, c.log)
		if err != nil {
			return err
		}
		conf.Transport = gn
		conf.BindAddr, conf.BindPort, conf.AdvertisePort = host, gn.port(), gn.port()
	}
	if advPort >= 0 {
		conf.AdvertiseAddr, conf.AdvertisePort = advHost, advPort
	}
	c.queue = &memberlist.TransmitLimitedQueue{RetransmitMult: conf.RetransmitMult, NumNodes: func() int { return int(max(c.nMembers.Load(), 1)) }}
	c.del = &delegate{
		meta:    []byte{gossipVersion},
		queue:   c.queue,
		inbox:   make(chan gossipIn, 4096),
		dropped: &c.gossipDropped,
		events:  make(chan struct{}, 1),
		members: map[string]memberlist.Node{},
	}
	conf.Delegate = c.del
	conf.Events = c.del
	// Room for memberlist's compound, label and encryption framing.
	c.bcastMax = conf.UDPBufferSize - 96 - len(c.label)
	ml, err := memberlist.Create(conf)
	if err != nil {
		_ = conf.Transport.Shutdown()
		return fmt.Errorf("discovery: gossip: %w", err)
	}
	c.ml = ml
	c.nMembers.Store(int64(ml.NumMembers()))
	return nil
}

func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", hp)
	}
	return host, port, nil
}

// Addr is the bound session address (nil before Start).
func (c *Coordinator) Addr() net.Addr {
	if !c.started.Load() {
		return nil
	}
	return c.ln.Addr()
}

// GossipAddr is the advertised gossip address "ip:port" ("" before Start).
func (c *Coordinator) GossipAddr() string {
	if c.del == nil {
		return ""
	}
	for _, m := range c.del.memberList() {
		if m.Name == c.name {
			return m.Addr
		}
	}
	return ""
}

// Name is the coordinator's node name.
func (c *Coordinator) Name() string { return c.name }

// TURNURLs are the URLs handed out with TURN credentials.
func (c *Coordinator) TURNURLs() []string {
	if c.turn == nil {
		return nil
	}
	return append([]string(nil), c.turn.urls...)
}

// Members lists the live coordinators, this one included.
func (c *Coordinator) Members() []Member {
	if !c.started.Load() {
		return nil
	}
	return c.del.memberList()
}

// Records returns this coordinator's registry replica (tombstones included),
// sorted by name, or nil once closed.
func (c *Coordinator) Records() []Record {
	var out []Record
	_ = c.do(func() {
		for _, r := range c.reg.records() {
			out = append(out, r.Clone())
		}
	})
	return out
}

// PublishCRL installs crl if it is CA-signed and newer than the current one,
// and passes it to every coordinator and session. Revoked nodes' sessions are
// closed and their records dropped mesh-wide.
func (c *Coordinator) PublishCRL(crl *pki.CRL) error {
	if err := installCRL(c.opts.Verifier, crl); err != nil {
		return err
	}
	return c.do(c.checkCRL)
}

// Stats returns the coordinator's counters.
func (c *Coordinator) Stats() CoordinatorStats {
	return CoordinatorStats{
		Sessions:            int(c.nSessions.Load()),
		Records:             int(c.nRecords.Load()),
		Members:             int(c.nMembers.Load()),
		RecordsAccepted:     c.rc.accepted.Load(),
		RecordsStale:        c.rc.stale.Load(),
		RecordsBadSignature: c.rc.badSig.Load(),
		RecordsInvalid:      c.rc.invalid.Load(),
		RecordsMalformed:    c.rc.malformed.Load(),
		RecordsExpired:      c.rc.expired.Load(),
		RecordsOverLimit:    c.rc.overLimit.Load(),
		FramesMalformed:     c.fc.malformed.Load(),
		FramesTooLarge:      c.fc.tooLarge.Load(),
		FramesBadVersion:    c.fc.badVersion.Load(),
		FramesRateLimited:   c.fc.rateLimited.Load(),
		GossipDropped:       c.gossipDropped.Load(),
		GossipMalformed:     c.gossipMalformed.Load(),
		GossipRefused:       c.gossipRefused.Load(),
		SessionsRefused:     c.sessRefused.Load(),
		UnauthRefused:       c.unauthRefused.Load(),
		SessionsFlooding:    c.floodClosed.Load(),
		CRLsRepeated:        c.crlRepeats.Load(),
		SessionsDuplicate:   c.dupRefused.Load(),
		HoldersPresumedDead: c.holdersDead.Load(),
		SessionsClosed:      c.sessClosed.Load(),
		SignalsRouted:       c.sigRouted.Load(),
		SignalsForwarded:    c.sigForwarded.Load(),
		SignalsFailed:       c.sigFailed.Load(),
		CRLsInstalled:       c.crlsInstalled.Load(),
	}
}

// do runs fn on the run goroutine and waits for it.
func (c *Coordinator) do(fn func()) error {
	if !c.started.Load() {
		return ErrClosed
	}
	return runOnOwner(context.Background(), c.ctx, c.cmds, fn)
}

// Close stops the coordinator: sessions are told it is shutting down, the
// cluster is left gracefully, listeners close. Idempotent; it waits until
// every goroutine the coordinator started has returned.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		if !c.started.Load() {
			if c.turn != nil {
				_ = c.turn.Close()
			}
			close(c.done)
			return
		}
		_ = c.ln.Close()
		// run closes the sessions and stops the peer senders on its way out.
		c.wg.Wait()
		if err := c.ml.Leave(c.leaveTimeout()); err != nil {
			c.log.Debug("leaving the coordinator cluster", "error", err)
		}
		_ = c.ml.Shutdown()
		_ = c.turn.Close()
		close(c.done)
		c.log.Info("coordinator stopped")
	})
	<-c.done
	return nil
}

func (c *Coordinator) leaveTimeout() time.Duration {
	if t := c.opts.Timers.GossipInterval; t > 0 {
		return 5 * t
	}
	return time.Second
}

// Wait returns a channel closed when the coordinator has stopped.
func (c *Coordinator) Wait() <-chan struct{} { return c.done }

// Err returns the first fatal error (the session listener failing), or nil.
func (c *Coordinator) Err() error {
	if p := c.fatal.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *Coordinator) onFatal(err error) {
	if c.fatal.CompareAndSwap(nil, &err) {
		c.log.Error("coordinator failed; shutting down", "error", err)
		// Not in wg: Close waits for wg, and this goroutine ends with Close.
		go func() { _ = c.Close() }()
	}
}

func (c *Coordinator) acceptLoop() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			if c.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			c.onFatal(fmt.Errorf("discovery: accepting sessions: %w", err))
			return
		}
		src := sourceKey(conn.RemoteAddr())
		if v := c.adm.admit(src); v != admitted {
			// Closed before any goroutine or TLS state exists.
			_ = conn.Close()
			c.refuseUnauthenticated(src, v)
			continue
		}
		c.wg.Add(1)
		go c.serveConn(conn, src)
	}
}

// refuseUnauthenticated counts a connection refused at accept and logs it,
// at most once a second with the count since the last line: a flood costs a
// line a second, not one per connection.
func (c *Coordinator) refuseUnauthenticated(src netip.Addr, v admitVerdict) {
	c.unauthRefused.Add(1)
	c.sessRefused.Add(1)
	if n, ok := c.unauthLog.note(time.Now()); ok {
		reason, limit := "per-source limit", c.opts.MaxUnauthenticatedPerSource
		if v == admitTotalFull {
			reason, limit = "total limit", c.opts.MaxUnauthenticated
		}
		c.log.Warn("refusing unauthenticated connections", "source", src.String(), "reason", reason, "limit", limit, "refused", n)
	}
}

// rejoinLoop retries Join addresses that are not live members.
func (c *Coordinator) rejoinLoop() {
	defer c.wg.Done()
	if len(c.opts.Join) == 0 {
		return
	}
	t := time.NewTicker(c.opts.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		live := map[string]bool{}
		for _, m := range c.del.memberList() {
			live[m.Addr] = true
		}
		var missing []string
		for _, a := range c.opts.Join {
			if !live[a] {
				missing = append(missing, a)
			}
		}
		if len(missing) == 0 {
			continue
		}
		if n, err := c.ml.Join(missing); err == nil {
			c.log.Info("rejoined coordinators", "contacted", n, "members", c.ml.NumMembers())
		} else {
			c.log.Debug("rejoin failed", "join", missing, "error", err)
		}
	}
}

// run is the owner of the registry and the session table.
func (c *Coordinator) run() {
	defer c.wg.Done()
	sweep := time.NewTicker(c.opts.SweepInterval)
	defer sweep.Stop()
	defer c.shutdownOwned()
	c.reconcileMembers()
	for {
		select {
		case <-c.ctx.Done():
			return
		case ev := <-c.events:
			c.handleSessionEvent(ev)
		case in := <-c.del.inbox:
			c.handleGossip(in)
		case <-c.del.events:
			c.reconcileMembers()
		case ids := <-c.fwdFailed:
			for _, id := range ids {
				c.finishForward(id, sigPeerOffline)
				c.finishDupQuery(id, dupUnreachable, nil)
			}
		case fn := <-c.cmds:
			fn()
		case <-sweep.C:
			c.sweep()
		}
	}
}

// shutdownOwned runs on the run goroutine as it exits.
func (c *Coordinator) shutdownOwned() {
	// The registry as it stands, sessions still online: after a restart
	// they get StartGrace to come back (coordcache.go).
	c.flushCache()
	for _, s := range c.sessions {
		s.kill(CodeShuttingDown, "coordinator shutting down")
	}
	for name, p := range c.peers {
		p.stop()
		delete(c.peers, name)
	}
}

var _ io.Closer = (*Coordinator)(nil)
