package relay

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"

	"github.com/meshd/meshd/internal/turnauth"
)

// relayPortMin and relayPortMax bound the allocations' relay ports.
const relayPortMin, relayPortMax = 49152, 65535

// DefaultMaxAllocations is Options.MaxAllocations when zero.
const DefaultMaxAllocations = 64

// minPerMember is the least of the per-member cap: one member may hold
// half the capacity, at least this many (a link holds one allocation per
// relay, so a member needs about one per peer).
const minPerMember = 16

// Options configures a Server.
type Options struct {
	// Name is this node's name (the relay name in the password
	// derivation). Must not be empty.
	Name string
	// Key returns this node's private key (pki: ECDSA P-256 or Ed25519),
	// the one of the certificate its record carries now (a renewal may
	// change it). Must not be nil; called concurrently.
	Key func() crypto.PrivateKey
	// Listen is the UDP listener, "host:port" (port 0 picks one). Must not
	// be empty.
	Listen string
	// RelayAddress is the address put in relayed candidates (the host's
	// public address). Must be valid and specified.
	RelayAddress netip.Addr
	// RelayBind is where allocation sockets are bound; "" = RelayAddress.
	RelayBind string
	// MaxAllocations caps the allocations held at once (the capacity the
	// record announces). Zero = DefaultMaxAllocations.
	MaxAllocations int
	// Member returns the certificate public key of a mesh member by node
	// name from the verified registry, or false (unknown, left, revoked).
	// Must not be nil; called concurrently.
	Member func(name string) (crypto.PublicKey, bool)
	// Vouched returns addresses the mesh vouches for beyond the sources of
	// live allocations: member relays and coordinator TURN hosts. nil =
	// none; called concurrently, results cached for a second.
	Vouched func() []netip.Addr
	// MeshPort returns this host's mesh (ICE) UDP port, the only port the
	// relay reaches on the host's own addresses. nil = none.
	MeshPort func() uint16
	// Now is the clock; nil = time.Now.
	Now func() time.Time
	// Logger must not be nil.
	Logger *slog.Logger

	// AllowLoopback relays to 127.0.0.0/8 and ::1 as to any vouched
	// address, the relay host's own included: in-process tests, where
	// every node is on loopback. Never set it otherwise.
	AllowLoopback bool

	// interfaceAddrs replaces net.InterfaceAddrs in tests.
	interfaceAddrs func() ([]net.Addr, error)
}

// Stats are a Server's counters.
type Stats struct {
	Allocations     int    // held now
	AllocationsMade uint64 // since start
	AuthRefused     uint64 // requests with a bad, expired or unknown credential
	QuotaRefused    uint64 // allocations refused at capacity
	PeersDenied     uint64 // permissions and datagrams refused by the peer policy
	PacketsRelayed  uint64 // datagrams relayed to peers
	BytesRelayed    uint64 // their payload bytes
	PacketsReceived uint64 // datagrams received from peers
	BytesReceived   uint64
}

// Server is a running member relay.
type Server struct {
	// Immutable after New.
	opts   Options
	server *turn.Server
	addr   *net.UDPAddr
	log    *slog.Logger
	peers  *policy
	creds  *turnauth.Checker // answers bad credentials 401 before pion

	allocsMade, authRefused, quotaRefused atomic.Uint64
	pktOut, bytesOut, pktIn, bytesIn      atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

// New validates o, opens the listener and starts the TURN server (its
// goroutines are pion's; Close stops them).
func New(o Options) (*Server, error) {
	switch {
	case o.Name == "" || o.Key == nil || o.Member == nil || o.Logger == nil:
		return nil, fmt.Errorf("%w: Name, Key, Member and Logger are required", ErrInvalidOptions)
	case o.Listen == "":
		return nil, fmt.Errorf("%w: no listen address", ErrInvalidOptions)
	case !o.RelayAddress.IsValid() || o.RelayAddress.IsUnspecified():
		return nil, fmt.Errorf("%w: relay address %v", ErrInvalidOptions, o.RelayAddress)
	case o.MaxAllocations < 0 || o.MaxAllocations > 65535:
		return nil, fmt.Errorf("%w: MaxAllocations %d", ErrInvalidOptions, o.MaxAllocations)
	}
	if _, err := ecdhPrivate(o.Key()); err != nil {
		return nil, err
	}
	if o.MaxAllocations == 0 {
		o.MaxAllocations = DefaultMaxAllocations
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.interfaceAddrs == nil {
		o.interfaceAddrs = net.InterfaceAddrs
	}
	s := &Server{opts: o, log: o.Logger}
	s.peers = newPolicy(&s.opts)
	pc, err := (&net.ListenConfig{}).ListenPacket(context.Background(), "udp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("relay: listener: %w", err)
	}
	s.addr = pc.LocalAddr().(*net.UDPAddr)
	// Bad, expired or unknown credentials get 401, not pion's 400.
	s.creds = turnauth.NewChecker(Realm, s.checkKey)
	bind := o.RelayBind
	if bind == "" {
		bind = o.RelayAddress.String()
	}
	gen := &filteredRelay{s: s, RelayAddressGenerator: &turn.RelayAddressGeneratorPortRange{
		RelayAddress: net.IP(o.RelayAddress.AsSlice()),
		Address:      bind,
		MinPort:      relayPortMin,
		MaxPort:      relayPortMax,
	}}
	cfg := turn.ServerConfig{
		Realm:         Realm,
		LoggerFactory: &pionLoggerFactory{l: o.Logger},
		AuthHandler:   s.auth,
		QuotaHandler:  s.quota,
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: turnauth.NewConn(pc, s.creds), RelayAddressGenerator: gen, PermissionHandler: s.permit,
		}},
		EventHandler: turn.EventHandler{
			OnAllocationCreated: func(src, _ net.Addr, _, user, _ string, _ net.Addr, _ int) {
				s.allocsMade.Add(1)
				s.peers.track(src, user, +1)
			},
			OnAllocationDeleted: func(src, _ net.Addr, _, user, _ string) { s.peers.track(src, user, -1) },
			// A credential whose integrity does not verify here though it
			// did in s.creds (the key changed between the two checks);
			// refusals by s.creds and by auth are counted there.
			OnAuth: func(_, _ net.Addr, _, _, _ string, _ string, ok bool) {
				if !ok {
					s.authRefused.Add(1)
				}
			},
		},
	}
	srv, err := turn.NewServer(cfg)
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("relay: TURN server: %w", err)
	}
	s.server = srv
	return s, nil
}

// Addr is the UDP listener's address.
func (s *Server) Addr() netip.AddrPort { return s.addr.AddrPort() }

// Capacity is the allocation cap the record announces.
func (s *Server) Capacity() int { return s.opts.MaxAllocations }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Allocations:     s.peers.allocations(),
		AllocationsMade: s.allocsMade.Load(),
		AuthRefused:     s.authRefused.Load() + s.creds.Refused(),
		QuotaRefused:    s.quotaRefused.Load(),
		PeersDenied:     s.peers.refused.Load(),
		PacketsRelayed:  s.pktOut.Load(),
		BytesRelayed:    s.bytesOut.Load(),
		PacketsReceived: s.pktIn.Load(),
		BytesReceived:   s.bytesIn.Load(),
	}
}

// Close stops the server and its allocations; idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.server.Close() })
	return s.closeErr
}

// checkUsername returns the key of username's member, or why not.
func (s *Server) checkUsername(username string) (string, crypto.PublicKey, error) {
	exp, name, err := parseUsername(username)
	if err != nil {
		return "", nil, err
	}
	now := s.opts.Now()
	if exp.Before(now) || exp.After(now.Add(MaxTTL)) {
		return "", nil, fmt.Errorf("%w: %v", ErrExpired, exp)
	}
	if name == s.opts.Name {
		return "", nil, fmt.Errorf("%w: %q is this relay", ErrUnknownMember, name)
	}
	pub, ok := s.opts.Member(name)
	if !ok {
		return "", nil, fmt.Errorf("%w: %q", ErrUnknownMember, name)
	}
	return name, pub, nil
}

// longTermKey returns the member of username and its long-term key, or
// why there is none (unknown, expired, revoked, not of the scheme).
func (s *Server) longTermKey(username string) (string, []byte, error) {
	name, pub, err := s.checkUsername(username)
	if err != nil {
		return "", nil, err
	}
	pw, err := Password(s.opts.Key(), pub, username, s.opts.Name)
	if err != nil {
		return "", nil, err
	}
	return name, turn.GenerateAuthKey(username, Realm, pw), nil
}

// checkKey is s.creds' key function: every request with a credential is
// checked there first, and answered 401 (and counted by s.creds) when
// there is no key or the integrity does not verify with it.
func (s *Server) checkKey(username, _ string) ([]byte, bool) {
	_, key, err := s.longTermKey(username)
	if err != nil && s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("relay credential refused", "error", err)
	}
	return key, err == nil
}

// auth is pion's AuthHandler: the long-term key of a member's username, or
// refusal (pion answers 400). s.creds answered every bad credential
// already; this refuses only one that went bad between the two checks.
func (s *Server) auth(ra *turn.RequestAttributes) (string, []byte, bool) {
	name, key, err := s.longTermKey(ra.Username)
	if err == nil {
		return name, key, true
	}
	s.authRefused.Add(1)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("relay credential refused", "from", ra.SrcAddr, "error", err)
	}
	return "", nil, false
}

// quota is pion's QuotaHandler (user is what auth returned: the node name).
func (s *Server) quota(user, _ string, _ net.Addr) bool {
	if !s.peers.room(user, s.opts.MaxAllocations, max(minPerMember, s.opts.MaxAllocations/2)) {
		s.quotaRefused.Add(1)
		return false
	}
	return true
}

// permit is pion's PermissionHandler (CreatePermission, ChannelBind).
func (s *Server) permit(_ net.Addr, ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	return ok && s.peers.allowIP(a.Unmap())
}

// filteredRelay wraps allocation sockets so that every relayed datagram is
// checked (with its port) and counted.
type filteredRelay struct {
	s *Server
	turn.RelayAddressGenerator
}

func (f *filteredRelay) AllocatePacketConn(c turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	pc, addr, err := f.RelayAddressGenerator.AllocatePacketConn(c)
	if err != nil {
		return nil, nil, err
	}
	return &relaySocket{PacketConn: pc, s: f.s}, addr, nil
}

// AllocateListener: TCP allocations (RFC 6062) are not offered.
func (f *filteredRelay) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errors.ErrUnsupported
}

// AllocateConn: TCP allocations (RFC 6062) are not offered.
func (f *filteredRelay) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errors.ErrUnsupported
}

// relaySocket is one allocation's relay socket.
type relaySocket struct {
	net.PacketConn
	s *Server
}

func (r *relaySocket) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ap, ok := addrPortOf(addr); !ok || !r.s.peers.allowAddrPort(ap) {
		return len(p), nil // dropped and counted by the policy
	}
	n, err := r.PacketConn.WriteTo(p, addr)
	if err == nil {
		r.s.pktOut.Add(1)
		r.s.bytesOut.Add(uint64(n))
	}
	return n, err
}

func (r *relaySocket) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := r.PacketConn.ReadFrom(p)
	if err == nil {
		r.s.pktIn.Add(1)
		r.s.bytesIn.Add(uint64(n))
	}
	return n, a, err
}

// pionLoggerFactory adapts slog to pion's logger: client mistakes and
// per-packet notes are debug for us, pion's warnings and errors warnings.
type pionLoggerFactory struct{ l *slog.Logger }

func (f *pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{l: f.l.With("component", "pion-"+scope)}
}

type pionLogger struct{ l *slog.Logger }

func (p *pionLogger) logf(level slog.Level, format string, args ...any) {
	if p.l.Enabled(context.Background(), level) {
		p.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (p *pionLogger) Trace(msg string)                  { p.logf(slog.LevelDebug-4, "%s", msg) }
func (p *pionLogger) Tracef(format string, args ...any) { p.logf(slog.LevelDebug-4, format, args...) }
func (p *pionLogger) Debug(msg string)                  { p.logf(slog.LevelDebug, "%s", msg) }
func (p *pionLogger) Debugf(format string, args ...any) { p.logf(slog.LevelDebug, format, args...) }
func (p *pionLogger) Info(msg string)                   { p.logf(slog.LevelDebug, "%s", msg) }
func (p *pionLogger) Infof(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p *pionLogger) Warn(msg string)                   { p.logf(slog.LevelWarn, "%s", msg) }
func (p *pionLogger) Warnf(format string, args ...any)  { p.logf(slog.LevelWarn, format, args...) }
func (p *pionLogger) Error(msg string)                  { p.logf(slog.LevelWarn, "%s", msg) }
func (p *pionLogger) Errorf(format string, args ...any) { p.logf(slog.LevelWarn, format, args...) }
