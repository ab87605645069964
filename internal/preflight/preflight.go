// Package preflight holds the one check of a loaded configuration that both
// meshd (at start, on reload and with --check) and `meshctl config check`
// run: everything that can be known about a configuration without opening
// a socket or a device. The credentials (the key matches the certificate,
// the certificate chains to the CA), the CRL, the secrets the
// configuration names by file, the relations between the configuration
// and the certificate (node.name, routes.advertise), the control group;
// and the warnings of a configuration that works but probably not as
// meant.
//
// It sits between config (pure: the schema and its validation) and daemon
// (which links the data plane); meshctl may import it because it imports
// only config and pki.
package preflight

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/pki"
)

// Kinds of failure. Every error Run returns is an *Error matching exactly
// one of them with errors.Is.
var (
	// ErrConfig: the configuration parsed but cannot run (node.name is not
	// the certificate's, routes.advertise outside the certificate, an
	// unreadable gossip key, a control group that does not exist, ...).
	ErrConfig = errors.New("preflight: configuration invalid")
	// ErrCredentials: the CA certificate, node certificate, node key or
	// CRL cannot be used (missing, malformed, key mismatch, not issued by
	// the CA). An expired certificate is a warning, not this error.
	ErrCredentials = errors.New("preflight: certificate or key unusable")
)

// Error says what could not be used and why. It prints as "what: cause",
// the shape of meshd's one-line errors.
type Error struct {
	// Kind is ErrConfig or ErrCredentials.
	Kind error
	// What names the part ("config", "certificate", "CRL", ...).
	What string
	Err  error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.What, e.Err) }

// Is matches the kind.
func (e *Error) Is(target error) bool { return target != nil && target == e.Kind }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func configErr(format string, args ...any) error {
	return &Error{Kind: ErrConfig, What: "config", Err: fmt.Errorf(format, args...)}
}

func credErr(what string, err error) error {
	return &Error{Kind: ErrCredentials, What: what, Err: err}
}

// Options are Run's view of the host; the zero value means this host now.
type Options struct {
	// Now is the clock for certificate validity; nil means time.Now.
	Now func() time.Time
	// HostAddrs lists the host's addresses, for the session_listen
	// warning; nil means the addresses of net.InterfaceAddrs.
	HostAddrs func() ([]netip.Addr, error)
	// LookupGroup resolves a group name; nil means os/user.LookupGroup.
	LookupGroup func(name string) error
}

// Result is what Run loaded, for the daemon to build from.
type Result struct {
	Creds    *pki.Credentials
	Verifier *pki.Verifier
	// CRL is pki.crl, nil when not set. It is already applied to Verifier.
	CRL *pki.CRL
	// GossipKey is the coordinator's gossip key (coordinator only).
	GossipKey []byte
	// TURNSecret is the embedded TURN server's REST secret (coordinator
	// with TURN only): the configured one or, if none, a random one.
	TURNSecret string
	// TURNTLS is the TURN-over-TLS certificate when it is not the node's.
	TURNTLS *tls.Certificate
	// ControlGroup is the group the control socket is shared with: "" when
	// root only, including when the default group does not exist.
	ControlGroup string
	// Warnings are what works but is probably not what was meant, each one
	// line starting with the key it is about. Callers show them (meshd
	// logs them, both checks print them).
	Warnings []string
}

// Run checks cfg, a configuration config.Load accepted, the way meshd does
// before it builds anything: it reads every file cfg names and opens
// nothing. The first problem is the error (an *Error).
func Run(cfg *config.Config, opts Options) (*Result, error) {
	if cfg == nil {
		return nil, configErr("no configuration")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	creds, err := pki.LoadCredentials(cfg.PKI.CA, cfg.PKI.Cert, cfg.PKI.Key)
	if err != nil {
		return nil, credErr("certificate", err)
	}
	r := &Result{Creds: creds, Verifier: creds.Verifier()} // every CA of the pki.ca bundle
	id := creds.Cert.Identity
	if cfg.Node.Name != "" && cfg.Node.Name != id.Name {
		return nil, configErr("node.name is %q but the certificate %s is for %q; remove node.name or use the matching certificate",
			cfg.Node.Name, cfg.PKI.Cert, id.Name)
	}
	for _, p := range cfg.Routes.Advertise {
		if !prefixInside(p, id.Subnets) {
			return nil, configErr("routes.advertise: %s is not inside the subnets the certificate allows (%s)", p, prefixList(id.Subnets))
		}
	}
	if cfg.Tun.Mode == config.TunUserspace {
		if cfg.Routes.Forward {
			return nil, configErr("routes.forward needs tun.mode = \"kernel\": the userspace netstack cannot forward to local networks")
		}
		if len(cfg.Routes.Advertise) > 0 {
			return nil, configErr("routes.advertise needs tun.mode = \"kernel\": a userspace node cannot route for a subnet")
		}
	}
	if r.CRL, err = loadCRL(cfg.PKI.CRL); err != nil {
		return nil, err
	}
	if r.CRL != nil {
		if _, err := r.Verifier.UpdateCRL(r.CRL); err != nil {
			return nil, credErr("CRL", fmt.Errorf("%s: %w", cfg.PKI.CRL, err))
		}
	}
	if cfg.Coordinator.Enabled {
		if err := r.coordinator(cfg); err != nil {
			return nil, err
		}
	}
	for i, s := range cfg.ICE.TURNServers {
		if _, err := s.ReadSecret(); err != nil {
			return nil, configErr("ice.turn_servers[%d].secret_file: %v", i, err)
		}
	}
	if err := r.controlGroup(cfg, opts.LookupGroup); err != nil {
		return nil, err
	}
	r.validity(cfg, now())
	if len(cfg.Firewall.Inbound) == 0 {
		r.warnf("firewall.inbound: no rules, so peers reach nothing on this node (inbound is deny-all by default; meshctl ping still works); add a [[firewall.inbound]] rule, e.g. peer = \"any\", proto = \"icmp\"")
	}
	if cfg.Coordinator.Enabled {
		r.listenAddr(cfg.Coordinator.SessionListen, opts.HostAddrs)
	}
	return r, nil
}

func (r *Result) warnf(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

// controlGroup resolves control.group. A group the file names must exist;
// the default one (created by the packages) may be missing on a plain
// binary install, and then the socket is root's only.
func (r *Result) controlGroup(cfg *config.Config, lookup func(string) error) error {
	g := cfg.Control.Group
	if g == "" {
		return nil
	}
	if lookup == nil {
		lookup = lookupGroup
	}
	if err := lookup(g); err != nil {
		if cfg.Control.GroupSet {
			var unknown user.UnknownGroupError
			if errors.As(err, &unknown) {
				return configErr("control.group: group %q does not exist; create it (groupadd --system %s) or set control.group = \"\" for root only", g, g)
			}
			return configErr("control.group: group %q: %v", g, err)
		}
		r.warnf("control.group: group %q does not exist, so only root may use meshctl status, peers and reload; create it (groupadd --system %s) or set control.group = \"\" to silence this", g, g)
		return nil
	}
	r.ControlGroup = g
	return nil
}

// lookupGroup resolves a group by name or numeric gid, as control's server
// does.
func lookupGroup(g string) error {
	if _, err := strconv.ParseUint(g, 10, 32); err == nil {
		return nil
	}
	_, err := user.LookupGroup(g)
	return err
}

// validity warns about a certificate outside its validity period: meshd
// still starts (peers refuse it, and a new certificate is a reload away).
func (r *Result) validity(cfg *config.Config, now time.Time) {
	c := r.Creds.Cert.Cert
	switch {
	case now.After(c.NotAfter):
		r.warnf("pki.cert: %s expired on %s; peers refuse it until it is renewed", cfg.PKI.Cert, c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		r.warnf("pki.cert: %s is not valid before %s (is the clock right?); peers refuse it until then", cfg.PKI.Cert, c.NotBefore.UTC().Format(time.RFC3339))
	}
	ca := r.Creds.CA
	if now.After(ca.NotAfter) {
		r.warnf("pki.ca: %s expired on %s; peers refuse every certificate it signed", cfg.PKI.CA, ca.NotAfter.UTC().Format(time.RFC3339))
	}
}

// listenAddr warns when coordinator.session_listen names an address this
// host does not have: the listen fails at start (on a cloud VM the public
// address is usually NATed; listen on 0.0.0.0 and advertise the public one).
func (r *Result) listenAddr(ap netip.AddrPort, hostAddrs func() ([]netip.Addr, error)) {
	a := ap.Addr().Unmap()
	if !a.IsValid() || a.IsUnspecified() {
		return
	}
	if hostAddrs == nil {
		hostAddrs = interfaceAddrs
	}
	have, err := hostAddrs()
	if err != nil {
		return
	}
	for _, h := range have {
		if h.Unmap().WithZone("") == a.WithZone("") {
			return
		}
	}
	r.warnf("coordinator.session_listen: %s is not an address of this host, so meshd cannot listen on it (on a cloud VM the public address is NATed: listen on 0.0.0.0:%d and set coordinator.turn.relay_address to the public address)", a, ap.Port())
}

func interfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// loadCRL reads pki.crl ("" means none yet); PEM or DER.
func loadCRL(path string) (*pki.CRL, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, credErr("CRL", err)
	}
	crl, err := pki.ParseCRLPEM(data)
	if err != nil {
		if c, derr := pki.ParseCRLDER(data); derr == nil {
			return c, nil
		}
		return nil, credErr("CRL", fmt.Errorf("%s: %w", path, err))
	}
	return crl, nil
}

// coordinator reads the coordinator's secrets and checks its listeners'
// relations.
func (r *Result) coordinator(cfg *config.Config) error {
	c := &cfg.Coordinator
	keyText, keyFrom := c.GossipKey, "coordinator.gossip_key"
	if c.GossipKeyFile != "" {
		b, err := os.ReadFile(c.GossipKeyFile)
		if err != nil {
			return configErr("coordinator.gossip_key_file: %v", err)
		}
		keyText, keyFrom = string(b), "coordinator.gossip_key_file "+c.GossipKeyFile
	}
	key, err := config.ParseGossipKey(keyText)
	if err != nil {
		return configErr("%s: %v", keyFrom, err)
	}
	r.GossipKey = key

	t := &c.TURN
	if t.Enabled && c.STUN.Enabled && t.Listen != c.STUN.Listen {
		return configErr("coordinator.stun.listen (%s) must equal coordinator.turn.listen (%s) when both are enabled: the embedded TURN server answers STUN on its own socket",
			c.STUN.Listen, t.Listen)
	}
	if !t.Enabled && c.STUN.Enabled && c.STUN.Listen.Addr().IsUnspecified() && !t.RelayAddress.IsValid() {
		return configErr("coordinator.turn.relay_address is required when coordinator.stun.listen (%s) is a wildcard: it is the public address nodes are told to use for STUN",
			c.STUN.Listen)
	}
	if !t.Enabled {
		return nil
	}
	switch {
	case t.AuthSecret != "":
		r.TURNSecret = t.AuthSecret
	case t.AuthSecretFile != "":
		b, err := os.ReadFile(t.AuthSecretFile)
		if err != nil {
			return configErr("coordinator.turn.auth_secret_file: %v", err)
		}
		r.TURNSecret = strings.TrimSpace(string(b))
		if r.TURNSecret == "" {
			return configErr("coordinator.turn.auth_secret_file: %s is empty", t.AuthSecretFile)
		}
	default:
		// Derived from the gossip key, so every coordinator of the cluster
		// shares it and each hands out credentials the others' relays
		// accept (docs/protocol.md, "Relays of other coordinators").
		sec, err := TURNSecretFromGossipKey(key)
		if err != nil {
			return err
		}
		r.TURNSecret = sec
	}
	if t.TLSListen.IsValid() && (t.TLSCert != cfg.PKI.Cert || t.TLSKey != cfg.PKI.Key) {
		cert, err := tls.LoadX509KeyPair(t.TLSCert, t.TLSKey)
		if err != nil {
			return credErr("TURN TLS certificate", err)
		}
		r.TURNTLS = &cert
	}
	return nil
}

// prefixInside reports whether p lies entirely inside one of allowed.
func prefixInside(p netip.Prefix, allowed []netip.Prefix) bool {
	p = p.Masked()
	for _, a := range allowed {
		if a.Addr().BitLen() == p.Addr().BitLen() && a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func prefixList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// turnSecretLabel is the HKDF info that derives the default TURN secret
// from the gossip key.
const turnSecretLabel = "meshd turn static-auth-secret v1"

// TURNSecretFromGossipKey derives a coordinator's default TURN
// static-auth-secret: base64 (standard, padded) of 32 bytes of
// HKDF-SHA256(gossip key, no salt, info "meshd turn static-auth-secret v1").
// Coordinators sharing a gossip key share it; it reveals nothing about the key.
func TURNSecretFromGossipKey(key []byte) (string, error) {
	b, err := hkdf.Key(sha256.New, key, nil, turnSecretLabel, 32)
	if err != nil {
		return "", fmt.Errorf("preflight: TURN secret from the gossip key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}
