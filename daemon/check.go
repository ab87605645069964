package daemon

import (
	"crypto/tls"
	"errors"
	"net/netip"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/internal/preflight"
	"github.com/meshd/meshd/pki"
)

// prepared is everything New derives from a configuration before it builds
// a component: the credentials, the CRL, the secrets the configuration
// names by file, and the reloadable settings. Check stops here.
type prepared struct {
	cfg          *config.Config
	creds        *pki.Credentials
	verifier     *pki.Verifier
	crl          *pki.CRL // nil when pki.crl is not set
	gossipKey    []byte   // coordinator only
	turnSecret   string   // coordinator with TURN only
	turnTLS      *tls.Certificate
	controlGroup string   // "" when the socket is root's only
	warnings     []string // preflight's, for the caller to show
	run          *runConfig
}

// Check validates cfg the way New does — credentials, CRL, secrets, the
// relations between the configuration and the certificate, the control
// group — without building or opening anything, and returns the warnings
// New would log. `meshd --check` runs it; `meshctl config check` runs the
// same preflight.Run.
func Check(cfg *config.Config) (warnings []string, err error) {
	p, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	return p.warnings, nil
}

// prepare loads and checks what cfg refers to with preflight.Run, the one
// check meshctl shares. It opens no socket and creates no device.
func prepare(cfg *config.Config) (*prepared, error) {
	r, err := preflight.Run(cfg, preflight.Options{})
	if err != nil {
		return nil, setupFromPreflight(err)
	}
	p := &prepared{
		cfg:          cfg,
		creds:        r.Creds,
		verifier:     r.Verifier,
		crl:          r.CRL,
		gossipKey:    r.GossipKey,
		turnSecret:   r.TURNSecret,
		turnTLS:      r.TURNTLS,
		controlGroup: r.ControlGroup,
		warnings:     r.Warnings,
	}
	if p.run, err = newRunConfig(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// setupFromPreflight maps a preflight error onto the daemon's kinds,
// keeping its text: meshd and meshctl print the same line.
func setupFromPreflight(err error) error {
	var pe *preflight.Error
	if !errors.As(err, &pe) {
		return err
	}
	kind := ErrConfig
	if errors.Is(err, preflight.ErrCredentials) {
		kind = ErrCredentials
	}
	return &SetupError{Kind: kind, What: pe.What, Err: pe.Err}
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
