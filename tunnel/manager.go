package tunnel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
)

// housekeepingInterval paces the shared socket's coarse clock, the expiry
// of known source addresses and the periodic certificate recheck.
const housekeepingInterval = 10 * time.Second

// Manager owns a node's links: the UDP port they share (one socket per
// address family, read in batches; ICE through pion's UDP mux, data records
// straight to the links), the route table from remote addresses to links,
// the node's credentials and verifier, the STUN/TURN servers, the signaling
// hooks and the event notifier. One per node.
//
// Lifecycle: NewManager validates; Start opens the sockets and starts their
// readers and the links; Close tears every link down (DTLS close_notify,
// ICE agents, TURN allocations), closes the sockets and waits for every
// goroutine.
//
// Lock order: Manager.mu, then Link.mu.
type Manager struct {
	// Immutable after NewManager.
	opts        Options
	timers      Timers
	log         *slog.Logger
	pionLogs    pionLogs
	errLinkDown *linkDownError
	notifier    *notifier
	counters    counters

	// Set by Start, immutable until Close.
	socks        *socketSet
	known        *knownSources
	muxc         *muxConn
	mux          *sharedMux
	networkTypes []ice.NetworkType
	remoteFilter func(netip.Addr) bool
	ifaces       *ifaceJudge // nil unless the host's own stack on an unspecified bind
	relayBind    netip.Addr  // address for TURN client sockets; invalid: pion's choice
	relays       *relayGuard
	gates        idleGates // the sessions' idle gates, by local ufrag (idle.go)
	stopHK       chan struct{}
	stopNotify   chan struct{}
	wg           sync.WaitGroup
	done         chan struct{}
	closing      atomic.Bool

	// routes maps remote addresses to links for the socket readers.
	routes routes

	// cred is this node's certificate and key as handshakes present them;
	// SetCredentials swaps it (a renewed certificate).
	cred atomic.Pointer[localCred]

	mu      sync.Mutex // guards the following
	links   map[string]*Link
	started bool
	closed  bool
	onceLog map[string]bool
}

// NewManager validates opts and prepares a manager. It opens nothing and
// starts no goroutine; Start does.
func NewManager(opts Options) (*Manager, error) {
	opts.Timers = opts.Timers.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "tunnel")
	opts.ExcludePrefixes = append([]netip.Prefix(nil), opts.ExcludePrefixes...)
	m := &Manager{
		opts:        opts,
		timers:      opts.Timers,
		log:         log,
		pionLogs:    pionLogs{log: log},
		errLinkDown: &linkDownError{alias: opts.LinkDownError},
		notifier:    newNotifier(),
		links:       make(map[string]*Link),
		done:        make(chan struct{}),
		onceLog:     make(map[string]bool),
	}
	m.cred.Store(&localCred{self: opts.Credentials.Cert, tls: opts.Credentials.TLSCertificate(), gen: 1})
	return m, nil
}

// Interfaces classifies the host's interfaces with the manager's candidate
// policy, as it applies when the socket listens on an unspecified address
// (see ifaces.go).
func (m *Manager) Interfaces() ([]InterfaceVerdict, error) {
	links := m.opts.Links
	if links == nil {
		links = SystemLinks
	}
	ls, err := links()
	if err != nil {
		return nil, err
	}
	return m.opts.Interfaces.Classify(ls), nil
}

// MappedAddr asks the STUN server at server what it sees of the shared
// ICE socket: the public endpoint peers reach this node's links at (a
// throw-away socket's mapping says nothing about this port behind a NAT).
// It waits for at most timeout; pion caches an answer for a while.
func (m *Manager) MappedAddr(ctx context.Context, server netip.AddrPort, timeout time.Duration) (netip.AddrPort, error) {
	m.mu.Lock()
	mux := m.mux
	m.mu.Unlock()
	if mux == nil {
		return netip.AddrPort{}, ErrClosed
	}
	// The pion mux itself: the sharedMux wrapper hides a mapping equal to a
	// host address (no NAT), which is exactly what netcheck wants to see.
	xor, err := mux.UniversalUDPMuxDefault.GetXORMappedAddrContext(ctx, net.UDPAddrFromAddrPort(server), timeout)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ip, ok := netip.AddrFromSlice(xor.IP)
	if !ok || xor.Port <= 0 || xor.Port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("tunnel: bad mapped address from %v", server)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(xor.Port)), nil
}

// Start opens the shared UDP socket, builds the ICE mux on it and starts
// every link created so far. ctx bounds nothing after Start returns; use
// Close to stop.
func (m *Manager) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return ErrClosed
	case m.started:
		return fmt.Errorf("tunnel: manager already started")
	}
	socks, err := openSockets(&m.opts)
	if err != nil {
		return err
	}
	if socks.noV6 != nil {
		m.log.Info("this host has no IPv6; links use IPv4 only", "error", socks.noV6)
	}
	local := socks.local
	localIP, _ := netip.AddrFromSlice(local.IP)
	localIP = localIP.Unmap()
	unspecified := !localIP.IsValid() || localIP.IsUnspecified()
	switch {
	case localIP.Is6() && unspecified:
		m.networkTypes = []ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeUDP6}
	case localIP.Is6():
		m.networkTypes = []ice.NetworkType{ice.NetworkTypeUDP6}
	default:
		m.networkTypes = []ice.NetworkType{ice.NetworkTypeUDP4}
	}
	m.remoteFilter = addrFilter(unspecified, m.opts.ExcludePrefixes)
	if !unspecified {
		m.relayBind = localIP
	}
	m.relays = newRelayGuard(&m.counters.relayForeign, &m.gates)
	m.socks = socks
	m.known = newKnownSources()
	m.muxc = newMuxConn(socks, m.known, &m.counters, &m.gates)
	m.mux = &sharedMux{
		UniversalUDPMuxDefault: ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{
			Logger:  m.pionLogs.NewLogger("udpmux"),
			UDPConn: m.muxc,
			Net:     m.opts.Net,
		}),
		keep: addrFilter(unspecified, m.opts.ExcludePrefixes),
	}
	if unspecified && m.opts.Net == nil {
		m.ifaces = newIfaceJudge(m.opts, m.log)
		m.mux.keepAll = m.ifaces.localAddrs
		base := m.remoteFilter
		m.remoteFilter = func(a netip.Addr) bool { return base(a) && m.ifaces.remoteOK(a) }
	}
	for _, s := range socks.socks {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.readLoop(s)
		}()
	}
	m.stopHK = make(chan struct{})
	m.stopNotify = make(chan struct{})
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		m.notifier.run(m.stopNotify)
	}()
	go func() {
		defer m.wg.Done()
		m.housekeeping()
	}()
	m.started = true
	for _, l := range m.links {
		l.start()
	}
	m.log.Info("tunnel manager started", append([]any{"listen", local.String(), "fingerprint", m.self().Fingerprint}, socks.describe()...)...)
	return nil
}

func (m *Manager) housekeeping() {
	t := time.NewTicker(housekeepingInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stopHK:
			return
		case now := <-t.C:
			m.known.tick(now)
			m.Recheck()
		}
	}
}

// Close closes every link (in parallel), the mux and the socket, and waits
// for all goroutines. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.done
		return nil
	}
	m.closed = true
	started := m.started
	links := make([]*Link, 0, len(m.links))
	for _, l := range m.links {
		links = append(links, l)
	}
	m.links = map[string]*Link{}
	m.mu.Unlock()

	for _, l := range links {
		l.stop()
	}
	for _, l := range links {
		l.close(started)
	}
	m.closing.Store(true)
	if started {
		close(m.stopHK)
		_ = m.mux.Close() // closes muxConn: the mux's reader returns
		m.socks.close()   // the socket readers return
		close(m.stopNotify)
		m.wg.Wait()
	} else if m.opts.PacketConn != nil {
		_ = m.opts.PacketConn.Close() // ours even if never started
	}
	close(m.done)
	return nil
}

// Done is closed when Close has finished.
func (m *Manager) Done() <-chan struct{} { return m.done }

// LocalAddr returns the shared socket's address, or nil before Start.
func (m *Manager) LocalAddr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.socks == nil {
		return nil
	}
	return m.socks.local
}

// Families reports which address families the shared port is open on
// (false, false before Start), and, when a dual-stack bind found no IPv6 on
// the host, why.
func (m *Manager) Families() (v4, v6 bool, noV6 error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.socks == nil {
		return false, false, nil
	}
	for _, t := range m.networkTypes {
		v4 = v4 || t.IsIPv4()
		v6 = v6 || t.IsIPv6()
	}
	return v4, v6, m.socks.noV6
}

// Link returns the link to peer p, creating (and, once the manager is
// started, starting) it if there is none. If p differs from what the
// existing link verifies against (a new address or subnets in the registry),
// the link adopts p and starts a new session; a new certificate alone (the
// peer renewed it) keeps a connected session (renew.go).
func (m *Manager) Link(p Peer) (*Link, error) {
	if err := p.validate(m.self()); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if l, ok := m.links[p.Name]; ok {
		m.mu.Unlock()
		if !l.Peer().equal(p) {
			l.updatePeer(p)
		}
		return l, nil
	}
	l := newLink(m, p)
	m.links[p.Name] = l
	if m.started {
		l.start()
	}
	m.mu.Unlock()
	return l, nil
}

// Remove closes the link to the named peer and waits until its sockets,
// goroutines and TURN allocations are released. Unknown names are ignored.
func (m *Manager) Remove(name string) {
	m.mu.Lock()
	l, ok := m.links[name]
	if ok {
		delete(m.links, name)
	}
	started := m.started
	m.mu.Unlock()
	if ok {
		l.close(started)
	}
}

// Links returns the current links, sorted by peer name.
func (m *Manager) Links() []*Link {
	m.mu.Lock()
	out := make([]*Link, 0, len(m.links))
	for _, l := range m.links {
		out = append(out, l)
	}
	m.mu.Unlock()
	sortLinks(out)
	return out
}

// HandleSignal applies a signal that discovery delivered from the named
// peer. It never blocks on the link: a full inbox drops the signal (counted;
// the peer resends). Errors say why a signal was not accepted (malformed,
// unknown peer, closed); the daemon may log them at debug level.
func (m *Manager) HandleSignal(from string, payload []byte) error {
	sig, err := parseSignal(payload)
	if err != nil {
		m.counters.signalsInvalid.Add(1)
		return fmt.Errorf("signal from %q: %w", from, err)
	}
	m.mu.Lock()
	l, ok := m.links[from]
	closed, started := m.closed, m.started
	m.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case !started:
		return ErrNotStarted
	case !ok:
		m.counters.signalsUnknown.Add(1)
		return fmt.Errorf("signal from %q: %w", from, ErrUnknownPeer)
	}
	if !l.deliverSignal(sig) {
		m.counters.signalsDropped.Add(1)
	}
	return nil
}

// Recheck re-verifies the certificate of every connected peer against the
// Verifier now and ends the sessions whose peer no longer passes (revoked by
// a newer CRL, expired). The daemon calls it after Verifier.UpdateCRL; the
// manager also runs it every housekeeping interval (10 s) to catch expiry.
func (m *Manager) Recheck() {
	for _, l := range m.Links() {
		l.requestRecheck()
	}
}

// Subscribe calls fn with every link event, in order, on the manager's
// notifier goroutine (never from a link's own goroutine, so fn may call
// back into the manager). fn should return quickly. The returned function
// unsubscribes.
func (m *Manager) Subscribe(fn func(Event)) (unsubscribe func()) {
	return m.notifier.subscribe(fn)
}

// Stats returns the manager's counters.
func (m *Manager) Stats() Stats {
	return Stats{
		DroppedGarbage:       m.counters.garbage.Load(),
		DroppedMalformed:     m.counters.malformed.Load(),
		DroppedUnknownSource: m.counters.unknownSource.Load(),
		ReplayedRecords:      m.counters.replayed.Load(),
		DroppedTampered:      m.counters.tampered.Load(),
		DroppedOldEpoch:      m.counters.oldEpoch.Load(),
		DroppedUnknownEpoch:  m.counters.unknownEpoch.Load(),
		DroppedTruncated:     m.counters.truncated.Load(),
		DroppedControl:       m.counters.ctrlDropped.Load(),
		DroppedRelayForeign:  m.counters.relayForeign.Load(),
		SocketOverflows:      m.socketOverflows(),
		ReadErrors:           m.counters.readErrors.Load(),
		SignalsInvalid:       m.counters.signalsInvalid.Load(),
		SignalsUnknownPeer:   m.counters.signalsUnknown.Load(),
		SignalsDropped:       m.counters.signalsDropped.Load(),
		CandidatesDropped:    m.counters.candidatesDropped.Load(),
		EventsDropped:        m.notifier.dropped.Load(),
	}
}

// socketOverflows reads the kernel's drop counters of the sockets.
func (m *Manager) socketOverflows() uint64 {
	m.mu.Lock()
	socks := m.socks
	m.mu.Unlock()
	if socks == nil {
		return 0
	}
	return socks.overflows()
}

// isClosing reports whether Close has begun (socket errors are expected).
func (m *Manager) isClosing() bool { return m.closing.Load() }

// logOnce logs a configuration-level warning the first time key is seen.
func (m *Manager) logOnce(key, msg string, args ...any) {
	m.mu.Lock()
	seen := m.onceLog[key]
	if !seen && len(m.onceLog) < 1024 {
		m.onceLog[key] = true
	}
	m.mu.Unlock()
	if !seen {
		m.log.Warn(msg, args...)
	}
}
