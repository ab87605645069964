package daemon

import (
	"crypto"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/relay"
	"github.com/meshd/meshd/tunnel"
)

// Member relays (package relay; docs/protocol.md "Member relays").
//
// A node with [relay] enabled runs a relay.Server and announces it in its
// record (discovery.RelayInfo). Every node lists the member relays of the
// registry among its TURN servers (iceServers), with the credentials both
// sides derive from their certificate keys, so links gather a relay
// candidate on each; the link's path policy picks the relayed pair with the
// lowest round trip (tunnel/relaychoice.go). Nothing is configured on the
// nodes that use a relay.

// memberRelayTTL is how long the usernames this node derives stay valid:
// at least 22 h (an allocation keeps its username for its life), and the
// same for an hour, so an ICE attempt's servers do not change with the
// second.
const memberRelayTTL = 23 * time.Hour

// startRelay starts the member relay when relay.enabled. Start only.
func (d *Daemon) startRelay(cfg *config.Config) error {
	rc := cfg.Relay
	if !rc.Enabled {
		return nil
	}
	pub := rc.PublicAddress
	if !pub.IsValid() {
		pub = rc.Listen
	}
	srv, err := relay.New(relay.Options{
		Name:           d.name,
		Key:            func() crypto.PrivateKey { return d.cred().Key },
		Listen:         rc.Listen.String(),
		RelayAddress:   pub.Addr(),
		RelayBind:      rc.Listen.Addr().String(), // allocations on the listener's address
		MaxAllocations: rc.MaxAllocations,
		Member:         d.relayMember,
		Vouched:        d.relayVouched,
		MeshPort: func() uint16 {
			if p := d.meshPorts(); len(p) > 0 {
				return p[0]
			}
			return 0
		},
		Now:           d.now,
		Logger:        d.log.With("component", "relay"),
		AllowLoopback: d.opts.Tuning != nil && d.opts.Tuning.RelayAllowLoopback,
	})
	if err != nil {
		return err
	}
	d.relay.Store(srv)
	d.log.Info("serving as a member relay", "listen", srv.Addr(), "publicAddress", d.relayInfo().Addr, "capacity", srv.Capacity())
	return nil
}

// relayInfo is the record's relay announcement (zero without a relay):
// relay.public_address or relay.listen, with the port the listener got
// when the configuration says 0.
func (d *Daemon) relayInfo() discovery.RelayInfo {
	srv := d.relay.Load()
	if srv == nil {
		return discovery.RelayInfo{}
	}
	cfg := d.startCfg.Relay
	pub := cfg.PublicAddress
	if !pub.IsValid() {
		pub = cfg.Listen
	}
	if pub.Port() == 0 {
		pub = netip.AddrPortFrom(pub.Addr(), srv.Addr().Port())
	}
	return discovery.RelayInfo{Addr: pub, Capacity: uint16(srv.Capacity())}
}

func (d *Daemon) closeRelay() {
	if s := d.relay.Load(); s != nil {
		_ = s.Close()
	}
}

// relayMember is the relay's member lookup: the certificate key of a node
// in the verified registry (the client drops left, expired and revoked
// nodes' records).
func (d *Daemon) relayMember(name string) (crypto.PublicKey, bool) {
	c := d.client.Load()
	if c == nil {
		return nil, false
	}
	rec, ok := c.Peer(name)
	if !ok || rec.Left || rec.Cert == nil {
		return nil, false
	}
	return rec.Cert.Cert.PublicKey, true
}

// relayVouched are the addresses the relay reaches besides its clients':
// the registry's member relays and endpoint hints, and the coordinators'
// TURN hosts (a pair relayed on both sides).
func (d *Daemon) relayVouched() []netip.Addr {
	c := d.client.Load()
	if c == nil {
		return nil
	}
	var out []netip.Addr
	for _, r := range c.Peers() {
		if !r.Relay.IsZero() {
			out = append(out, r.Relay.Addr.Addr())
		}
		for _, e := range r.Endpoints {
			out = append(out, e.Addr())
		}
	}
	if t, ok := c.TURNCredentials(); ok {
		for _, u := range t.URLs {
			if a, ok := urlHost(u); ok {
				out = append(out, a)
			}
		}
	}
	return out
}

// urlHost is the IP host of a stun:/turn: URL.
func urlHost(u string) (netip.Addr, bool) {
	_, rest, ok := strings.Cut(u, ":")
	if !ok {
		return netip.Addr{}, false
	}
	rest, _, _ = strings.Cut(rest, "?")
	host, _, err := net.SplitHostPort(rest)
	if err != nil {
		host = strings.Trim(rest, "[]")
	}
	a, err := netip.ParseAddr(host)
	return a.Unmap(), err == nil
}

// memberRelay is one member relay of the registry as this node uses it.
type memberRelay struct {
	name string
	addr netip.AddrPort
	err  error // why this node cannot use it (key types differ), or nil
}

// memberRelays lists the registry's member relays other than this node's,
// online, in name order.
func (d *Daemon) memberRelays() []memberRelay {
	c := d.client.Load()
	if c == nil {
		return nil
	}
	var out []memberRelay
	for _, r := range c.Peers() {
		if r.Relay.IsZero() || r.Left || r.Name == d.name || !r.Presence.Online || r.Cert == nil {
			continue
		}
		out = append(out, memberRelay{name: r.Name, addr: r.Relay.Addr})
	}
	slices.SortFunc(out, func(a, b memberRelay) int { return strings.Compare(a.name, b.name) })
	return out
}

// memberRelayServers are the member relays as TURN servers with this
// node's credentials for each (iceServers appends them).
func (d *Daemon) memberRelayServers(now time.Time) []tunnel.ICEServer {
	c := d.client.Load()
	if c == nil {
		return nil
	}
	exp := now.Truncate(time.Hour).Add(memberRelayTTL)
	user := relay.Username(d.name, exp)
	key := d.cred().Key
	var out []tunnel.ICEServer
	for _, mr := range d.memberRelays() {
		rec, ok := c.Peer(mr.name)
		if !ok {
			continue
		}
		pw, err := relay.Password(key, rec.Cert.Cert.PublicKey, user, mr.name)
		if err != nil {
			if !errors.Is(err, relay.ErrKeyMismatch) {
				d.log.Warn("cannot use member relay", "relay", mr.name, "error", err)
			}
			continue
		}
		out = append(out, tunnel.ICEServer{URL: memberRelayURL(mr.addr), Username: user, Password: pw})
	}
	return out
}

func memberRelayURL(a netip.AddrPort) string {
	return "turn:" + net.JoinHostPort(a.Addr().String(), strconv.Itoa(int(a.Port()))) + "?transport=udp"
}

// relayNodeOf names the member relay behind a relay label of tunnel's
// Status.RelayServer ("ip:port/udp"), or "".
func (d *Daemon) relayNodeOf(label string) string {
	hp, _, _ := strings.Cut(label, "/")
	ap, err := netip.ParseAddrPort(hp)
	if err != nil {
		return ""
	}
	for _, mr := range d.memberRelays() {
		if mr.addr == ap {
			return mr.name
		}
	}
	return ""
}

// Metrics of the member relay (docs/metrics.md).
var (
	relayAllocationsDesc = prometheus.NewDesc("meshd_relay_allocations", "Allocations the member relay holds.", nil, nil)
	relayCapacityDesc    = prometheus.NewDesc("meshd_relay_capacity", "Allocations the member relay accepts at once (relay.max_allocations).", nil, nil)
	relayAllocsTotalDesc = prometheus.NewDesc("meshd_relay_allocations_total", "Allocations the member relay made.", nil, nil)
	relayRefusedDesc     = prometheus.NewDesc("meshd_relay_refused_total", "Requests the member relay refused, by reason (auth, capacity, peer).", []string{"reason"}, nil)
	relayPacketsDesc     = prometheus.NewDesc("meshd_relay_packets_total", "Datagrams the member relay carried, by direction (to_peer, from_peer).", []string{"direction"}, nil)
	relayBytesDesc       = prometheus.NewDesc("meshd_relay_bytes_total", "Payload bytes the member relay carried, by direction (to_peer, from_peer).", []string{"direction"}, nil)
)

func describeRelay(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{relayAllocationsDesc, relayCapacityDesc, relayAllocsTotalDesc, relayRefusedDesc, relayPacketsDesc, relayBytesDesc} {
		ch <- d
	}
}

// collectRelay reports the member relay's counters, if it runs.
func (d *Daemon) collectRelay(ch chan<- prometheus.Metric) {
	s := d.relay.Load()
	if s == nil {
		return
	}
	st := s.Stats()
	g := func(desc *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, l...)
	}
	c := func(desc *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), l...)
	}
	g(relayAllocationsDesc, float64(st.Allocations))
	g(relayCapacityDesc, float64(s.Capacity()))
	c(relayAllocsTotalDesc, st.AllocationsMade)
	c(relayRefusedDesc, st.AuthRefused, "auth")
	c(relayRefusedDesc, st.QuotaRefused, "capacity")
	c(relayRefusedDesc, st.PeersDenied, "peer")
	c(relayPacketsDesc, st.PacketsRelayed, "to_peer")
	c(relayPacketsDesc, st.PacketsReceived, "from_peer")
	c(relayBytesDesc, st.BytesRelayed, "to_peer")
	c(relayBytesDesc, st.BytesReceived, "from_peer")
}

// relayLabel is a relay label with its member relay's node name in front.
func (d *Daemon) relayLabel(label string) string {
	if n := d.relayNodeOf(label); n != "" {
		return n + " (" + label + ")"
	}
	return label
}

// relayAnswerWindow is how recent a pair's answer must be for relayWhy to
// count its relay as reachable.
const relayAnswerWindow = 5 * time.Second

// relayWhy says why the link uses its relay: the relays this node reaches
// the peer through, each with its best answering pair's RTT, and the rule.
func (d *Daemon) relayWhy(s tunnel.Status) string {
	type seen struct {
		label string
		rtt   time.Duration
		sel   bool
	}
	members := d.memberRelays()
	byLabel := map[string]*seen{}
	var order []string
	now := d.now()
	for _, p := range s.Pairs {
		c := p.Local
		side := ""
		if c.Type != "relay" {
			if p.Remote.Type != "relay" {
				continue
			}
			c, side = p.Remote, " (peer's side)"
		}
		if p.RTT <= 0 || p.LastResponse.IsZero() || now.Sub(p.LastResponse) > relayAnswerWindow {
			continue
		}
		label := c.Addr.Addr().String() + side
		for _, m := range members {
			if m.addr.Addr() == c.Addr.Addr() {
				label = m.name + side
			}
		}
		e := byLabel[label]
		if e == nil {
			e = &seen{label: label, rtt: p.RTT}
			byLabel[label] = e
			order = append(order, label)
		}
		e.rtt = min(e.rtt, p.RTT)
		e.sel = e.sel || p.Selected
	}
	if len(order) == 0 {
		return ""
	}
	slices.SortFunc(order, func(a, b string) int { return int(byLabel[a].rtt - byLabel[b].rtt) })
	var parts []string
	for _, l := range order {
		e := byLabel[l]
		part := fmt.Sprintf("%s %v", e.label, e.rtt.Round(100*time.Microsecond))
		if e.sel {
			part += " (carrying the link)"
		}
		parts = append(parts, part)
	}
	return fmt.Sprintf("; relays answering, by round trip through them: %s; the link moves to another relay when one is at least 30%% and 5 ms faster for %v, or when its relay stops answering",
		strings.Join(parts, ", "), d.relayHold())
}

// relayHold is the links' UpgradeHold (the hold of a relay change).
func (d *Daemon) relayHold() time.Duration {
	t := tunnel.DefaultTimers()
	if tu := d.opts.Tuning; tu != nil && tu.TunnelTimers != nil && tu.TunnelTimers.UpgradeHold > 0 {
		t.UpgradeHold = tu.TunnelTimers.UpgradeHold
	}
	return t.UpgradeHold
}
