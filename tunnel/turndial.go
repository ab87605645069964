package tunnel

import (
	"context"
	"crypto/tls"
	"net"
	"time"
)

// turnDialer connects to TURN servers over TCP for pion's gatherer (it is
// installed as the agent's proxy dialer, which pion uses for every
// turn:...?transport=tcp and turns: URL). For turns: servers it runs TLS
// itself so that the configured roots (Options.TURNTLSConfig) apply, rather
// than pion's system-roots-or-nothing choice. Dials are bounded by the
// session's context, so closing a link never waits on a TURN server.
type turnDialer struct {
	ctx       context.Context
	timeout   time.Duration
	tlsConfig *tls.Config       // nil = system roots
	tlsNames  map[string]string // "host:port" of turns: servers -> TLS server name
	gates     *idleGates        // nil: no idle gating
	relays    *relayGuard       // registers the streams for the fast path; nil: none
}

// Dial connects to a TURN server; addr is "host:port" from the URL.
func (d *turnDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.timeout)
	defer cancel()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	name, secure := d.tlsNames[addr]
	if !secure {
		return d.gated(c), nil
	}
	cfg := &tls.Config{}
	if d.tlsConfig != nil {
		cfg = d.tlsConfig.Clone()
	}
	cfg.ServerName = name
	if cfg.MinVersion < tls.VersionTLS12 {
		cfg.MinVersion = tls.VersionTLS12
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	return d.gated(tc), nil
}

// gated wraps a TURN stream: the idle gate, the permission back-off relay
// sockets have, and the fast data path (turntcpperm.go, relaystream.go).
func (d *turnDialer) gated(c net.Conn) net.Conn {
	return newTurnStream(c, d.gates, d.relays)
}
