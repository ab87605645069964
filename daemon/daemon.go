package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/relay"
	"github.com/meshd/meshd/tunnel"
)

// Daemon is one meshd node: the overlay, the tunnel manager, the coordinator
// session (and, on coordinator nodes, the coordinator), the control socket
// and the metrics endpoint, wired together and driven by one control loop.
//
// Lifecycle: New validates and builds everything, starting nothing; Start
// brings the node up; Close tears it down in dependency order (control →
// links → coordinator session and coordinator → overlay → metrics) and is
// idempotent; Wait is closed when the daemon has stopped and Err says
// whether a component failed.
//
// Lock order: reloadMu, then mu, then the leaves' own locks; startMu is
// never held together with another. The control loop goroutine owns
// loopState; other goroutines read the published
// snapshots (run, client, view) through atomic pointers.
type Daemon struct {
	// ================================================================
	// Immutable after New.
	opts     Options
	log      *slog.Logger
	name     string
	version  string
	cfgPath  string
	startCfg *config.Config // configuration at New (restart-only keys)
	verifier *pki.Verifier
	self     selfInfo
	lazy     bool
	now      func() time.Time
	ov       *overlay.Interface
	tm       *tunnel.Manager
	coord    *discovery.Coordinator // nil unless coordinator.enabled
	stunAlt  *stunResponder         // nil unless coordinator.enabled with STUN
	ctl      *control.Server
	metrics  *metricsServer // nil unless metrics.enabled
	names    *names         // the mesh's names (dns.go); set by build
	events   *eventHub
	probes   *prober
	stats    daemonStats
	kick     chan struct{} // capacity 1: "recompute the desired state"
	cmds     chan func()   // closures run on the control loop
	hadCache bool          // a registry cache existed at Start
	// netKick and netServers (capacity 1) wake the background netcheck:
	// "run again" and "run again if the STUN servers changed".
	netKick    chan struct{}
	netServers chan struct{}

	// ================================================================
	// Read by any goroutine, swapped whole.
	run     atomic.Pointer[runConfig]
	creds   atomic.Pointer[pki.Credentials] // swapped by a reload that renews the certificate
	client  atomic.Pointer[discovery.Client]
	relay   atomic.Pointer[relay.Server] // the member relay (relay.go); nil unless relay.enabled
	view    atomic.Pointer[view]
	lastNet atomic.Pointer[netSnapshot] // newest netcheck, nil before the first
	netSeq  atomic.Uint64               // numbers netcheck runs in start order
	applied atomic.Bool                 // the control loop applied a desired state

	lazyMu     sync.Mutex // guards lazyWanted
	lazyWanted map[string]bool

	// ================================================================
	// Owned by the control loop goroutine.
	loop loopState

	// ================================================================
	// reloadMu serializes Reload (SIGHUP and meshctl reload may race).
	reloadMu sync.Mutex

	// startMu is held while Start brings components up, so that a
	// concurrent Close waits for it instead of racing it.
	startMu sync.Mutex

	// mu guards the following.
	mu        sync.Mutex
	started   bool
	closed    bool
	startedAt time.Time

	// ================================================================
	// Lifecycle.
	ctx       context.Context // canceled when Close begins
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the daemon's own goroutines
	ready     chan struct{}
	readyOnce sync.Once
	done      chan struct{}
	closeOnce sync.Once
	fatalErr  atomic.Pointer[error]
	fatalCh   chan struct{}
	fatalOnce sync.Once
}

// New validates cfg, loads the credentials and the CRL, and builds every
// component: the TUN device is created here (its addresses come in Start),
// the tunnel manager, the coordinator, the control server and the metrics
// endpoint. Only the coordinator session client is built in Start, because
// its list may start with this node's own coordinator, whose address is
// known once it listens. New starts nothing and listens nowhere. Errors are
// *SetupError: ErrConfig, ErrCredentials or ErrNetwork.
func New(cfg *config.Config, opts Options) (*Daemon, error) {
	p, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.LogLevel != nil {
		opts.LogLevel.Set(cfg.Log.Level.Slog())
	}
	for _, w := range p.warnings {
		log.Warn("configuration", "warning", w)
	}
	version := opts.Version
	if version == "" {
		version = "dev"
	}
	id := p.creds.Cert.Identity
	d := &Daemon{
		opts:       opts,
		log:        log,
		name:       id.Name,
		version:    version,
		cfgPath:    opts.ConfigPath,
		startCfg:   cfg,
		verifier:   p.verifier,
		self:       selfInfo{Name: id.Name, Addrs: []netip.Prefix{id.Addr}},
		lazy:       cfg.ICE.Lazy,
		now:        opts.Tuning.now(),
		events:     newEventHub(),
		probes:     newProber(id.Addr.Addr()),
		kick:       make(chan struct{}, 1),
		cmds:       make(chan func()),
		netKick:    make(chan struct{}, 1),
		netServers: make(chan struct{}, 1),
		lazyWanted: map[string]bool{},
		ready:      make(chan struct{}),
		done:       make(chan struct{}),
		fatalCh:    make(chan struct{}),
	}
	d.creds.Store(p.creds)
	if d.cfgPath == "" {
		d.cfgPath = cfg.File
	}
	if id.Addr6.IsValid() {
		d.self.Addrs = append(d.self.Addrs, id.Addr6)
	}
	d.stats.failures = map[string]uint64{}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.run.Store(p.run)
	d.publishView(nil, nil)

	if err := d.build(p); err != nil {
		d.closeBuilt()
		d.cancel()
		return nil, err
	}
	d.warnCertificate()
	return d, nil
}

// build makes the components. On error the caller closes what was built.
func (d *Daemon) build(p *prepared) error {
	cfg := p.cfg
	ovOpts := overlay.Options{
		Logger: d.log.With("component", "overlay"),
		Name:   cfg.Tun.Name,
		MTU:    cfg.Tun.MTU,
	}
	if cfg.Tun.Mode == config.TunUserspace {
		ovOpts.Mode = overlay.ModeUserspace
		for _, a := range d.self.Addrs {
			ovOpts.UserspaceAddresses = append(ovOpts.UserspaceAddresses, a.Addr())
		}
	}
	if d.lazy {
		ovOpts.OnLinkNeeded = d.wantLink
	}
	ov, err := overlay.New(ovOpts)
	if err != nil {
		if errors.Is(err, overlay.ErrInvalidConfig) {
			return configErr("tun: %v", err)
		}
		return netErr("TUN device", err)
	}
	d.ov = ov

	timers := tunnelTimers(cfg.ICE, cfg.Data)
	cipher, err := dataCipher(cfg.Data)
	if err != nil {
		return configErr("data.cipher: %v", err)
	}
	tOpts := tunnel.Options{
		Logger:          d.log,
		Credentials:     p.creds,
		Verifier:        p.verifier,
		Signaler:        signaler{d},
		ListenAddr:      iceListenAddr(cfg.ICE),
		ListenPort:      cfg.ICE.Port,
		Servers:         d.iceServers,
		ForceRelay:      cfg.ICE.RelayOnly,
		ExcludePrefixes: d.self.meshPrefixes(),
		LinkDownError:   overlay.ErrLinkDown,
		Timers:          timers,
		Cipher:          cipher,
		Interfaces:      interfacePolicy(cfg.ICE, ov.Name(), d.self.meshPrefixes()),
		// config bounds rekey_records to a positive int64.
		RekeyAfterRecords: uint64(cfg.Data.RekeyRecords),
		Now:               d.now,
	}
	if tu := d.opts.Tuning; tu != nil {
		if tu.ICEListenAddr.IsValid() {
			tOpts.ListenAddr = tu.ICEListenAddr
		}
		if tu.TunnelTimers != nil {
			tOpts.Timers = *tu.TunnelTimers
		}
	}
	if d.tm, err = tunnel.NewManager(tOpts); err != nil {
		return configErr("ice: %v", err)
	}

	if cfg.Coordinator.Enabled {
		if d.coord, err = discovery.NewCoordinator(d.coordinatorOptions(p)); err != nil {
			return configErr("coordinator: %v", err)
		}
	}

	if d.ctl, err = control.NewServer(control.ServerOptions{
		Socket:  cfg.Control.Socket,
		Group:   p.controlGroup,
		Backend: d,
		Logger:  d.log.With("component", "control"),
	}); err != nil {
		return configErr("control: %v", err)
	}

	if cfg.Metrics.Enabled {
		d.metrics = newMetricsServer(d, cfg.Metrics.Listen)
	}
	d.names = d.newNames(cfg, p.creds.MeshDomain())
	return nil
}

// iceListenAddr is the ICE port's bind address: both families (:: opens
// an IPv6-only and an IPv4 socket; IPv4 alone on a host without IPv6)
// unless ice.ipv6 is false.
func iceListenAddr(c config.ICE) netip.Addr {
	if c.IPv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// closeBuilt closes what build made, for a failed New.
func (d *Daemon) closeBuilt() {
	if d.ctl != nil {
		_ = d.ctl.Close()
	}
	if d.coord != nil {
		_ = d.coord.Close()
	}
	if d.stunAlt != nil {
		_ = d.stunAlt.Close()
	}
	if d.tm != nil {
		_ = d.tm.Close()
	}
	if d.ov != nil {
		_ = d.ov.Close()
	}
}

// Name returns the node's name (its certificate's CN).
func (d *Daemon) Name() string { return d.name }

// Start brings the node up: the overlay gets its addresses, the ICE port
// opens, the coordinator (if any) listens, the coordinator session starts
// (serving the cached registry at once), then the control socket and the
// metrics endpoint. Cancelling ctx later closes the daemon as Close does.
// On error everything started is closed again.
func (d *Daemon) Start(ctx context.Context) error {
	d.mu.Lock()
	switch {
	case d.closed:
		d.mu.Unlock()
		return ErrClosed
	case d.started:
		d.mu.Unlock()
		return ErrAlreadyStarted
	}
	d.started = true
	d.startedAt = time.Now()
	d.mu.Unlock()
	d.startMu.Lock()
	err := d.start()
	d.startMu.Unlock()
	if err != nil {
		_ = d.Close()
		return err
	}
	// The watcher is outside wg: it may run Close, which waits for wg.
	go func() {
		select {
		case <-ctx.Done():
			d.log.Info("shutting down: context canceled")
		case <-d.fatalCh:
		case <-d.ctx.Done():
			return
		}
		_ = d.Close()
	}()
	d.log.Info("meshd started", "node", d.name, "address", d.self.Addrs[0].String(), "version", d.version)
	return nil
}

func (d *Daemon) start() error {
	cfg := d.startCfg
	if cfg.Node.StateDir != "" {
		if err := os.MkdirAll(cfg.Node.StateDir, 0o700); err != nil {
			return configErr("node.state_dir: %v", err)
		}
		_, err := os.Stat(filepath.Join(cfg.Node.StateDir, discovery.CacheFile))
		d.hadCache = err == nil
	}
	if err := d.ov.Start(d.ctx); err != nil {
		return netErr("overlay", err)
	}
	// The addresses and the firewall go in at once, before any peer: the
	// node is reachable (READY) on its own address from here.
	rc := d.run.Load()
	initial := overlay.Config{
		Addresses:    d.self.Addrs,
		LocalSubnets: masked(cfg.Routes.Advertise),
		Forwarding:   cfg.Routes.Forward,
		Firewall:     rc.firewall,
	}
	if err := d.ov.Reconfig(initial); err != nil && !errors.Is(err, overlay.ErrNoChanges) {
		return netErr("overlay addresses", err)
	}
	d.startNames(d.ctx)
	w := &linkWatch{d: d, lastPath: map[string]tunnel.Path{}}
	d.loop.unsubLinks = d.tm.Subscribe(w.onEvent)
	if err := d.tm.Start(d.ctx); err != nil {
		return netErr("ICE port", err)
	}
	if d.coord != nil {
		if err := d.coord.Start(d.ctx); err != nil {
			return netErr("coordinator", err)
		}
		if a, ok := d.coord.Addr().(interface{ AddrPort() netip.AddrPort }); ok && cfg.Coordinator.STUN.Enabled {
			// Only nodes' NAT verdicts need it: a port taken by another
			// program is worth a warning, not a refusal to run.
			log := d.log.With("component", "coordinator")
			if sr, err := newSTUNResponder(a.AddrPort(), log); err != nil {
				log.Warn("nodes cannot tell this coordinator's NAT mapping behaviour with it alone", "error", err)
			} else {
				d.stunAlt = sr
			}
		}
	}
	if err := d.startRelay(cfg); err != nil {
		return netErr("member relay", err)
	}
	coords := d.coordinatorList(cfg.Join.Coordinators)
	if len(coords) == 0 {
		return configErr("join.coordinators is empty and this node is not a coordinator")
	}
	c, err := d.newClient(coords)
	if err != nil {
		return configErr("join: %v", err)
	}
	if err := d.startClient(c); err != nil {
		return netErr("coordinator session", err)
	}
	if err := d.ctl.Start(d.ctx); err != nil {
		return netErr("control socket", err)
	}
	if d.metrics != nil {
		if err := d.metrics.start(); err != nil {
			return netErr("metrics listener", err)
		}
	}
	if d.ctx.Err() != nil {
		return ErrClosed
	}
	d.wg.Add(5)
	go func() { defer d.wg.Done(); d.runLoop() }()
	go func() { defer d.wg.Done(); d.runNetchecks() }()
	go func() { defer d.wg.Done(); d.probes.respond(d.ctx.Done()) }()
	go func() { defer d.wg.Done(); d.watchReady() }()
	go func() { defer d.wg.Done(); d.watchComponents() }()
	d.kickLoop()
	return nil
}

// coordinatorList is the session client's coordinator list: this node's own
// coordinator first (local and certain), then join.coordinators.
func (d *Daemon) coordinatorList(join []string) []string {
	var out []string
	if d.coord != nil {
		if a, ok := d.coord.Addr().(interface{ AddrPort() netip.AddrPort }); ok {
			ap := a.AddrPort()
			ip := ap.Addr().Unmap()
			if ip.IsUnspecified() {
				ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
				if ap.Addr().Is6() && !ap.Addr().Is4In6() {
					ip = netip.IPv6Loopback()
				}
			}
			out = append(out, netip.AddrPortFrom(ip, ap.Port()).String())
		}
	}
	for _, j := range join {
		dup := false
		for _, o := range out {
			dup = dup || o == j
		}
		if !dup {
			out = append(out, j)
		}
	}
	return out
}

// newClient builds a coordinator session client for coords.
func (d *Daemon) newClient(coords []string) (*discovery.Client, error) {
	cfg := d.startCfg
	o := discovery.ClientOptions{
		Credentials:  d.cred(),
		Verifier:     d.verifier,
		Coordinators: coords,
		// Pinned coordinator names (join.coordinator_names; restart to change).
		CoordinatorNames: cfg.Join.CoordinatorNames,
		Info: discovery.LocalInfo{
			Routes:   masked(cfg.Routes.Advertise),
			Software: "meshd " + d.version,
			Relay:    d.relayInfo(),
		},
		StateDir: cfg.Node.StateDir,
		OnSignal: d.onSignal,
		Logger:   d.log.With("component", "discovery"),
	}
	if tu := d.opts.Tuning; tu != nil {
		o.DialTimeout = tu.ClientDialTimeout
		o.BackoffMin, o.BackoffMax = tu.ClientBackoffMin, tu.ClientBackoffMax
		o.CacheDelay = tu.ClientCacheDelay
		o.CRLCheckInterval = tu.ClientCRLCheckInterval
	}
	return discovery.NewClient(o)
}

// startClient subscribes to c's registry changes, starts it and makes it
// the current client. Control loop (or Start, before the loop runs) only.
func (d *Daemon) startClient(c *discovery.Client) error {
	unsub := c.Subscribe(d.onRegistryChange)
	if err := c.Start(d.ctx); err != nil {
		unsub()
		_ = c.Close()
		return err
	}
	d.loop.unsubClient = unsub
	d.client.Store(c)
	return nil
}

// onSignal hands a signal from the coordinator session to the tunnel.
// With lazy links a peer that wants to talk to an idle one is the same as a
// packet asking for it: the link is made and the peer's retry gets through.
func (d *Daemon) onSignal(from string, payload []byte) {
	err := d.tm.HandleSignal(from, payload)
	if err == nil {
		return
	}
	if d.lazy && errors.Is(err, tunnel.ErrUnknownPeer) {
		if p := d.view.Load().byName[from]; p != nil && p.Idle {
			d.wantLink(from)
		}
	}
	if d.log.Enabled(context.Background(), slog.LevelDebug) {
		d.log.Debug("signal not delivered to a link", "peer", from, "error", err)
	}
}

// onRegistryChange runs on the client's notifier goroutine.
func (d *Daemon) onRegistryChange(ch discovery.Change) {
	switch ch.Kind {
	case discovery.CRLUpdated:
		d.log.Info("CRL updated", "number", ch.CRL.Number().String())
		if d.verifier.IsRevoked(d.cred().Cert.Cert.SerialNumber) {
			d.log.Error("this node's certificate is on the CRL: peers and coordinators refuse it; get a new certificate")
			d.events.publish(control.Event{Kind: control.EventCertWarning, Message: "this node's certificate is revoked"})
		}
	case discovery.PeerRemoved:
		d.log.Info("peer left the registry", "peer", ch.Peer.Name, "reason", ch.Reason)
	case discovery.TURNUpdated:
		// Read at the next ICE attempt; nothing to recompute. The STUN
		// servers may be new: the netcheck re-runs if so. Links relayed
		// through a server no longer offered, or waiting to retry, go now.
		d.serversChanged()
		if d.tm != nil {
			d.tm.RelaysChanged()
		}
		return
	}
	d.kickLoop()
}

// signaler is tunnel's Signaler: it sends through whichever session client
// is current (Reload may replace it).
type signaler struct{ d *Daemon }

func (s signaler) SendSignal(ctx context.Context, to string, payload []byte) error {
	c := s.d.client.Load()
	if c == nil {
		return fmt.Errorf("daemon: signal to %q: %w", to, discovery.ErrNotConnected)
	}
	return c.SendSignal(ctx, to, payload)
}

// wantLink is the overlay's OnLinkNeeded (lazy links): a packet is waiting
// for peer. It must not block: it records the wish and kicks the loop.
func (d *Daemon) wantLink(peer string) {
	d.lazyMu.Lock()
	d.lazyWanted[peer] = true
	d.lazyMu.Unlock()
	d.kickLoop()
}

func (d *Daemon) lazySnapshot() map[string]bool {
	d.lazyMu.Lock()
	defer d.lazyMu.Unlock()
	return maps.Clone(d.lazyWanted)
}

// kickLoop asks the control loop to recompute; it never blocks and
// coalesces with a pending kick.
func (d *Daemon) kickLoop() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// do runs fn on the control loop and waits for it.
func (d *Daemon) do(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case d.cmds <- func() { fn(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.ctx.Done():
		return ErrClosed
	}
	select {
	case <-done:
		return nil
	case <-d.ctx.Done():
		return ErrClosed
	}
}

// watchComponents turns a component that stopped on its own into a fatal
// error of the daemon.
func (d *Daemon) watchComponents() {
	var coordDone <-chan struct{}
	if d.coord != nil {
		coordDone = d.coord.Wait()
	}
	select {
	case <-d.ctx.Done():
	case <-d.ov.Done():
		if err := d.ov.Wait(); err != nil {
			d.fatal(fmt.Errorf("overlay: %w", err))
		}
	case <-coordDone:
		if err := d.coord.Err(); err != nil {
			d.fatal(fmt.Errorf("coordinator: %w", err))
		}
	case <-d.ctl.Done():
		if err := d.ctl.Wait(); err != nil {
			d.fatal(fmt.Errorf("control socket: %w", err))
		}
	}
}

// fatal records the first fatal error and makes the watcher close the
// daemon.
func (d *Daemon) fatal(err error) {
	if d.fatalErr.CompareAndSwap(nil, &err) {
		d.log.Error("meshd failed, shutting down", "error", err)
		d.fatalOnce.Do(func() { close(d.fatalCh) })
	}
}

// Close stops the node: the control socket first (no new requests), then
// the control loop, the links (each says goodbye with a DTLS close_notify),
// the coordinator session (the record stays, offline: this is a stop, not a
// leave) and the coordinator, the overlay (its addresses and routes go with
// the device), and the metrics endpoint. It is idempotent and safe to call
// before Start.
func (d *Daemon) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.cancel()
		// A Start in progress sees the cancel and stops early.
		d.startMu.Lock()
		d.startMu.Unlock() //nolint:staticcheck // only waiting for Start
		if d.ctl != nil {
			_ = d.ctl.Close()
		}
		d.wg.Wait()
		if d.loop.unsubLinks != nil {
			d.loop.unsubLinks()
		}
		_ = d.tm.Close()
		if c := d.client.Load(); c != nil {
			if d.loop.unsubClient != nil {
				d.loop.unsubClient()
			}
			_ = c.Close()
		}
		d.closeRelay()
		if d.coord != nil {
			_ = d.coord.Close()
		}
		if d.stunAlt != nil {
			_ = d.stunAlt.Close()
		}
		d.closeNames()
		_ = d.ov.Close()
		if d.metrics != nil {
			d.metrics.close()
		}
		d.events.close()
		d.mu.Lock()
		started := d.started
		d.mu.Unlock()
		if started {
			d.log.Info("meshd stopped", "node", d.name)
		}
		close(d.done)
	})
	<-d.done
	return nil
}

// Wait returns a channel closed when the daemon has stopped (after Close, or
// after a fatal error once it has closed itself).
func (d *Daemon) Wait() <-chan struct{} { return d.done }

// Err returns the first fatal error, or nil (also after a plain Close).
func (d *Daemon) Err() error {
	if e := d.fatalErr.Load(); e != nil {
		return *e
	}
	return nil
}

// Ready returns a channel closed once the node is usable: its overlay
// address is assigned and bindable, and a coordinator session is up or the
// cached registry was loaded. cmd/meshd sends READY=1 then.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Healthy reports whether the control loop answers within ctx: cmd/meshd
// sends the systemd watchdog ping only then, so a hung daemon is restarted.
func (d *Daemon) Healthy(ctx context.Context) error {
	if !d.isStarted() {
		return ErrNotStarted
	}
	return d.do(ctx, func() {})
}

// cred returns this node's current certificate and key.
func (d *Daemon) cred() *pki.Credentials { return d.creds.Load() }
