package config

import (
	"fmt"
	"net/netip"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// validator checks the relations between keys once the file is decoded,
// fills in the defaults derived from other keys, and resolves relative paths.
type validator struct {
	p   *problems
	cfg *Config
	dir string // directory of the configuration file
}

func (v *validator) run() {
	v.node()
	v.pki()
	v.tun()
	v.join()
	v.coordinator()
	v.ice()
	v.data()
	v.firewall()
	v.routes()
	v.control()
	v.metrics()
	v.relay()
	v.dns()
	v.listeners()
}

// resolve makes a relative path relative to the configuration file.
func (v *validator) resolve(p *string) {
	if *p != "" && !filepath.IsAbs(*p) {
		*p = filepath.Join(v.dir, *p)
	}
}

func (v *validator) positive(key string, d Duration) {
	if d <= 0 {
		v.p.addf(key, ErrInvalid, "%s: must be positive", d)
	}
}

func (v *validator) between(key string, d, lo, hi Duration) {
	if d < lo || d > hi {
		v.p.addf(key, ErrInvalid, "%s is outside %s-%s", d, lo, hi)
	}
}

func (v *validator) node() {
	n := &v.cfg.Node
	if n.Name != "" {
		if err := checkName(n.Name, false); err != nil {
			v.p.add("node.name", ErrInvalid, err.Error())
		} else if n.Name == AnyPeer {
			v.p.addf("node.name", ErrInvalid, "%q is reserved (firewall rules use it for every peer)", AnyPeer)
		}
	}
	if n.StateDir == "" {
		v.p.add("node.state_dir", ErrInvalid, "must not be empty")
	}
	v.resolve(&n.StateDir)
}

func (v *validator) pki() {
	k := &v.cfg.PKI
	for _, f := range []struct {
		key string
		val *string
	}{{"pki.ca", &k.CA}, {"pki.cert", &k.Cert}, {"pki.key", &k.Key}} {
		if *f.val == "" {
			v.p.addf(f.key, ErrRequired, "required: path of the %s PEM file", map[string]string{
				"pki.ca": "mesh CA certificate", "pki.cert": "node certificate", "pki.key": "node private key",
			}[f.key])
		}
		v.resolve(f.val)
	}
	v.resolve(&k.CRL)
}

func (v *validator) tun() {
	t := &v.cfg.Tun
	if err := checkIfName(t.Name); err != nil {
		v.p.add("tun.name", ErrInvalid, err.Error())
	}
	// Above MaxTunMTU a packet does not fit in one data record: the tunnel
	// would refuse it, and the rest of its batch, at run time.
	if t.MTU != 0 && (t.MTU < MinTunMTU || t.MTU > MaxTunMTU) {
		v.p.addf("tun.mtu", ErrInvalid, "%d is outside %d-%d (0 means auto; a data record carries at most %d bytes)", t.MTU, MinTunMTU, MaxTunMTU, MaxTunMTU)
	}
}

func (v *validator) join() {
	j := &v.cfg.Join
	v.hostPorts("join.coordinators", j.Coordinators, DefaultSessionPort)
	if len(j.Coordinators) == 0 && !v.cfg.Coordinator.Enabled {
		key := "join.coordinators"
		if _, ok := v.p.pos["join.coordinators"]; !ok {
			key = "join"
		}
		v.p.add(key, ErrRequired, `at least one coordinator address ("host:port") is required unless coordinator.enabled = true`)
	}
	seen := map[string]bool{}
	for i, n := range j.CoordinatorNames {
		key := indexKey("join.coordinator_names", i)
		if err := checkName(n, false); err != nil {
			v.p.add(key, ErrInvalid, err.Error())
		} else if seen[n] {
			v.p.addf(key, ErrInvalid, "%q is listed twice", n)
		}
		seen[n] = true
	}
}

// hostPorts normalizes a list of dial addresses in place and reports bad
// entries and duplicates.
func (v *validator) hostPorts(key string, list []string, defPort int) {
	seen := map[string]int{}
	for i := range list {
		elem := indexKey(key, i)
		hp, err := normalizeHostPort(list[i], defPort)
		if err != nil {
			v.p.add(elem, ErrInvalid, err.Error())
			continue
		}
		list[i] = hp
		if j, dup := seen[hp]; dup {
			v.p.addf(elem, ErrInvalid, "%s is already listed as %s", hp, indexKey(key, j))
			continue
		}
		seen[hp] = i
	}
}

func (v *validator) coordinator() {
	c := &v.cfg.Coordinator
	on := c.Enabled
	if c.GossipKey != "" {
		if _, err := ParseGossipKey(c.GossipKey); err != nil {
			v.p.add("coordinator.gossip_key", ErrInvalid, err.Error())
		}
	}
	if c.GossipKey != "" && c.GossipKeyFile != "" {
		v.p.add("coordinator.gossip_key_file", ErrInvalid, "set either coordinator.gossip_key or coordinator.gossip_key_file, not both")
	}
	v.resolve(&c.GossipKeyFile)
	if len(c.ClusterLabel) > 255 {
		v.p.addf("coordinator.cluster_label", ErrInvalid, "is %d bytes; at most 255", len(c.ClusterLabel))
	}
	v.hostPorts("coordinator.peers", c.Peers, DefaultGossipPort)
	v.positive("coordinator.tombstone_ttl", c.TombstoneTTL)
	v.specific("coordinator.gossip_advertise", c.GossipAdvertise.Addr(), c.GossipAdvertise.IsValid())

	t := &c.TURN
	if t.RelayPortMin < 1 || t.RelayPortMin > 65535 {
		v.p.addf("coordinator.turn.relay_port_min", ErrInvalid, "%d is not a port (1-65535)", t.RelayPortMin)
	}
	if t.RelayPortMax < 1 || t.RelayPortMax > 65535 {
		v.p.addf("coordinator.turn.relay_port_max", ErrInvalid, "%d is not a port (1-65535)", t.RelayPortMax)
	} else if t.RelayPortMax < t.RelayPortMin {
		v.p.addf("coordinator.turn.relay_port_max", ErrInvalid, "%d is below coordinator.turn.relay_port_min (%d)", t.RelayPortMax, t.RelayPortMin)
	}
	if t.AuthSecret != "" && t.AuthSecretFile != "" {
		v.p.add("coordinator.turn.auth_secret_file", ErrInvalid, "set either coordinator.turn.auth_secret or coordinator.turn.auth_secret_file, not both")
	}
	v.resolve(&t.AuthSecretFile)
	v.positive("coordinator.turn.credential_ttl", t.CredentialTTL)
	if t.UserQuota < 0 {
		v.p.addf("coordinator.turn.user_quota", ErrInvalid, "%d is negative (0 means unlimited)", t.UserQuota)
	}
	v.specific("coordinator.turn.relay_address", t.RelayAddress, t.RelayAddress.IsValid())
	v.specific("coordinator.turn.relay_address6", t.RelayAddress6, t.RelayAddress6.IsValid())
	if a := t.RelayAddress6; a.IsValid() && (a.Is4() || a.Is4In6()) {
		v.p.addf("coordinator.turn.relay_address6", ErrInvalid, "%s is not an IPv6 address (an IPv4 relay address goes in coordinator.turn.relay_address)", a)
	} else if a.IsValid() && t.RelayAddress.IsValid() && !t.RelayAddress.Unmap().Is4() {
		v.p.addf("coordinator.turn.relay_address6", ErrInvalid, "coordinator.turn.relay_address (%s) is IPv6 already: relay_address6 is the IPv6 relay address beside an IPv4 relay_address", t.RelayAddress)
	}
	v.prefixes("coordinator.turn.allowed_peer_ips", t.AllowedPeerIPs)
	v.prefixes("coordinator.turn.denied_peer_ips", t.DeniedPeerIPs)
	v.resolve(&t.TLSCert)
	v.resolve(&t.TLSKey)

	if !on {
		return
	}
	if !c.SessionListen.IsValid() {
		v.p.add("coordinator.session_listen", ErrRequired,
			`required when coordinator.enabled = true: the address nodes connect to, e.g. "0.0.0.0:7443" (all addresses) or "203.0.113.7:7443"`)
	} else {
		// The other listeners follow session_listen's IP, so a coordinator
		// bound to one address opens nothing on another; with port 0 (tests)
		// they take free ports too.
		ip := c.SessionListen.Addr()
		derive := func(port uint16) netip.AddrPort {
			if c.SessionListen.Port() == 0 {
				port = 0
			}
			return netip.AddrPortFrom(ip, port)
		}
		if !c.GossipBind.IsValid() {
			c.GossipBind = derive(DefaultGossipPort)
		}
		if !c.STUN.Listen.IsValid() {
			c.STUN.Listen = derive(DefaultSTUNPort)
		}
		if !t.Listen.IsValid() {
			t.Listen = derive(DefaultSTUNPort)
		}
	}
	if c.GossipKey == "" && c.GossipKeyFile == "" {
		v.p.add("coordinator.gossip_key", ErrRequired,
			"coordinator.gossip_key or coordinator.gossip_key_file is required when coordinator.enabled = true (make one with `meshctl config gossip-key`)")
	}
	if c.ClusterLabel == "" {
		// memberlist accepts an empty label, but then two meshes sharing a
		// network would merge if they also shared a key; keep it explicit.
		v.p.add("coordinator.cluster_label", ErrInvalid, "must not be empty")
	}
	if t.Enabled {
		if t.Realm == "" {
			v.p.add("coordinator.turn.realm", ErrInvalid, "must not be empty")
		}
		if !t.RelayAddress.IsValid() && !t.RelayAddress6.IsValid() && t.Listen.IsValid() && t.Listen.Addr().IsUnspecified() {
			v.p.addf("coordinator.turn.relay_address", ErrRequired,
				"required when coordinator.turn.listen (%s) is a wildcard address: the public IP peers reach relays on", t.Listen)
		}
		if t.TLSListen.IsValid() {
			if t.TLSCert == "" {
				t.TLSCert = v.cfg.PKI.Cert
			}
			if t.TLSKey == "" {
				t.TLSKey = v.cfg.PKI.Key
			}
		}
	}
}

// specific rejects an IP that cannot be advertised to others.
func (v *validator) specific(key string, a netip.Addr, set bool) {
	if set && (a.IsUnspecified() || a.IsMulticast()) {
		v.p.addf(key, ErrInvalid, "%s cannot be advertised: use an address other hosts can reach", a)
	}
}

func (v *validator) ice() {
	c := &v.cfg.ICE
	if c.Port < 0 || c.Port > 65535 {
		v.p.addf("ice.port", ErrInvalid, "%d is not a port (0-65535; 0 means random)", c.Port)
	}
	for i, u := range c.STUNServers {
		if _, err := parseICEURL(u, "stun"); err != nil {
			v.p.add(indexKey("ice.stun_servers", i), ErrInvalid, err.Error())
		}
	}
	for i := range c.TURNServers {
		s := &c.TURNServers[i]
		key := indexKey("ice.turn_servers", i)
		if s.URL == "" {
			v.p.add(key+".url", ErrRequired, `required: "turn:host:port?transport=udp" or "turns:host:port"`)
		} else if _, err := parseICEURL(s.URL, "turn", "turns"); err != nil {
			v.p.add(key+".url", ErrInvalid, err.Error())
		}
		static := s.Username != "" || s.Credential != ""
		switch {
		case static && s.Secret != "":
			v.p.add(key+".secret", ErrInvalid, "set either username and credential or secret, not both")
		case static && s.SecretFile != "":
			v.p.add(key+".secret_file", ErrInvalid, "set either username and credential or secret_file, not both")
		case s.Secret != "" && s.SecretFile != "":
			v.p.add(key+".secret_file", ErrInvalid, "set either secret or secret_file, not both")
		case static && s.Username == "":
			v.p.add(key+".credential", ErrRequired, "credential is set but username is not")
		case static && s.Credential == "":
			v.p.add(key+".username", ErrRequired, "username is set but credential is not")
		case !static && s.Secret == "" && s.SecretFile == "":
			v.p.add(key, ErrRequired, "TURN servers need credentials: username and credential, or secret or secret_file (coturn static-auth-secret)")
		}
		v.resolve(&s.SecretFile)
	}
	v.positive("ice.disconnected_timeout", c.DisconnectedTimeout)
	v.positive("ice.failed_timeout", c.FailedTimeout)
	v.positive("ice.keepalive_interval", c.KeepaliveInterval)
	v.positive("ice.check_interval", c.CheckInterval)
	if c.DisconnectedTimeout > 0 && c.FailedTimeout > 0 && c.FailedTimeout <= c.DisconnectedTimeout {
		v.p.addf("ice.failed_timeout", ErrInvalid, "%s must be longer than ice.disconnected_timeout (%s)", c.FailedTimeout, c.DisconnectedTimeout)
	}
	if c.KeepaliveInterval > 0 && c.DisconnectedTimeout > 0 && c.KeepaliveInterval >= c.DisconnectedTimeout {
		v.p.addf("ice.keepalive_interval", ErrInvalid, "%s must be shorter than ice.disconnected_timeout (%s), or every idle link would look disconnected", c.KeepaliveInterval, c.DisconnectedTimeout)
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"ice.include_interfaces", c.IncludeInterfaces}, {"ice.exclude_interfaces", c.ExcludeInterfaces}} {
		for i, pat := range l.list {
			if pat == "" {
				v.p.add(indexKey(l.key, i), ErrInvalid, "empty interface pattern")
			} else if _, err := path.Match(pat, ""); err != nil {
				v.p.addf(indexKey(l.key, i), ErrInvalid, "%q is not a valid pattern (shell syntax: *, ?, [a-z])", pat)
			}
		}
	}
}

func (v *validator) data() {
	d := &v.cfg.Data
	v.between("data.rekey_interval", d.RekeyInterval, Duration(10*time.Second), Duration(24*time.Hour))
	// The tunnel refuses more than one send key's record limit, which would
	// fail every link at run time instead of here.
	if d.RekeyRecords < MinRekeyRecords || d.RekeyRecords > MaxRekeyRecords {
		v.p.addf("data.rekey_records", ErrInvalid, "%d is outside %d-%d (2^32, the most records one key may seal)", d.RekeyRecords, MinRekeyRecords, MaxRekeyRecords)
	}
}

func (v *validator) firewall() {
	f := &v.cfg.Firewall
	v.rules("firewall.inbound", f.Inbound)
	v.rules("firewall.outbound", f.Outbound)
	v.positive("firewall.conntrack.tcp_timeout", f.Conntrack.TCPTimeout)
	v.positive("firewall.conntrack.udp_timeout", f.Conntrack.UDPTimeout)
	v.positive("firewall.conntrack.default_timeout", f.Conntrack.DefaultTimeout)
}

// rules fills rule defaults in place and checks each rule.
func (v *validator) rules(key string, rules []Rule) {
	for i := range rules {
		r := &rules[i]
		rk := indexKey(key, i)
		if r.Proto == "" {
			r.Proto = ProtoAny
		}
		if r.Port == (PortRange{}) {
			r.Port = AnyPort
		}
		if r.Proto == ProtoICMP && !r.Port.IsAny() {
			v.p.addf(rk+".port", ErrInvalid, "%q: ICMP has no ports; remove port or set proto to tcp, udp or any", r.Port)
		}
		if r.Peer != "" && r.Peer != AnyPeer {
			if err := checkName(r.Peer, false); err != nil {
				v.p.add(rk+".peer", ErrInvalid, err.Error())
			}
		}
		for j, g := range r.Groups {
			if err := checkName(g, true); err != nil {
				v.p.add(indexKey(rk+".groups", j), ErrInvalid, err.Error())
			}
		}
		if r.Peer == "" && len(r.Groups) == 0 && !r.CIDR.IsValid() && !r.LocalCIDR.IsValid() {
			v.p.addf(rk, ErrInvalid, "rule selects no peers: set peer, groups, cidr or local_cidr (peer = %q matches every peer)", AnyPeer)
		}
	}
}

func (v *validator) routes() {
	r := &v.cfg.Routes
	v.prefixes("routes.advertise", r.Advertise)
	v.prefixes("routes.accept", r.Accept)
}

// prefixes reports empty entries and entries that overlap an earlier one.
func (v *validator) prefixes(key string, list []netip.Prefix) {
	for i, p := range list {
		if !p.IsValid() {
			v.p.add(indexKey(key, i), ErrInvalid, `"" is not a CIDR prefix`)
			continue
		}
		for j := 0; j < i; j++ {
			if list[j].IsValid() && list[j].Overlaps(p) {
				v.p.addf(indexKey(key, i), ErrInvalid, "%s overlaps %s (%s)", p, indexKey(key, j), list[j])
				break
			}
		}
	}
}

// maxSocketPath is the longest path a unix socket address can hold on Linux
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

func (v *validator) control() {
	c := &v.cfg.Control
	if c.Socket == "" {
		v.p.add("control.socket", ErrInvalid, "must not be empty")
	} else {
		v.resolve(&c.Socket)
		if len(c.Socket) > maxSocketPath {
			v.p.addf("control.socket", ErrInvalid, "%s is %d bytes; unix socket paths hold at most %d", c.Socket, len(c.Socket), maxSocketPath)
		}
	}
	if c.Group != "" && (len(c.Group) > 32 || strings.ContainsAny(c.Group, ":/ \t\n")) {
		v.p.addf("control.group", ErrInvalid, "%q is not a valid group name", c.Group)
	}
}

func (v *validator) metrics() {
	m := &v.cfg.Metrics
	if m.Enabled && !m.Listen.IsValid() {
		v.p.add("metrics.listen", ErrRequired, `required when metrics.enabled = true, e.g. "127.0.0.1:9477"`)
	}
}

func (v *validator) relay() {
	r := &v.cfg.Relay
	if !r.Enabled {
		return
	}
	if !r.Listen.IsValid() {
		v.p.add("relay.listen", ErrRequired, `required when relay.enabled = true, e.g. "0.0.0.0:3479"`)
	}
	switch pa := r.PublicAddress; {
	case pa.IsValid() && pa.Addr().IsUnspecified():
		v.p.addf("relay.public_address", ErrInvalid, "%v is not an address members can reach (write \"IP:port\")", pa)
	case !pa.IsValid() && r.Listen.IsValid() && r.Listen.Addr().IsUnspecified():
		v.p.add("relay.public_address", ErrRequired, "required when relay.listen's IP is unspecified: the address members reach the relay at")
	}
	if r.MaxAllocations < 1 || r.MaxAllocations > 65535 {
		v.p.addf("relay.max_allocations", ErrInvalid, "%d: want 1-65535", r.MaxAllocations)
	}
}

func (v *validator) dns() {
	for _, f := range v.cfg.DNS.Forward {
		if !f.IsValid() || f.Port() == 0 || f.Addr().IsUnspecified() {
			v.p.addf("dns.forward", ErrInvalid, "%v is not an upstream resolver address (write \"IP:port\", e.g. \"192.0.2.53:53\")", f)
		}
	}
	if len(v.cfg.DNS.Forward) > maxDNSForward {
		v.p.addf("dns.forward", ErrInvalid, "%d upstream resolvers: at most %d", len(v.cfg.DNS.Forward), maxDNSForward)
	}
}

// maxDNSForward bounds dns.forward: each is tried in turn while a query
// waits.
const maxDNSForward = 4

// listener is one socket the configuration asks for.
type listener struct {
	key   string
	proto string // "tcp" or "udp"
	addr  netip.AddrPort
}

// covers reports whether l, bound to a wildcard, also takes the port on
// addr. The coordinator's session, STUN and TURN listeners open 0.0.0.0 as
// IPv4 only (discovery's listenNetwork); Go opens other 0.0.0.0 listeners
// (memberlist's gossip, metrics, the member relay) dual-stack, and `::`
// always takes both families.
func (l listener) covers(addr netip.Addr) bool {
	w := l.addr.Addr()
	if !w.IsUnspecified() {
		return false
	}
	if w.Is4() && ipv4OnlyWildcard[l.key] {
		return addr.Is4() || addr.Is4In6()
	}
	return true
}

// ipv4OnlyWildcard names the listeners that open 0.0.0.0 as IPv4 only.
var ipv4OnlyWildcard = map[string]bool{
	"coordinator.session_listen": true, "coordinator.stun.listen": true,
	"coordinator.turn.listen": true, "coordinator.turn.tcp_listen": true, "coordinator.turn.tls_listen": true,
}

// listeners reports two sockets of one protocol bound to the same port on
// overlapping addresses, which would fail at start with "address in use".
func (v *validator) listeners() {
	c := &v.cfg.Coordinator
	var ls []listener
	if c.Enabled {
		ls = append(ls,
			listener{"coordinator.session_listen", "tcp", c.SessionListen},
			listener{"coordinator.gossip_bind", "tcp", c.GossipBind},
			listener{"coordinator.gossip_bind", "udp", c.GossipBind})
		if c.STUN.Enabled {
			ls = append(ls, listener{"coordinator.stun.listen", "udp", c.STUN.Listen})
		}
		if c.TURN.Enabled {
			ls = append(ls,
				listener{"coordinator.turn.listen", "udp", c.TURN.Listen},
				listener{"coordinator.turn.tcp_listen", "tcp", c.TURN.TCPListen},
				listener{"coordinator.turn.tls_listen", "tcp", c.TURN.TLSListen})
		}
	}
	if v.cfg.ICE.Port > 0 && v.cfg.ICE.Port <= 65535 {
		ls = append(ls, listener{"ice.port", "udp", netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(v.cfg.ICE.Port))})
	}
	if v.cfg.Metrics.Enabled {
		ls = append(ls, listener{"metrics.listen", "tcp", v.cfg.Metrics.Listen})
	}
	if v.cfg.Relay.Enabled {
		ls = append(ls, listener{"relay.listen", "udp", v.cfg.Relay.Listen})
	}
	for i, a := range ls {
		if !a.addr.IsValid() || a.addr.Port() == 0 {
			continue
		}
		for _, b := range ls[:i] {
			if b.proto != a.proto || !b.addr.IsValid() || b.addr.Port() != a.addr.Port() || b.key == a.key {
				continue
			}
			if b.key == "coordinator.stun.listen" && a.key == "coordinator.turn.listen" && a.addr == b.addr {
				continue // one socket serves STUN and TURN
			}
			if a.addr.Addr() == b.addr.Addr() || a.covers(b.addr.Addr()) || b.covers(a.addr.Addr()) {
				v.p.addf(a.key, ErrInvalid, "%s (%s) collides with %s (%s)", a.addr, strings.ToUpper(a.proto), b.key, b.addr)
				break
			}
		}
	}
}

// checkName validates a node name (and, with underscore, a group name) by
// the certificates' rule (pki.ValidName, which this package cannot import):
// 1-63 bytes of lowercase letters, digits, '.' and '-' (and '_' for groups),
// starting with a letter or digit.
func checkName(s string, underscore bool) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	if len(s) > 63 {
		return fmt.Errorf("name is %d bytes; at most 63", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return fmt.Errorf("%q must start with a lowercase letter or digit", s)
		}
		if !alnum && c != '.' && c != '-' && !(underscore && c == '_') {
			if underscore {
				return fmt.Errorf("%q: group names hold lowercase letters, digits, '.', '-' and '_'", s)
			}
			return fmt.Errorf("%q: node names hold lowercase letters, digits, '.' and '-'", s)
		}
	}
	return nil
}

// checkIfName applies the kernel's rules for network interface names.
func checkIfName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("must not be empty")
	case len(s) > 15:
		return fmt.Errorf("%q is %d bytes; interface names hold at most 15", s, len(s))
	case s == "." || s == "..":
		return fmt.Errorf("%q is not a valid interface name", s)
	case strings.ContainsAny(s, "/: \t\n\r\v\f"):
		return fmt.Errorf("%q: interface names cannot contain '/', ':' or whitespace", s)
	}
	return nil
}
