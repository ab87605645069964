package daemon

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"github.com/meshd/meshd/tunnel/record"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/tunnel"
)

// This file maps configuration sections onto the leaves' Options: leaves
// never import config.

// runConfig is the running configuration with what the control loop derives
// from it. It is immutable; Reload builds a new one and swaps the pointer.
type runConfig struct {
	// cfg is the effective configuration: the file as loaded at start, with
	// the reloadable keys of later reloads applied. Keys that need a restart
	// keep their start value, so a later reload still reports them.
	cfg      *config.Config
	firewall overlay.FirewallConfig
	// turnSecrets are the static-auth-secrets of ice.turn_servers, by
	// index ("" for static credentials), read once per load or reload from
	// secret or secret_file.
	turnSecrets []string
}

func newRunConfig(cfg *config.Config) (*runConfig, error) {
	rc := &runConfig{cfg: cfg, firewall: firewallFrom(cfg.Firewall)}
	for i, s := range cfg.ICE.TURNServers {
		sec, err := s.ReadSecret()
		if err != nil {
			return nil, configErr("ice.turn_servers[%d].secret_file: %v", i, err)
		}
		rc.turnSecrets = append(rc.turnSecrets, sec)
	}
	return rc, nil
}

// denyAllPeer is a peer name no certificate can carry (names start with a
// letter or digit): a rule matching only it matches nothing. The overlay
// reads an empty outbound list as "allow all", the configuration's
// "outbound = []" means "deny all"; one never-matching rule bridges them.
const denyAllPeer = "-"

// firewallFrom maps [firewall] onto the overlay's rule set.
func firewallFrom(fw config.Firewall) overlay.FirewallConfig {
	out := overlay.FirewallConfig{
		Inbound:      rulesFrom(fw.Inbound),
		Outbound:     rulesFrom(fw.Outbound),
		TCPTimeout:   fw.Conntrack.TCPTimeout.Std(),
		UDPTimeout:   fw.Conntrack.UDPTimeout.Std(),
		OtherTimeout: fw.Conntrack.DefaultTimeout.Std(),
	}
	if len(fw.Outbound) == 0 {
		out.Outbound = []overlay.Rule{{Peers: []string{denyAllPeer}}}
	}
	return out
}

func rulesFrom(rs []config.Rule) []overlay.Rule {
	if len(rs) == 0 {
		return nil
	}
	out := make([]overlay.Rule, 0, len(rs))
	for _, r := range rs {
		o := overlay.Rule{Groups: slices.Clone(r.Groups)}
		switch r.Proto {
		case config.ProtoTCP:
			o.Proto = overlay.ProtoTCP
		case config.ProtoUDP:
			o.Proto = overlay.ProtoUDP
		case config.ProtoICMP:
			o.Proto = overlay.ProtoICMP
		default:
			o.Proto = overlay.ProtoAny
		}
		if !r.Port.IsAny() {
			o.Ports = []overlay.PortRange{{First: r.Port.First, Last: r.Port.Last}}
		}
		if r.Peer != "" && r.Peer != config.AnyPeer {
			o.Peers = []string{r.Peer}
		}
		if r.CIDR.IsValid() {
			o.CIDRs = []netip.Prefix{r.CIDR.Masked()}
		}
		if r.LocalCIDR.IsValid() {
			o.LocalCIDRs = []netip.Prefix{r.LocalCIDR.Masked()}
		}
		out = append(out, o)
	}
	return out
}

// tunnelTimers maps [ice] onto the link timers. The path timeout (how long
// the selected pair may go unanswered before traffic moves) must exceed the
// keepalive interval; it follows the keepalive when that is configured long.
func tunnelTimers(ice config.ICE, data config.Data) tunnel.Timers {
	t := tunnel.DefaultTimers()
	t.RekeyInterval = data.RekeyInterval.Std()
	t.CheckInterval = ice.CheckInterval.Std()
	t.KeepaliveInterval = ice.KeepaliveInterval.Std()
	t.DisconnectedTimeout = ice.DisconnectedTimeout.Std()
	t.FailedTimeout = ice.FailedTimeout.Std()
	if t.PathTimeout <= 2*t.KeepaliveInterval {
		t.PathTimeout = 2 * t.KeepaliveInterval
	}
	return t
}

// interfacePolicy maps ice.include_interfaces and ice.exclude_interfaces
// (shell patterns, validated by config) onto the links' candidate
// interface policy, with the TUN and the mesh prefixes that are never used.
func interfacePolicy(ice config.ICE, tun string, mesh []netip.Prefix) tunnel.InterfacePolicy {
	return tunnel.InterfacePolicy{
		Include: slices.Clone(ice.IncludeInterfaces),
		Exclude: slices.Clone(ice.ExcludeInterfaces),
		OwnTUN:  tun,
		Overlay: slices.Clone(mesh),
	}
}

// dataCipher maps data.cipher onto the record layer's preference. config
// has already validated the value, so an error here is a schema drift.
func dataCipher(data config.Data) (record.Cipher, error) {
	return record.ParseCipher(string(data.Cipher))
}

// coordinatorOptions maps [coordinator] onto the embedded coordinator.
func (d *Daemon) coordinatorOptions(p *prepared) discovery.CoordinatorOptions {
	c := &p.cfg.Coordinator
	o := discovery.CoordinatorOptions{
		Credentials:  p.creds,
		Verifier:     p.verifier,
		Logger:       d.log.With("component", "coordinator"),
		ListenAddr:   c.SessionListen.String(),
		GossipAddr:   c.GossipBind.String(),
		GossipKey:    p.gossipKey,
		Label:        c.ClusterLabel,
		Join:         slices.Clone(c.Peers),
		TombstoneTTL: c.TombstoneTTL.Std(),
		// The registry survives a restart (discovery.CoordinatorCacheFile).
		StateDir: p.cfg.Node.StateDir,
	}
	if c.GossipAdvertise.IsValid() {
		o.GossipAdvertise = c.GossipAdvertise.String()
	}
	t := &c.TURN
	relayAddr := t.RelayAddress
	switch {
	case t.Enabled:
		var relay6 netip.Addr
		relayAddr, relay6 = turnRelayAddrs(*t)
		o.TURN = discovery.TURNOptions{
			Secret:         p.turnSecret,
			Realm:          t.Realm,
			UDPAddr:        t.Listen.String(),
			TLSCertificate: p.turnTLS,
			RelayAddress:   relayAddr,
			RelayAddress6:  relay6,
			RelayPortMin:   uint16(t.RelayPortMin),
			RelayPortMax:   uint16(t.RelayPortMax),
			CredentialTTL:  t.CredentialTTL.Std(),
			AllowedPeers:   slices.Clone(t.AllowedPeerIPs),
			DeniedPeers:    slices.Clone(t.DeniedPeerIPs),
			MeshPorts:      d.meshPorts,
		}
		if t.TCPListen.IsValid() {
			o.TURN.TCPAddr = t.TCPListen.String()
		}
		if t.TLSListen.IsValid() {
			o.TURN.TLSAddr = t.TLSListen.String()
		}
		// The configuration's 0 means unlimited, discovery's 0 means its
		// default.
		o.TURN.MaxAllocationsPerUser = t.UserQuota
		if t.UserQuota == 0 {
			o.TURN.MaxAllocationsPerUser = math.MaxInt32
		}
	case c.STUN.Enabled:
		if !relayAddr.IsValid() {
			relayAddr = c.STUN.Listen.Addr()
		}
		// No secret: the embedded server answers STUN only.
		o.TURN = discovery.TURNOptions{UDPAddr: c.STUN.Listen.String(), RelayAddress: relayAddr}
	}
	if tu := d.opts.Tuning; tu != nil {
		o.Timers = tu.GossipTimers
		o.SweepInterval = tu.CoordinatorSweep
		o.KeepaliveInterval = tu.CoordinatorKeepalive
		o.RejoinInterval = tu.CoordinatorRejoin
		o.SignalTimeout = tu.CoordinatorSignalAfter
	}
	return o
}

// turnRelayAddrs maps coordinator.turn.relay_address and relay_address6
// (validated by config) onto the relay's addresses: relay_address defaults
// to listen's IP unless that is a wildcard, or IPv6 where relay_address6
// names the public IPv6 address.
func turnRelayAddrs(t config.TURN) (relay, relay6 netip.Addr) {
	relay, relay6 = t.RelayAddress, t.RelayAddress6
	if !relay.IsValid() {
		relay = t.Listen.Addr()
		if relay.IsUnspecified() || (relay6.IsValid() && relay.Unmap().Is6()) {
			relay = netip.Addr{}
		}
	}
	return relay, relay6
}

// turnREST derives coturn static-auth-secret (TURN REST API) credentials:
// username "<unix expiry>:<name>", password base64(HMAC-SHA1(secret,
// username)).
func turnREST(secret, name string, expires time.Time) (user, pass string) {
	user = strconv.FormatInt(expires.Unix(), 10) + ":" + name
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(user))
	return user, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// restCredentialTTL is the lifetime of credentials derived for
// [[ice.turn_servers]] entries with a secret; they are derived afresh at
// every ICE attempt.
const restCredentialTTL = 12 * time.Hour

// iceServers is tunnel's Options.Servers: the coordinators' STUN/TURN
// servers with the session's current credentials, then the configured
// extras. It reads the running configuration, so a reload of
// ice.stun_servers / ice.turn_servers applies at the next ICE attempt.
func (d *Daemon) iceServers() []tunnel.ICEServer {
	var out []tunnel.ICEServer
	now := d.now()
	if c := d.client.Load(); c != nil {
		if t, ok := c.TURNCredentials(); ok && (t.Expires.IsZero() || now.Before(t.Expires)) {
			for _, u := range t.URLs {
				out = append(out, tunnel.ICEServer{URL: u, Username: t.Username, Password: t.Password})
			}
		}
	}
	run := d.run.Load()
	cfg := run.cfg
	for _, u := range cfg.ICE.STUNServers {
		out = append(out, tunnel.ICEServer{URL: u})
	}
	for i, s := range cfg.ICE.TURNServers {
		user, pass := s.Username, s.Credential
		if i < len(run.turnSecrets) && run.turnSecrets[i] != "" {
			user, pass = turnREST(run.turnSecrets[i], d.name, now.Add(restCredentialTTL))
		}
		out = append(out, tunnel.ICEServer{URL: s.URL, Username: user, Password: pass})
	}
	return append(out, d.memberRelayServers(now)...)
}

// meshPorts is the UDP port of this node's links, which the embedded TURN
// server lets peers relay to on this host's own addresses (a coordinator is
// a mesh node too).
func (d *Daemon) meshPorts() []uint16 {
	if d.tm == nil {
		return nil
	}
	if a, ok := d.tm.LocalAddr().(*net.UDPAddr); ok && a.Port > 0 {
		return []uint16{uint16(a.Port)}
	}
	return nil
}
