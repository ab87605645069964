package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// janitorInterval is how often expired flows are swept from the conntrack
// table. Lookups ignore expired flows anyway; sweeping only frees memory.
const janitorInterval = 10 * time.Second

// maxConsecutiveReadErrors is how many TUN reads in a row may fail before the
// reader gives up and reports a fatal error.
const maxConsecutiveReadErrors = 100

// Interface is the overlay network interface of this node: the TUN device
// and the packet loops between it and the peers' links.
type Interface struct {
	// ================================================================
	// Immutable after New.
	log    *slog.Logger
	opts   Options
	dev    tun.Device
	kind   devKind
	name   string
	batch  int
	net    *netstack.Net // ModeUserspace only
	ct     *conntrack
	now    func() int64 // data-path clock, nanoseconds; tests replace it before Start
	notify chan string  // peer names for Options.OnLinkNeeded; nil without it

	// ================================================================
	// Read by the data path without locks.
	state atomic.Pointer[state] // swapped whole by Reconfig
	mtu   atomic.Int64          // updated on device MTU events
	stats counters

	// in is owned by the TUN reader goroutine (there is exactly one).
	in insideState

	// ================================================================
	// writeMu serializes TUN writes, one batch at a time (links receive on
	// their own goroutines concurrently), and guards devClosed.
	writeMu   sync.Mutex
	devClosed bool

	// ================================================================
	// cfgMu guards the following; held by Reconfig, SetFirewall, Start and
	// Close (the control path only).
	cfgMu   sync.Mutex
	links   map[PeerConn]*linkRx // adopted links, by identity
	sys     *system              // nil unless the Interface created a kernel TUN
	gen     uint64               // firewall generation of the newest state
	started bool
	closed  bool

	// ================================================================
	// Lifecycle.
	wg        sync.WaitGroup
	cancel    context.CancelFunc
	closing   chan struct{} // closed when Close begins
	done      chan struct{} // closed when Close has finished
	closeOnce sync.Once
	closeErr  error
	fatalErr  atomic.Pointer[error]
	fatalCh   chan struct{}
	fatalOnce sync.Once
}

// state is one immutable snapshot of the configuration as the data path
// needs it. Reconfig builds a new one and swaps the pointer; readers load it
// once per batch.
type state struct {
	cfg    Config
	routes routeTable
	peers  map[string]*peerState
	fw     *compiledFirewall
	local  []netip.Addr   // our overlay addresses
	fwd    []netip.Prefix // LocalSubnets accepted from peers (Forwarding on)
}

// isLocal reports whether a packet from a peer to a may be written to the
// TUN.
func (st *state) isLocal(a netip.Addr) bool {
	for _, l := range st.local {
		if l == a {
			return true
		}
	}
	return prefixesContain(st.fwd, a)
}

// peerState is one peer in one snapshot.
type peerState struct {
	name    string
	id      uint64         // peerID(name): what its tracked flows remember
	conn    PeerConn       // nil: no link yet
	link    *linkRx        // the receiver adopted for conn; nil when conn is nil
	allowed []netip.Prefix // anti-spoofing: accepted sources
	fwIn    []uint64       // inbound rules the peer's identity satisfies
	fwOut   []uint64       // outbound rules the peer's identity satisfies
	wanted  *atomic.Bool   // OnLinkNeeded already queued (shared while conn stays nil)
}

// New creates the device (or adopts Options.Device) and allocates the
// buffers, but starts nothing: see Start. The Interface begins with no
// addresses and no peers; apply a Config with Reconfig.
func New(opts Options) (*Interface, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MTU != 0 && (opts.MTU < MinMTU || opts.MTU > maxPacket) {
		return nil, configErr("Options.MTU", "%d is outside %d-%d", opts.MTU, MinMTU, maxPacket)
	}
	if opts.MaxFlows < 0 {
		return nil, configErr("Options.MaxFlows", "negative")
	}
	i := &Interface{
		log:     log,
		opts:    opts,
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		fatalCh: make(chan struct{}),
		links:   map[PeerConn]*linkRx{},
	}
	mtu := opts.MTU
	switch {
	case opts.Device != nil:
		i.dev, i.kind = opts.Device, devExternal
		if mtu == 0 {
			m, err := opts.Device.MTU()
			if err != nil {
				return nil, fmt.Errorf("overlay: read MTU of the given device: %w", err)
			}
			mtu = m
		}
	case opts.Mode == ModeUserspace:
		if len(opts.UserspaceAddresses) == 0 {
			return nil, configErr("Options.UserspaceAddresses", "userspace mode needs the netstack's addresses")
		}
		for k, a := range opts.UserspaceAddresses {
			if !a.IsValid() || a.Zone() != "" {
				return nil, configErr(fmt.Sprintf("Options.UserspaceAddresses[%d]", k), "invalid address %v", a)
			}
		}
		if mtu == 0 {
			mtu = DefaultMTU
		}
		dev, n, err := netstack.CreateNetTUN(opts.UserspaceAddresses, nil, mtu)
		if err != nil {
			return nil, fmt.Errorf("overlay: create userspace netstack: %w", err)
		}
		i.dev, i.net, i.kind = dev, n, devUserspace
	case opts.Mode == ModeKernel:
		name := opts.Name
		if name == "" {
			name = DefaultName
		}
		if mtu == 0 {
			mtu = DefaultMTU
		}
		dev, err := tun.CreateTUN(name, mtu)
		if err != nil {
			return nil, fmt.Errorf("overlay: create TUN device %q: %w", name, err)
		}
		i.dev, i.kind = dev, devManaged
	default:
		return nil, configErr("Options.Mode", "unknown mode %v", opts.Mode)
	}
	name, err := i.dev.Name()
	if err != nil {
		i.dev.Close()
		return nil, fmt.Errorf("overlay: read device name: %w", err)
	}
	i.name = name
	if i.kind == devManaged {
		if i.sys, err = newSystem(log, name); err != nil {
			i.dev.Close()
			return nil, err
		}
	}
	i.mtu.Store(int64(mtu))
	i.batch = max(1, i.dev.BatchSize())
	maxFlows := opts.MaxFlows
	if maxFlows == 0 {
		maxFlows = DefaultMaxFlows
	}
	i.ct = newConntrack(maxFlows)
	epoch := time.Now()
	i.now = func() int64 { return int64(time.Since(epoch)) }
	if opts.OnLinkNeeded != nil {
		i.notify = make(chan string, 64)
	}
	i.in.init(i.batch)
	i.state.Store(i.buildState(Config{}, 0, nil, nil))
	log.Info("overlay device ready", "device", name, "mode", i.modeName(), "mtu", mtu, "batch", i.batch)
	return i, nil
}

func (i *Interface) modeName() string {
	switch i.kind {
	case devManaged:
		return ModeKernel.String()
	case devUserspace:
		return ModeUserspace.String()
	}
	return "external"
}

// Start launches the TUN reader and the housekeeping goroutines. When ctx is
// canceled the Interface closes itself as Close does.
func (i *Interface) Start(ctx context.Context) error {
	i.cfgMu.Lock()
	defer i.cfgMu.Unlock()
	if i.closed {
		return ErrClosed
	}
	if i.started {
		return ErrAlreadyStarted
	}
	i.started = true
	ctx, i.cancel = context.WithCancel(ctx)

	i.wg.Add(3)
	go i.readLoop()
	go i.eventLoop()
	go i.janitor()
	if i.notify != nil {
		i.wg.Add(1)
		go i.notifier()
	}
	// The watcher is outside wg: it may itself run Close, which waits for wg.
	go func() {
		select {
		case <-ctx.Done():
			i.Close()
		case <-i.fatalCh:
			i.Close()
		case <-i.closing:
		}
	}()
	return nil
}

// Close detaches every link, removes the addresses, routes and sysctls it
// added, closes the device and waits for its goroutines. It is idempotent
// and safe to call concurrently; every call returns the same result.
func (i *Interface) Close() error {
	i.closeOnce.Do(func() {
		close(i.closing)
		i.cfgMu.Lock()
		i.closed = true
		for conn := range i.links {
			conn.SetReceiver(nil)
		}
		i.links = nil
		i.writeMu.Lock()
		i.devClosed = true
		i.writeMu.Unlock()
		if i.sys != nil {
			i.sys.close()
		}
		i.cfgMu.Unlock()
		// Closing the device unblocks the reader.
		i.closeErr = i.dev.Close()
		i.wg.Wait()
		if i.cancel != nil {
			i.cancel()
		}
		i.log.Info("overlay device closed", "device", i.name)
		close(i.done)
	})
	<-i.done
	return i.closeErr
}

// Done is closed when the Interface has stopped: after Close, or after a
// fatal error once it has closed itself.
func (i *Interface) Done() <-chan struct{} { return i.done }

// Wait blocks until the Interface has stopped and returns the fatal error
// that stopped it, or nil after a plain Close.
func (i *Interface) Wait() error {
	<-i.done
	if e := i.fatalErr.Load(); e != nil {
		return *e
	}
	return nil
}

// fatal records the first fatal error and makes the watcher close the
// Interface.
func (i *Interface) fatal(err error) {
	if i.fatalErr.CompareAndSwap(nil, &err) {
		i.log.Error("overlay failed, closing", "device", i.name, "error", err)
		i.fatalOnce.Do(func() { close(i.fatalCh) })
	}
}

// Name returns the device name ("go" for the userspace netstack).
func (i *Interface) Name() string { return i.name }

// MTU returns the device MTU the data path enforces.
func (i *Interface) MTU() int { return int(i.mtu.Load()) }

// Net returns the userspace netstack, whose sockets use the overlay
// (ModeUserspace only; nil otherwise).
func (i *Interface) Net() *netstack.Net { return i.net }

// RouteTo returns the peer the routing table sends dst to.
func (i *Interface) RouteTo(dst netip.Addr) (peer string, ok bool) {
	p, _ := i.state.Load().routes.lookup(dst)
	if p == nil {
		return "", false
	}
	return p.name, true
}

// Stats returns a snapshot of the counters.
func (i *Interface) Stats() Stats {
	s := i.stats.snapshot()
	s.Flows = i.ct.len()
	s.FlowsEvicted = i.ct.evicted.Load()
	s.FlowsUntracked = i.ct.untracked.Load()
	return s
}

// Config returns a copy of the running configuration.
func (i *Interface) Config() Config { return i.state.Load().cfg.clone() }

// Reconfig applies cfg as the complete desired state: addresses and routes
// (kernel mode), peers and their links, forwarding and the firewall. It
// returns ErrNoChanges when cfg equals the running configuration, and a
// *ConfigError (errors.Is ErrInvalidConfig) or a system error when it cannot
// be applied, in which case nothing changed.
//
// The data path switches to the new snapshot atomically: every batch sees
// either the old or the new configuration. Tracked flows survive and are
// checked against the new rules on their next packet.
func (i *Interface) Reconfig(cfg Config) error {
	i.cfgMu.Lock()
	defer i.cfgMu.Unlock()
	return i.reconfigLocked(cfg)
}

func (i *Interface) reconfigLocked(cfg Config) error {
	if i.closed {
		return ErrClosed
	}
	if err := cfg.validate(i.kind, i.opts.UserspaceAddresses); err != nil {
		return err
	}
	cur := i.state.Load()
	if cur.cfg.equal(&cfg) {
		return ErrNoChanges
	}
	cfg = cfg.clone()
	var want sysWant
	if i.sys != nil {
		want = wantFor(&cfg)
		if err := i.sys.add(want); err != nil {
			return err
		}
	}

	// Links are tracked by identity: a link keeps its receiver (and its
	// scratch space) across Reconfigs as long as it serves the same peer.
	links := make(map[PeerConn]*linkRx, len(cfg.Peers))
	for k := range cfg.Peers {
		p := &cfg.Peers[k]
		if p.Conn == nil {
			continue
		}
		rx := i.links[p.Conn]
		if rx == nil || rx.name != p.Name {
			rx = &linkRx{i: i, name: p.Name, conn: p.Conn, txOut: make([][]byte, 0, i.batch)}
			rx.fn = rx.receive
		}
		links[p.Conn] = rx
	}
	i.gen++
	st := i.buildState(cfg, i.gen, links, cur)
	i.state.Store(st)

	for conn, rx := range links {
		if i.links[conn] != rx {
			conn.SetReceiver(rx.fn)
		}
	}
	for conn := range i.links {
		if _, ok := links[conn]; !ok {
			conn.SetReceiver(nil)
		}
	}
	i.links = links
	if i.sys != nil {
		i.sys.prune(want)
	}
	i.log.Info("overlay reconfigured", "device", i.name, "peers", len(cfg.Peers), "addresses", cfg.Addresses,
		"inboundRules", len(cfg.Firewall.Inbound), "outboundRules", len(cfg.Firewall.Outbound))
	return nil
}

// SetFirewall replaces the firewall rule set and keeps the rest of the
// running configuration: Reconfig with only Firewall changed (ErrNoChanges
// when it is the same).
func (i *Interface) SetFirewall(fw FirewallConfig) error {
	i.cfgMu.Lock()
	defer i.cfgMu.Unlock()
	cfg := i.state.Load().cfg.clone()
	cfg.Firewall = fw
	return i.reconfigLocked(cfg)
}

// buildState compiles cfg into a data-path snapshot. prev (may be nil) lends
// the OnLinkNeeded flags of peers that still have no link.
func (i *Interface) buildState(cfg Config, gen uint64, links map[PeerConn]*linkRx, prev *state) *state {
	st := &state{
		cfg:   cfg,
		peers: make(map[string]*peerState, len(cfg.Peers)),
		fw:    compileFirewall(cfg.Firewall, gen),
	}
	for _, a := range cfg.Addresses {
		st.local = append(st.local, a.Addr())
	}
	if cfg.Forwarding {
		st.fwd = masked(cfg.LocalSubnets)
	}
	for k := range cfg.Peers {
		pc := &cfg.Peers[k]
		ps := &peerState{
			name:    pc.Name,
			id:      peerID(pc.Name),
			conn:    pc.Conn,
			allowed: slices.Clone(pc.AllowedPrefixes),
			fwIn:    identityBits(cfg.Firewall.Inbound, pc.Name, pc.Groups),
			fwOut:   identityBits(cfg.Firewall.Outbound, pc.Name, pc.Groups),
		}
		if pc.Conn != nil {
			ps.link = links[pc.Conn]
		} else if old := prev.peer(pc.Name); old != nil && old.conn == nil {
			ps.wanted = old.wanted
		} else {
			ps.wanted = new(atomic.Bool)
		}
		for _, r := range pc.routes() {
			st.routes.insert(r, ps)
		}
		st.peers[pc.Name] = ps
	}
	return st
}

func (st *state) peer(name string) *peerState {
	if st == nil {
		return nil
	}
	return st.peers[name]
}

// wantLink asks the notifier to report that peer needs a link. Called by the
// TUN reader when a packet finds the peer without one: once per peer, not
// per packet.
func (i *Interface) wantLink(p *peerState) {
	if i.notify == nil || p.wanted == nil || !p.wanted.CompareAndSwap(false, true) {
		return
	}
	select {
	case i.notify <- p.name:
	default:
		p.wanted.Store(false) // queue full: the next packet tries again
	}
}

func (i *Interface) notifier() {
	defer i.wg.Done()
	for {
		select {
		case <-i.closing:
			return
		case name := <-i.notify:
			i.opts.OnLinkNeeded(name)
		}
	}
}

// eventLoop drains the device's events. A kernel TUN blocks its netlink
// listener until its events are read, so someone must read them.
func (i *Interface) eventLoop() {
	defer i.wg.Done()
	ev := i.dev.Events()
	if ev == nil {
		return
	}
	for e := range ev {
		if e&tun.EventMTUUpdate != 0 {
			if m, err := i.dev.MTU(); err == nil && m > 0 && int64(m) != i.mtu.Load() {
				i.mtu.Store(int64(m))
				i.log.Info("device MTU changed", "device", i.name, "mtu", m)
			}
		}
		if e&tun.EventDown != 0 {
			i.log.Warn("device is down", "device", i.name)
		}
	}
}

func (i *Interface) janitor() {
	defer i.wg.Done()
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		select {
		case <-i.closing:
			return
		case <-t.C:
			i.ct.sweep(i.now())
		}
	}
}

// isClosedErr reports whether a device error only says that it was closed.
func (i *Interface) isClosedErr(err error) bool {
	select {
	case <-i.closing:
		return true
	default:
	}
	return errors.Is(err, ErrClosed) || isOSClosed(err)
}
