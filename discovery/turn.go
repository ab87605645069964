package discovery

import (
	"context"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // mandated by the coturn static-auth-secret scheme
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"

	"github.com/meshd/meshd/internal/turnauth"
)

// TURNOptions configures a coordinator's embedded STUN/TURN server and the
// TURN credentials it hands to nodes. The credentials follow coturn's
// static-auth-secret scheme (the "TURN REST API"), so nodes can equally use
// an external coturn configured with `use-auth-secret` and the same secret.
type TURNOptions struct {
	// Secret is the shared static-auth-secret. "" = hand out no TURN
	// credentials; the embedded server then answers STUN only and refuses
	// every allocation.
	Secret string
	// Realm of the embedded server. "" = "meshd".
	Realm string

	// UDPAddr, TCPAddr and TLSAddr are the listeners ("host:port"; port 0
	// picks one). Each is optional; all empty = no embedded server. The UDP
	// listener also serves STUN binding requests.
	UDPAddr string
	TCPAddr string
	TLSAddr string
	// TLSCertificate is served on TLSAddr. nil = the coordinator's node
	// certificate.
	TLSCertificate *tls.Certificate

	// RelayAddress is the address relayed candidates carry (the host's
	// public address), of either family. RelayAddress or RelayAddress6 is
	// required when any listener is set.
	RelayAddress netip.Addr
	// RelayAddress6 is the IPv6 address relayed candidates of IPv6
	// allocations carry when RelayAddress is IPv4 (a dual-stack relay).
	// Zero = no IPv6 allocations unless RelayAddress is IPv6. Its relay
	// sockets are bound on it.
	RelayAddress6 netip.Addr
	// RelayBindAddress is where relay sockets of RelayAddress's family are
	// bound. "" = RelayAddress.
	RelayBindAddress string
	// RelayPortMin and RelayPortMax bound relay ports. Zero = 49152-65535.
	RelayPortMin, RelayPortMax uint16
	// MaxAllocationsPerUser caps concurrent allocations per node name. Zero = 8.
	MaxAllocationsPerUser int

	// AllowedPeers are peer prefixes the server relays to whatever else
	// says (coturn's allowed-peer-ip): labs and private deployments. nil =
	// none. The host's own non-loopback addresses stay limited to relay
	// and mesh ports even when listed.
	AllowedPeers []netip.Prefix
	// DeniedPeers are peer prefixes refused on top of the defaults
	// (coturn's denied-peer-ip). nil = none. The defaults refuse loopback,
	// link-local, multicast, unspecified and reserved addresses, the host's
	// own addresses except on relay and mesh ports, and the private ranges
	// (RFC 1918, 100.64.0.0/10, fc00::/7) unless RelayAddress is itself
	// private.
	DeniedPeers []netip.Prefix
	// MeshPorts returns the UDP ports of this host's own mesh links (the
	// node's ICE port): a coordinator is a mesh node too, and a peer that
	// can only relay must reach it. The relay reaches the host's own
	// addresses on relay ports and these only. nil = none.
	MeshPorts func() []uint16
	// interfaceAddrs replaces net.InterfaceAddrs in tests; nil = the host's.
	interfaceAddrs func() ([]net.Addr, error)
	// noFastPath leaves all forwarding to pion (benchmarks compare).
	noFastPath bool

	// PublicHost is the host written into handed-out URLs. "" = per family
	// the listener serves, that family's relay address, or the listener's
	// own address when it is specific (turnrelay.go).
	PublicHost string
	// ExternalURLs are extra stun:/turn:/turns: URLs (an external coturn
	// sharing Secret) handed out after the embedded ones.
	ExternalURLs []string
	// CredentialTTL is the lifetime of handed-out credentials; they are
	// refreshed on the session at half-life. Zero = 1h.
	CredentialTTL time.Duration
}

func (o *TURNOptions) enabled() bool { return o.UDPAddr != "" || o.TCPAddr != "" || o.TLSAddr != "" }

// turnCredentials computes coturn static-auth-secret credentials for name,
// valid until expires: username "<unix expiry>:<name>", password
// base64(HMAC-SHA1(secret, username)).
func turnCredentials(secret, name string, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + name
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// turnService is the embedded server plus the credential issuer.
type turnService struct {
	opts   TURNOptions
	server *turn.Server // nil when no listener is configured
	urls   []string     // the embedded server's URLs, then ExternalURLs
	nOwn   int          // how many of urls are the embedded server's
	log    *slog.Logger
	peers  *peerPolicy // which peer addresses the relay reaches
	fast   *turnFast   // the forwarding fast path (UDP and stream clients), or nil
	// auth answers bad or expired credentials 401 on every listener
	// (internal/turnauth); nil without a secret.
	auth *turnauth.Checker

	mu     sync.Mutex
	allocs map[string]int // per user; guarded by mu
}

// newTURNService opens the configured listeners and starts the pion server.
// Its goroutines are pion's; Close stops them.
func newTURNService(o TURNOptions, nodeCert tls.Certificate, log *slog.Logger) (*turnService, error) {
	if o.Realm == "" {
		o.Realm = "meshd"
	}
	if o.CredentialTTL <= 0 {
		o.CredentialTTL = time.Hour
	}
	if o.MaxAllocationsPerUser <= 0 {
		o.MaxAllocationsPerUser = 8
	}
	if o.RelayPortMin == 0 && o.RelayPortMax == 0 {
		o.RelayPortMin, o.RelayPortMax = 49152, 65535
	}
	t := &turnService{opts: o, log: log, allocs: map[string]int{}, peers: newPeerPolicy(&o, log)}
	for _, u := range o.ExternalURLs {
		if _, err := stun.ParseURI(u); err != nil {
			return nil, fmt.Errorf("discovery: TURN external URL %q: %w", u, err)
		}
	}
	if !o.enabled() {
		t.urls = append(t.urls, o.ExternalURLs...)
		return t, nil
	}
	if !o.RelayAddress.IsValid() && !o.RelayAddress6.IsValid() {
		return nil, errors.New("discovery: TURN listeners configured without a relay address")
	}
	if a := o.RelayAddress6; a.IsValid() && (!a.Is6() || a.Is4In6() || o.RelayAddress.Unmap().Is6()) {
		return nil, fmt.Errorf("discovery: TURN IPv6 relay address %s: must be IPv6, with an IPv4 RelayAddress or none", a)
	}
	if o.RelayPortMin > o.RelayPortMax {
		return nil, fmt.Errorf("discovery: TURN relay port range %d-%d is empty", o.RelayPortMin, o.RelayPortMax)
	}
	var fast *turnFast // the forwarding fast path (turnfast.go, turnstream.go), or nil
	if !o.noFastPath {
		fast = newTURNFast(t.peers)
		t.fast = fast
	}
	if o.Secret != "" {
		// Bad or expired credentials get 401, not pion's 400: on the UDP
		// listener by turnauth.Conn, on streams where turnStreamConn cuts
		// their frames (turnstream.go). One checker counts them all.
		t.auth = turnauth.NewChecker(o.Realm, staticAuthKey(o.Secret, time.Now))
	}
	relay := func() turn.RelayAddressGenerator {
		var g familyRelay
		for _, v6 := range []bool{false, true} {
			a := o.relayAddr(v6)
			if !a.IsValid() {
				continue
			}
			bind := a.String()
			if o.RelayBindAddress != "" && a == o.RelayAddress.Unmap() {
				bind = o.RelayBindAddress
			}
			r := &turn.RelayAddressGeneratorPortRange{
				RelayAddress: net.IP(a.AsSlice()),
				Address:      bind,
				MinPort:      o.RelayPortMin,
				MaxPort:      o.RelayPortMax,
			}
			if v6 {
				g.v6 = r
			} else {
				g.v4 = r
			}
		}
		return filteredRelay{p: t.peers, fast: fast, RelayAddressGenerator: g}
	}
	// announce adds a URL per host the listener at ln is announced as.
	announce := func(ln net.Addr, urls ...func(hostPort string) string) {
		var ap netip.AddrPort
		switch a := ln.(type) {
		case *net.UDPAddr:
			ap = a.AddrPort()
		case *net.TCPAddr:
			ap = a.AddrPort()
		}
		for _, h := range o.urlHosts(ap.Addr()) {
			hp := net.JoinHostPort(h, strconv.Itoa(int(ap.Port())))
			for _, u := range urls {
				t.urls = append(t.urls, u(hp))
			}
		}
	}
	var (
		cfg     turn.ServerConfig
		closers []func() error
	)
	fail := func(err error) (*turnService, error) {
		for _, c := range closers {
			_ = c()
		}
		return nil, err
	}
	lc := net.ListenConfig{}
	if o.UDPAddr != "" {
		pc, err := lc.ListenPacket(context.Background(), listenNetwork("udp", o.UDPAddr), o.UDPAddr)
		if err != nil {
			return fail(fmt.Errorf("discovery: TURN UDP listener: %w", err))
		}
		closers = append(closers, pc.Close)
		if uc, ok := pc.(*net.UDPConn); ok && fast != nil {
			if ln, ok := fast.wrapListener(uc); ok {
				pc = ln
			}
		}
		if t.auth != nil {
			pc = turnauth.NewConn(pc, t.auth)
		}
		cfg.PacketConnConfigs = append(cfg.PacketConnConfigs, turn.PacketConnConfig{PacketConn: pc, RelayAddressGenerator: relay(), PermissionHandler: t.peers.permit})
		announce(pc.LocalAddr(), func(hp string) string { return "stun:" + hp }, func(hp string) string { return "turn:" + hp + "?transport=udp" })
	}
	if o.TCPAddr != "" {
		ln, err := lc.Listen(context.Background(), listenNetwork("tcp", o.TCPAddr), o.TCPAddr)
		if err != nil {
			return fail(fmt.Errorf("discovery: TURN TCP listener: %w", err))
		}
		closers = append(closers, ln.Close)
		cfg.ListenerConfigs = append(cfg.ListenerConfigs, turn.ListenerConfig{Listener: fast.wrapStreams(ln, t.auth), RelayAddressGenerator: relay(), PermissionHandler: t.peers.permit})
		announce(ln.Addr(), func(hp string) string { return "turn:" + hp + "?transport=tcp" })
	}
	if o.TLSAddr != "" {
		cert := nodeCert
		if o.TLSCertificate != nil {
			cert = *o.TLSCertificate
		}
		ln, err := lc.Listen(context.Background(), listenNetwork("tcp", o.TLSAddr), o.TLSAddr)
		if err != nil {
			return fail(fmt.Errorf("discovery: TURN TLS listener: %w", err))
		}
		tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		closers = append(closers, tln.Close)
		cfg.ListenerConfigs = append(cfg.ListenerConfigs, turn.ListenerConfig{Listener: fast.wrapStreams(tln, t.auth), RelayAddressGenerator: relay(), PermissionHandler: t.peers.permit})
		announce(ln.Addr(), func(hp string) string { return "turns:" + hp + "?transport=tcp" })
	}
	t.nOwn = len(t.urls)
	t.urls = append(t.urls, o.ExternalURLs...)
	if len(t.urls) > maxTURNURLs {
		// A dual-stack server announces up to 8 itself; the session frame
		// carries at most maxTURNURLs.
		return fail(fmt.Errorf("discovery: TURN: %d URLs to announce; a session carries at most %d", len(t.urls), maxTURNURLs))
	}
	lf := &pionLoggerFactory{l: log}
	cfg.LoggerFactory = lf
	cfg.Realm = o.Realm
	// An allocation without REQUESTED-ADDRESS-FAMILY is IPv4 (RFC 6156)
	// whatever family carries it: pion's client asks for IPv6 explicitly
	// and for IPv4 by omitting the attribute.
	cfg.StrictAddressFamily = true
	if o.Secret != "" {
		cfg.AuthHandler = turn.LongTermTURNRESTAuthHandler(o.Secret, lf.NewLogger("turn-auth"))
	} else {
		cfg.AuthHandler = func(*turn.RequestAttributes) (string, []byte, bool) { return "", nil, false }
	}
	cfg.QuotaHandler = t.quota
	cfg.EventHandler = turn.EventHandler{
		OnAllocationCreated: func(_, _ net.Addr, _, user, _ string, _ net.Addr, _ int) { t.track(user, +1) },
		OnAllocationDeleted: func(_, _ net.Addr, _, user, _ string) { t.track(user, -1) },
	}
	srv, err := turn.NewServer(cfg)
	if err != nil {
		return fail(fmt.Errorf("discovery: TURN server: %w", err))
	}
	t.server = srv
	if t.peers.allowPrivate {
		log.Info("TURN relays to private addresses: the relay address is private", "relayAddress", o.RelayAddress)
	}
	return t, nil
}

// quota is called by pion before an allocation; it may run concurrently.
func (t *turnService) quota(user, _ string, _ net.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.allocs[user] < t.opts.MaxAllocationsPerUser
}

func (t *turnService) track(user string, d int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.allocs[user] + d; n > 0 {
		t.allocs[user] = n
	} else {
		delete(t.allocs, user)
	}
}

// credentials issues credentials for node name, or ok=false when there is
// nothing to hand out (no secret or no URL). The URLs are this service's
// own, then others (the other coordinators' relays, which accept the same
// credentials when they share the secret) up to maxTURNURLs.
func (t *turnService) credentials(name string, now time.Time, others []string) (TURNCredentials, bool) {
	if t.opts.Secret == "" || len(t.urls) == 0 {
		return TURNCredentials{}, false
	}
	exp := now.Add(t.opts.CredentialTTL).Truncate(time.Second)
	u, p := turnCredentials(t.opts.Secret, name, exp)
	return TURNCredentials{URLs: mergeURLs(t.urls, others), Username: u, Password: p, Expires: exp}, true
}

// relayURLs are the embedded server's turn: and turns: URLs, which other
// coordinators hand out after their own (gossiprelays.go); nil when this
// service hands out no credentials.
func (t *turnService) relayURLs() []string {
	if t == nil || t.opts.Secret == "" {
		return nil
	}
	var out []string
	for _, u := range t.urls[:t.nOwn] {
		if (strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:")) && len(u) <= maxRelayURLLen {
			out = append(out, u)
		}
	}
	return out[:min(len(out), maxRelayURLs)]
}

func (t *turnService) ttl() time.Duration { return t.opts.CredentialTTL }

func (t *turnService) Close() error {
	if t.server == nil {
		return nil
	}
	return t.server.Close()
}

// pionLoggerFactory adapts slog to pion's leveled logger. pion logs client
// mistakes (bad credentials) at error level; they are warnings for us. Its
// info messages are per packet ("No Permission or Channel exists for ...",
// sent by anyone who can reach a relay port): debug for us.
type pionLoggerFactory struct{ l *slog.Logger }

func (f *pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{l: f.l.With("component", "pion-"+scope)}
}

type pionLogger struct{ l *slog.Logger }

func (p *pionLogger) log(level slog.Level, msg string) {
	if p.l.Enabled(context.Background(), level) {
		p.l.Log(context.Background(), level, msg)
	}
}

func (p *pionLogger) logf(level slog.Level, format string, args ...any) {
	if p.l.Enabled(context.Background(), level) {
		p.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

// Trace is below slog's debug; it maps to debug-4.
func (p *pionLogger) Trace(msg string)                  { p.log(slog.LevelDebug-4, msg) }
func (p *pionLogger) Tracef(format string, args ...any) { p.logf(slog.LevelDebug-4, format, args...) }
func (p *pionLogger) Debug(msg string)                  { p.log(slog.LevelDebug, msg) }
func (p *pionLogger) Debugf(format string, args ...any) { p.logf(slog.LevelDebug, format, args...) }
func (p *pionLogger) Info(msg string)                   { p.log(slog.LevelDebug, msg) }
func (p *pionLogger) Infof(format string, args ...any)  { p.logf(slog.LevelDebug, format, args...) }
func (p *pionLogger) Warn(msg string)                   { p.log(slog.LevelWarn, msg) }
func (p *pionLogger) Warnf(format string, args ...any)  { p.logf(slog.LevelWarn, format, args...) }
func (p *pionLogger) Error(msg string)                  { p.log(slog.LevelWarn, msg) }
func (p *pionLogger) Errorf(format string, args ...any) { p.logf(slog.LevelWarn, format, args...) }

// TURNAuthRefused counts the requests the embedded TURN server answered
// 401 for a bad, expired or forged credential since Start, on all its
// listeners (UDP, TCP, TLS).
func (c *Coordinator) TURNAuthRefused() uint64 {
	if c.turn == nil || c.turn.auth == nil {
		return 0
	}
	return c.turn.auth.Refused()
}
