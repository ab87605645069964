package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
	"github.com/pion/transport/v5/stdnet"

	"github.com/meshd/meshd/pki"
)

// session is one ICE generation of a link: the agent, the ICE connection
// once checks start, the DTLS control connection over it and the data keys
// derived from it. The run goroutine owns it; pion callbacks and the
// session's goroutines (ICE reader, handshakes, control readers) only post
// events and stop when ctx is canceled.
type session struct {
	gen         uint64
	ctx         context.Context
	cancel      context.CancelFunc
	agent       *ice.Agent
	servers     []ICEServer // as used for this session (for naming the relay)
	controlling bool        // this side is ICE-controlling and DTLS client
	gate        *idleGate   // withholds checks while the link is idle (idle.go)

	// Owned by the run goroutine.
	lastPunch            time.Time // punch.go
	localUfrag, localPwd string
	iceConn              *ice.Conn // set when checks start (answer received / offer accepted)
	pending              []string  // remote candidates received before checks started
	localCands           []string  // our gathered candidates, marshaled, for resends
	localDone            bool      // our gathering finished
	remoteDone           bool      // the peer sent end-of-candidates
	iceState             ice.ConnectionState
	handshaking          bool
	ctrlT                *dtlsTransport // transport of the control conn (or of the first handshake)
	rekeyT               *dtlsTransport // transport of a running rekey handshake
	rekeying             bool
	keys                 *keyState // data keys, once the first handshake completed
	installAt            time.Time // install the staged epoch by then at the latest (keys.go)
	lastRekeyRequest     time.Time // server: when it last asked for a rekey

	// active is the transport DTLS records go to (the ICE reader loads it).
	active atomic.Pointer[dtlsTransport]

	mu        sync.Mutex // guards dconn, rekeyConn and closed (handshake goroutines set them)
	dconn     *dtls.Conn // the control conn (the first handshake's until a rekey replaces it)
	rekeyConn *dtls.Conn // a rekey handshake's conn until it completes
	closed    bool

	peerCert atomic.Pointer[pki.NodeCert] // the certificate the handshake accepted
	credGen  atomic.Uint64                // localCred.gen this side presented in its last handshake
	wg       sync.WaitGroup               // ICE reader, handshake and control-reader goroutines
}

// Session events, posted to the run goroutine.
type (
	evCandidate struct {
		gen  uint64
		cand ice.Candidate // nil: gathering complete
	}
	evICEState struct {
		gen   uint64
		state ice.ConnectionState
	}
	evPairChanged struct{ gen uint64 }
	evHandshake   struct {
		gen uint64
		err error
		dur time.Duration
	}
	evReaderDone struct {
		gen uint64
		err error
	}
	evSignalFailed struct {
		gen  uint64
		kind signalKind
		err  error
	}
	msgSignal     struct{ sig signal }
	msgUpdatePeer struct{ peer Peer }
	msgRecheck    struct{}
)

// neverRenominate is the automatic-renomination interval given to pion: its
// option is enabled only so that a connected agent keeps checking every pair
// (which path.go relies on); pion's own switching rule must never fire.
const neverRenominate = 100 * 365 * 24 * time.Hour

// newSession builds an ICE agent for generation gen. The caller sends the
// offer or answer and then starts gathering.
func (l *Link) newSession(gen uint64) (*session, error) {
	m := l.m
	ctx, cancel := context.WithCancel(l.ctx)
	s := &session{gen: gen, ctx: ctx, cancel: cancel, controlling: l.o.controlling}
	if m.opts.Servers != nil {
		s.servers = m.opts.Servers()
	}
	opts, err := m.agentOptions(ctx, s.servers)
	if err != nil {
		cancel()
		return nil, err
	}
	agent, err := ice.NewAgentWithOptions(opts...)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("tunnel: create ICE agent: %w", err)
	}
	s.agent = agent
	fail := func(err error) (*session, error) {
		cancel()
		_ = agent.GracefulClose()
		return nil, err
	}
	if err := agent.OnCandidate(func(c ice.Candidate) { l.post(s, evCandidate{gen: gen, cand: c}) }); err != nil {
		return fail(err)
	}
	if err := agent.OnConnectionStateChange(func(st ice.ConnectionState) { l.post(s, evICEState{gen: gen, state: st}) }); err != nil {
		return fail(err)
	}
	if err := agent.OnSelectedCandidatePairChange(func(ice.Candidate, ice.Candidate) { l.post(s, evPairChanged{gen: gen}) }); err != nil {
		return fail(err)
	}
	if s.localUfrag, s.localPwd, err = agent.GetLocalUserCredentials(); err != nil {
		return fail(err)
	}
	s.gate = newIdleGate(s.controlling, m.timers.IdleKeepalive)
	m.gates.add(s.localUfrag, s.gate)
	return s, nil
}

// agentOptions are the pion agent options every session uses.
func (m *Manager) agentOptions(ctx context.Context, servers []ICEServer) ([]ice.AgentOption, error) {
	t := m.timers
	types := []ice.CandidateType{ice.CandidateTypeHost, ice.CandidateTypeServerReflexive, ice.CandidateTypeRelay}
	relayWait := t.RelayWait
	if m.opts.ForceRelay {
		types = []ice.CandidateType{ice.CandidateTypeRelay}
		relayWait = 0
	}
	// Keep checking a pair for a whole connect attempt before giving it up:
	// a pair still in progress when another is selected goes on being
	// checked every keepalive, which is how a relayed link finds a direct
	// path later.
	maxReq := int((t.DisconnectedTimeout + t.FailedTimeout) / t.CheckInterval)
	maxReq = max(7, min(maxReq, 1000))

	urls, dialer := m.iceURLs(ctx, servers)
	keep := m.remoteFilter
	opts := []ice.AgentOption{
		ice.WithUDPMux(m.mux),
		ice.WithUDPMuxSrflx(m.mux),
		ice.WithNetworkTypes(m.networkTypes),
		ice.WithCandidateTypes(types),
		ice.WithUrls(urls),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
		ice.WithCheckInterval(t.CheckInterval),
		ice.WithKeepaliveInterval(t.KeepaliveInterval),
		// pion's disconnected/failed timers are off: they would fire on
		// every idle link. The run goroutine applies the same thresholds
		// (idle.go liveness).
		ice.WithDisconnectedTimeout(0),
		ice.WithFailedTimeout(0),
		ice.WithHostAcceptanceMinWait(0),
		ice.WithSrflxAcceptanceMinWait(relayWait / 4),
		ice.WithPrflxAcceptanceMinWait(relayWait / 2),
		ice.WithRelayAcceptanceMinWait(relayWait),
		ice.WithSTUNGatherTimeout(t.GatherTimeout),
		ice.WithMaxBindingRequests(uint16(maxReq)),
		ice.WithRenomination(ice.DefaultNominationValueGenerator()),
		ice.WithAutomaticRenomination(neverRenominate),
		ice.WithRemoteIPFilter(func(ip net.IP) bool {
			a, ok := netip.AddrFromSlice(ip)
			return ok && keep(a)
		}),
		ice.WithLoggerFactory(m.pionLogs),
	}
	// A fresh host stack per agent, as pion would make, so that each
	// attempt sees the current interfaces.
	base := m.opts.Net
	if base == nil {
		var err error
		if base, err = stdnet.NewNet(); err != nil {
			return nil, fmt.Errorf("tunnel: list network interfaces: %w", err)
		}
	}
	opts = append(opts, ice.WithNet(&relayNet{Net: fastRelayNet{base}, bind: m.relayBind, guard: m.relays}))
	if dialer != nil {
		opts = append(opts, ice.WithProxyDialer(dialer))
	}
	return opts, nil
}

// parseICEURL parses a server's URL and attaches its credentials.
func parseICEURL(s ICEServer) (*stun.URI, error) {
	u, err := stun.ParseURI(s.URL)
	if err != nil {
		return nil, err
	}
	if u.Scheme == stun.SchemeTypeTURN || u.Scheme == stun.SchemeTypeTURNS {
		u.Username, u.Password = s.Username, s.Password
	}
	return u, nil
}

// iceURLs converts the configured servers for pion, logging each bad URL
// once, and builds the TCP/TLS dialer when any TURN server needs one.
func (m *Manager) iceURLs(ctx context.Context, servers []ICEServer) ([]*stun.URI, *turnDialer) {
	urls := make([]*stun.URI, 0, len(servers))
	var dialer *turnDialer
	for _, s := range servers {
		u, err := parseICEURL(s)
		if err != nil {
			m.logOnce("bad-url:"+s.URL, "ignoring an ICE server with a bad URL", "url", s.URL, "error", err)
			continue
		}
		if (u.Scheme == stun.SchemeTypeTURN || u.Scheme == stun.SchemeTypeTURNS) && (u.Username == "" || u.Password == "") {
			m.logOnce("no-creds:"+s.URL, "ignoring a TURN server without credentials", "url", s.URL)
			continue
		}
		urls = append(urls, u)
		secure := u.Scheme == stun.SchemeTypeTURNS
		if u.Scheme == stun.SchemeTypeTURNS && u.Proto == stun.ProtoTypeUDP {
			m.logOnce("dtls-turn:"+s.URL, "TURN over DTLS is not supported by meshd; use turns: over TCP", "url", s.URL)
			urls = urls[:len(urls)-1]
			continue
		}
		if u.Scheme == stun.SchemeTypeTURNS || u.Proto == stun.ProtoTypeTCP {
			if dialer == nil {
				dialer = &turnDialer{ctx: ctx, timeout: m.timers.GatherTimeout, tlsConfig: m.opts.TURNTLSConfig, tlsNames: map[string]string{}, gates: &m.gates, relays: m.relays}
			}
			if secure {
				dialer.tlsNames[net.JoinHostPort(u.Host, strconv.Itoa(u.Port))] = u.Host
			}
		}
	}
	return urls, dialer
}

// startHandshake starts the session's ICE reader and runs the first DTLS
// handshake over the session's ICE connection on its own goroutine; it
// posts evHandshake when it ends. The controlling side is the DTLS client.
func (l *Link) startHandshake(s *session, p Peer, controlling bool) {
	s.handshaking = true
	t := newDTLSTransport(s.iceConn, &l.m.counters)
	s.ctrlT = t
	s.active.Store(t)
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		l.iceReadLoop(s)
	}()
	go func() {
		defer s.wg.Done()
		start := time.Now()
		_, err := l.handshake(s, t, p, controlling, false)
		l.post(s, evHandshake{gen: s.gen, err: err, dur: time.Since(start)})
	}()
}

// describe returns the negotiated cipher suite and the fingerprint of the
// certificate the peer presented, after a successful handshake.
func (s *session) describe() (suite, peerFingerprint string) {
	s.mu.Lock()
	c := s.dconn
	s.mu.Unlock()
	if c != nil {
		if st, ok := c.ConnectionState(); ok {
			suite = st.CipherSuiteID.String()
		}
	}
	if nc := s.peerCert.Load(); nc != nil {
		peerFingerprint = nc.Fingerprint
	}
	return suite, peerFingerprint
}

// startDataPath derives the session's data keys from its finished first
// handshake, opens the link for WriteBatch and starts the control reader.
func (l *Link) startDataPath(s *session) error {
	s.mu.Lock()
	c := s.dconn
	s.mu.Unlock()
	ks, err := l.newKeyState(c, s.controlling)
	if err != nil {
		return err
	}
	s.keys = ks
	s.ctrlT.established.Store(true)
	l.keys.Store(ks)
	l.startControlReader(s, c, s.ctrlT)
	return nil
}

// teardown closes the session: the data path first, then DTLS (which sends
// close_notify over the still-open ICE connection), then the agent (its
// sockets and TURN allocations), and waits for the session's goroutines.
func (l *Link) teardown(s *session) {
	if s == nil {
		return
	}
	l.stopDataPath()
	s.cancel()
	s.mu.Lock()
	s.closed = true
	c, rc := s.dconn, s.rekeyConn
	s.mu.Unlock()
	if rc != nil {
		_ = rc.Close()
	}
	if c != nil {
		_ = c.Close()
	}
	_ = s.agent.GracefulClose()
	l.m.gates.remove(s.localUfrag)
	for _, t := range []*dtlsTransport{s.ctrlT, s.rekeyT, s.active.Load()} {
		if t != nil {
			_ = t.Close()
		}
	}
	s.wg.Wait()
	if s.keys != nil {
		s.keys.close()
	}
}
