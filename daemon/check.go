package daemon

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/pki"
)

// prepared is everything New derives from a configuration before it builds
// a component: the credentials, the CRL, the secrets the configuration
// names by file, and the reloadable settings. Check stops here.
type prepared struct {
	cfg        *config.Config
	creds      *pki.Credentials
	verifier   *pki.Verifier
	crl        *pki.CRL // nil when pki.crl is not set
	gossipKey  []byte   // coordinator only
	turnSecret string   // coordinator with TURN only
	turnTLS    *tls.Certificate
	run        *runConfig
}

// Check validates cfg the way New does — credentials, CRL, secrets, the
// relations between the configuration and the certificate — without
// building or opening anything. `meshd --check` runs it.
func Check(cfg *config.Config) error {
	_, err := prepare(cfg)
	return err
}

// prepare loads and checks what cfg refers to. It opens no socket and
// creates no device.
func prepare(cfg *config.Config) (*prepared, error) {
	if cfg == nil {
		return nil, configErr("no configuration")
	}
	creds, err := pki.LoadCredentials(cfg.PKI.CA, cfg.PKI.Cert, cfg.PKI.Key)
	if err != nil {
		return nil, credErr("certificate", err)
	}
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
	p := &prepared{cfg: cfg, creds: creds, verifier: pki.NewVerifier(creds.CA, creds.Cert)}
	if p.crl, err = loadCRL(cfg.PKI.CRL); err != nil {
		return nil, err
	}
	if p.crl != nil {
		if _, err := p.verifier.UpdateCRL(p.crl); err != nil {
			return nil, credErr("CRL", fmt.Errorf("%s: %w", cfg.PKI.CRL, err))
		}
	}
	if cfg.Coordinator.Enabled {
		if err := p.prepareCoordinator(); err != nil {
			return nil, err
		}
	}
	if p.run, err = newRunConfig(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// loadCRL reads pki.crl ("" means none yet).
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
		// A DER file is fine too.
		if c, derr := pki.ParseCRLDER(data); derr == nil {
			return c, nil
		}
		return nil, credErr("CRL", fmt.Errorf("%s: %w", path, err))
	}
	return crl, nil
}

func (p *prepared) prepareCoordinator() error {
	c := &p.cfg.Coordinator
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
	p.gossipKey = key

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
		p.turnSecret = t.AuthSecret
	case t.AuthSecretFile != "":
		b, err := os.ReadFile(t.AuthSecretFile)
		if err != nil {
			return configErr("coordinator.turn.auth_secret_file: %v", err)
		}
		p.turnSecret = strings.TrimSpace(string(b))
		if p.turnSecret == "" {
			return configErr("coordinator.turn.auth_secret_file: %s is empty", t.AuthSecretFile)
		}
	default:
		// Fine for the embedded server alone: its credentials are handed
		// out over the session, so nobody else needs to know the secret.
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return fmt.Errorf("daemon: random TURN secret: %w", err)
		}
		p.turnSecret = base64.StdEncoding.EncodeToString(b[:])
	}
	if t.TLSListen.IsValid() && (t.TLSCert != p.cfg.PKI.Cert || t.TLSKey != p.cfg.PKI.Key) {
		cert, err := tls.LoadX509KeyPair(t.TLSCert, t.TLSKey)
		if err != nil {
			return credErr("TURN TLS certificate", err)
		}
		p.turnTLS = &cert
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

// isSetup reports whether err is already one of the daemon's setup errors.
func isSetup(err error) bool {
	var se *SetupError
	return errors.As(err, &se)
}
