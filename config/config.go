package config

import (
	"net/netip"
	"time"
)

// Well-known ports of the defaults. They are documented in
// docs/configuration.md; change them there too.
const (
	// DefaultICEPort is the one UDP port every peer link of a node uses.
	// 51830 rather than WireGuard's 51820 so both can run on one host.
	DefaultICEPort = 51830
	// DefaultSessionPort is the coordinator's TLS-over-TCP session port; a
	// [join] coordinators entry without a port uses it.
	DefaultSessionPort = 7443
	// DefaultGossipPort is the coordinators' memberlist port (TCP and UDP),
	// memberlist's own default; a coordinator.peers entry without a port uses it.
	DefaultGossipPort = 7946
	// DefaultSTUNPort is the STUN and TURN (UDP/TCP) port of RFC 5389/8656.
	DefaultSTUNPort = 3478
	// DefaultMetricsPort is the Prometheus endpoint's port.
	DefaultMetricsPort = 9477
	// DefaultRelayPort is a member relay's UDP port (relay.listen).
	DefaultRelayPort = 3479
)

// The record layer's numbers that bound tun.mtu and data.rekey_records. The
// tunnel owns them (tunnel/record), but config is pure and may not import it
// (internal/deptest), so they are repeated here; TestRecordLayerLimits pins
// them to the arithmetic of docs/mtu.md and docs/protocol.md. Change them
// together.
const (
	// recordMaxPlaintext is record.MaxPlaintext: the most bytes one data
	// record carries, DTLS 1.2's 2^14. The tunnel refuses a larger packet
	// (tunnel.ErrPacketTooLarge), and with it the rest of its batch.
	recordMaxPlaintext = 1 << 14
	// recordOverhead is record.Overhead: the 13-byte record header and the
	// 16-byte AEAD tag.
	recordOverhead = 13 + 16
	// turnChannelData is the TURN ChannelData header (RFC 8656 section
	// 12.4) in front of a record on the node-to-relay leg.
	turnChannelData = 4
	// maxUDPPayload is the largest UDP payload over IPv4 (65535 minus the
	// 20-byte IPv4 and 8-byte UDP headers); IPv6 allows 20 bytes more. The
	// tunnel's receive slots hold 64 KiB, so they are not the bound.
	maxUDPPayload = 65535 - 20 - 8
	// recordLimit is record.RecordLimit: the most records one send key
	// seals; the tunnel refuses Options.RekeyAfterRecords above it.
	recordLimit = 1 << 32
)

// Limits of tun.mtu and data.rekey_records; docs/configuration.md states
// the same ranges.
const (
	// MinTunMTU is the smallest explicit tun.mtu: IPv6 requires every
	// link, the overlay included, to carry 1280-byte packets (RFC 8200
	// section 5).
	MinTunMTU = 1280
	// MaxTunMTU is the largest tun.mtu: the largest IP packet one data
	// record carries, such that the record (behind a ChannelData header on
	// relayed paths) still fits one UDP datagram. The plaintext limit binds
	// (16384); the datagram around it, 16384+29+4 bytes, is far from
	// maxUDPPayload. Whether the underlay and any TURN relay pass datagrams
	// that large is the operator's to know (docs/configuration.md).
	MaxTunMTU = min(recordMaxPlaintext, maxUDPPayload-recordOverhead-turnChannelData)

	// MinRekeyRecords is the smallest data.rekey_records: fewer records
	// per key would turn the data path into a stream of handshakes.
	MinRekeyRecords = 1024
	// MaxRekeyRecords is the largest data.rekey_records: the record limit
	// of one send key (2^32), which the tunnel refuses to exceed. At that
	// value sending stops at the limit until the new handshake finishes,
	// so smaller values (the default is 2^27) are better.
	MaxRekeyRecords int64 = recordLimit
)

// Config is the whole meshd configuration. Field doc comments give the TOML
// key and the default; docs/configuration.md is the full reference.
//
// After [Parse] or [Load] every default is filled in, every relative path is
// resolved against the configuration file's directory, and the derived
// coordinator addresses are set, so consumers never apply defaults themselves.
// The exceptions, where zero keeps a documented meaning, say so.
type Config struct {
	Node        Node        `toml:"node"`
	PKI         PKI         `toml:"pki"`
	Tun         Tun         `toml:"tun"`
	Join        Join        `toml:"join"`
	Coordinator Coordinator `toml:"coordinator"`
	ICE         ICE         `toml:"ice"`
	Data        Data        `toml:"data"`
	Firewall    Firewall    `toml:"firewall"`
	Routes      Routes      `toml:"routes"`
	Control     Control     `toml:"control"`
	Metrics     Metrics     `toml:"metrics"`
	Relay       Relay       `toml:"relay"`
	DNS         DNS         `toml:"dns"`
	Log         Log         `toml:"log"`

	// File is the name the configuration was parsed from ("" for Default).
	// It is not part of the schema and [Diff] ignores it.
	File string `toml:"-"`
	// Warnings are problems that do not stop the configuration from
	// loading, positioned like errors: today secrets that other users can
	// read (each matches [ErrSecretExposed]). [Load] fills them in, in file
	// order; [Parse] never does, since it has no file to look at. Callers
	// should show them (meshd logs them, `meshctl config check` prints
	// them). Not part of the schema; [Diff] ignores them.
	Warnings []*Error `toml:"-"`
}

// Node is the [node] table.
type Node struct {
	// Name is node.name; "" (default) means the certificate's CN. If set it
	// must equal the CN (the daemon checks, since only it reads the cert).
	// Same syntax as certificate names: 1-63 bytes of [a-z0-9.-], starting
	// with a letter or digit; "any" is reserved.
	Name string `toml:"name"`
	// StateDir is node.state_dir, default "/var/lib/meshd".
	StateDir string `toml:"state_dir"`
}

// PKI is the [pki] table: PEM files, relative paths resolved against the
// configuration file's directory.
type PKI struct {
	// CA is pki.ca, the mesh CA certificate. Required.
	CA string `toml:"ca"`
	// Cert is pki.cert, this node's certificate. Required.
	Cert string `toml:"cert"`
	// Key is pki.key, this node's private key. Required.
	Key string `toml:"key"`
	// CRL is pki.crl, the revocation list; "" (default) means none yet. A
	// newer CRL learned from peers is kept in node.state_dir.
	CRL string `toml:"crl"`
}

// Tun is the [tun] table.
type Tun struct {
	// Name is tun.name, default "meshd0" (at most 15 bytes).
	Name string `toml:"name"`
	// MTU is tun.mtu; 0 (default) means auto: the underlay path MTU minus
	// the record and relay overhead. Otherwise MinTunMTU-MaxTunMTU.
	MTU int `toml:"mtu"`
	// Mode is tun.mode, default TunKernel.
	Mode TunMode `toml:"mode"`
}

// Join is the [join] table: how this node reaches the coordinator tier.
type Join struct {
	// Coordinators is join.coordinators, "host:port" session addresses tried
	// in order (a missing port means DefaultSessionPort; entries are stored
	// with the port). At least one is required unless coordinator.enabled.
	Coordinators []string `toml:"coordinators"`
	// CoordinatorNames is join.coordinator_names: if not empty, the node
	// accepts coordinator sessions only from certificates with the
	// coordinator role and one of these names (pinning). Empty = any
	// coordinator certificate of the mesh.
	CoordinatorNames []string `toml:"coordinator_names"`
}

// Coordinator is the [coordinator] table. Nothing in it listens unless
// Enabled is true, and then nothing listens on an address the file does not
// name: SessionListen is required and the other listeners default to its IP.
type Coordinator struct {
	// Enabled is coordinator.enabled, default false.
	Enabled bool `toml:"enabled"`
	// SessionListen is coordinator.session_listen, the TLS-over-TCP address
	// nodes connect to ("0.0.0.0:7443", "[::]:7443", "203.0.113.7:7443").
	// Required when Enabled; no default, on purpose.
	SessionListen netip.AddrPort `toml:"session_listen"`
	// GossipBind is coordinator.gossip_bind, memberlist's TCP+UDP address;
	// default SessionListen's IP with port DefaultGossipPort (port 0 if
	// SessionListen's port is 0; the same holds for STUN.Listen and
	// TURN.Listen).
	GossipBind netip.AddrPort `toml:"gossip_bind"`
	// GossipAdvertise is coordinator.gossip_advertise, the address other
	// coordinators dial; zero (default) lets memberlist use GossipBind (or
	// pick a local address when GossipBind's IP is unspecified).
	GossipAdvertise netip.AddrPort `toml:"gossip_advertise"`
	// GossipKey is coordinator.gossip_key, base64 of a 16, 24 or 32 byte
	// AES key shared by all coordinators. Exactly one of GossipKey and
	// GossipKeyFile is required when Enabled. Use [ParseGossipKey].
	GossipKey string `toml:"gossip_key"`
	// GossipKeyFile is coordinator.gossip_key_file, a file holding the same
	// base64 text (the daemon reads it; Load only checks it is readable).
	GossipKeyFile string `toml:"gossip_key_file"`
	// ClusterLabel is coordinator.cluster_label, memberlist's label that keeps
	// two meshes on one network apart; default "meshd".
	ClusterLabel string `toml:"cluster_label"`
	// Peers is coordinator.peers, other coordinators' gossip "host:port"
	// addresses to join at start (a missing port means DefaultGossipPort).
	Peers []string `toml:"peers"`
	// TombstoneTTL is coordinator.tombstone_ttl, how long a deleted registry
	// record is remembered so anti-entropy cannot resurrect it; default 24h.
	TombstoneTTL Duration `toml:"tombstone_ttl"`
	// STUN is [coordinator.stun].
	STUN STUN `toml:"stun"`
	// TURN is [coordinator.turn].
	TURN TURN `toml:"turn"`
}

// STUN is the [coordinator.stun] table: the coordinator's STUN server.
type STUN struct {
	// Enabled is coordinator.stun.enabled, default true (only takes effect
	// when coordinator.enabled).
	Enabled bool `toml:"enabled"`
	// Listen is coordinator.stun.listen (UDP); default SessionListen's IP
	// with port DefaultSTUNPort. It may equal TURN.Listen: then one socket
	// serves both, as the TURN server answers STUN Binding requests.
	Listen netip.AddrPort `toml:"listen"`
}

// TURN is the [coordinator.turn] table: the coordinator's TURN relay, using
// the coturn static-auth-secret (TURN REST API) credential scheme.
type TURN struct {
	// Enabled is coordinator.turn.enabled, default true (only takes effect
	// when coordinator.enabled).
	Enabled bool `toml:"enabled"`
	// Listen is coordinator.turn.listen (UDP); default SessionListen's IP
	// with port DefaultSTUNPort.
	Listen netip.AddrPort `toml:"listen"`
	// TCPListen is coordinator.turn.tcp_listen (TURN over TCP); zero
	// (default) means off.
	TCPListen netip.AddrPort `toml:"tcp_listen"`
	// TLSListen is coordinator.turn.tls_listen (TURN over TLS, "turns:");
	// zero (default) means off.
	TLSListen netip.AddrPort `toml:"tls_listen"`
	// TLSCert is coordinator.turn.tls_cert; default pki.cert when TLSListen
	// is set ("" otherwise).
	TLSCert string `toml:"tls_cert"`
	// TLSKey is coordinator.turn.tls_key; default pki.key when TLSListen is
	// set ("" otherwise).
	TLSKey string `toml:"tls_key"`
	// RelayAddress is coordinator.turn.relay_address, the IP put in relayed
	// candidates (either family). Zero (default) means Listen's IP, and is
	// an error when that IP is unspecified (0.0.0.0 or ::) and
	// RelayAddress6 is not set, because peers could not reach it.
	RelayAddress netip.Addr `toml:"relay_address"`
	// RelayAddress6 is coordinator.turn.relay_address6, the IPv6 address
	// put in relayed candidates of IPv6 allocations when RelayAddress is
	// IPv4 (a dual-stack relay). Zero (default): IPv6 allocations only when
	// RelayAddress (or Listen's IP) is IPv6.
	RelayAddress6 netip.Addr `toml:"relay_address6"`
	// RelayPortMin and RelayPortMax are coordinator.turn.relay_port_min/max,
	// the UDP ports of relay allocations; default 49152-65535.
	RelayPortMin int `toml:"relay_port_min"`
	RelayPortMax int `toml:"relay_port_max"`
	// AuthSecret is coordinator.turn.auth_secret, the HMAC secret of the
	// static-auth-secret scheme. AuthSecret and AuthSecretFile are optional
	// and exclusive; with neither, the daemon derives the secret from the
	// gossip key, so the coordinators of a cluster share it (set it when an
	// external TURN server must accept the credentials, the same everywhere).
	AuthSecret string `toml:"auth_secret"`
	// AuthSecretFile is coordinator.turn.auth_secret_file (the daemon reads
	// it; Load only checks it is readable).
	AuthSecretFile string `toml:"auth_secret_file"`
	// CredentialTTL is coordinator.turn.credential_ttl, the lifetime of the
	// credentials handed to nodes; default 24h.
	CredentialTTL Duration `toml:"credential_ttl"`
	// Realm is coordinator.turn.realm, default "meshd".
	Realm string `toml:"realm"`
	// UserQuota is coordinator.turn.user_quota, the maximum concurrent
	// allocations per username (node); 0 means unlimited; default 1024
	// (a link may hold one allocation per announced TURN URL: two per peer).
	UserQuota int `toml:"user_quota"`
	// AllowedPeerIPs is coordinator.turn.allowed_peer_ips, peer prefixes the
	// relay reaches whatever the defaults say (coturn's allowed-peer-ip);
	// default none.
	AllowedPeerIPs []netip.Prefix `toml:"allowed_peer_ips"`
	// DeniedPeerIPs is coordinator.turn.denied_peer_ips, peer prefixes the
	// relay refuses on top of the defaults (loopback, link-local, multicast,
	// the host's own addresses except relay ports and ice.port, and private
	// ranges unless relay_address is private); default none.
	DeniedPeerIPs []netip.Prefix `toml:"denied_peer_ips"`
}

// ICE is the [ice] table: connectivity establishment of peer links.
type ICE struct {
	// Port is ice.port, the one UDP port all links share; default
	// DefaultICEPort; 0 means a random port (no stable firewall hole).
	Port int `toml:"port"`
	// IPv6 is ice.ipv6, default true: the port is opened on IPv6 as well
	// as IPv4 (one socket per family), so links may run over IPv6. A host
	// without IPv6 falls back to IPv4 alone; false keeps links on IPv4.
	IPv6 bool `toml:"ipv6"`
	// STUNServers is ice.stun_servers, extra "stun:host[:port]" URLs on top
	// of the STUN servers the coordinators announce; default none.
	STUNServers []string `toml:"stun_servers"`
	// TURNServers is [[ice.turn_servers]], extra TURN relays on top of the
	// coordinators'; default none.
	TURNServers []TURNServer `toml:"turn_servers"`
	// DisconnectedTimeout is ice.disconnected_timeout, default 3s.
	DisconnectedTimeout Duration `toml:"disconnected_timeout"`
	// FailedTimeout is ice.failed_timeout, default 7s.
	FailedTimeout Duration `toml:"failed_timeout"`
	// KeepaliveInterval is ice.keepalive_interval, default 750ms.
	KeepaliveInterval Duration `toml:"keepalive_interval"`
	// CheckInterval is ice.check_interval, default 100ms.
	CheckInterval Duration `toml:"check_interval"`
	// RelayOnly is ice.relay_only, default false: only relayed candidates.
	RelayOnly bool `toml:"relay_only"`
	// IncludeInterfaces is ice.include_interfaces, shell patterns (path.Match)
	// of interfaces to gather host candidates on; empty (default) means the
	// uplinks: interfaces with the default route and plain NICs, not other
	// VPNs' tunnels nor container bridges (tunnel.InterfacePolicy).
	IncludeInterfaces []string `toml:"include_interfaces"`
	// ExcludeInterfaces is ice.exclude_interfaces, patterns never used
	// (applied before IncludeInterfaces); default none. The TUN and any
	// interface with an address in the mesh prefix are always excluded.
	ExcludeInterfaces []string `toml:"exclude_interfaces"`
	// Lazy is ice.lazy, default false: connect to a peer on its first packet
	// instead of as soon as it is in the registry.
	Lazy bool `toml:"lazy"`
}

// TURNServer is one [[ice.turn_servers]] entry. Exactly one way of
// authenticating is set: Username and Credential (static long-term
// credentials), Secret, or SecretFile (coturn static-auth-secret: the node
// derives time-limited credentials). Use [TURNServer.ReadSecret] for the
// secret, never Secret alone.
type TURNServer struct {
	// URL is "turn:host[:port][?transport=udp|tcp]" or
	// "turns:host[:port][?transport=tcp]".
	URL        string `toml:"url"`
	Username   string `toml:"username"`
	Credential string `toml:"credential"`
	Secret     string `toml:"secret"`
	// SecretFile is secret_file, a file holding the secret instead of
	// Secret, so the configuration file itself holds none. Load only checks
	// that it is readable; ReadSecret reads it.
	SecretFile string `toml:"secret_file"`
}

// Data is the [data] table: the record layer of the data path.
type Data struct {
	// Cipher is data.cipher, default CipherAuto.
	Cipher Cipher `toml:"cipher"`
	// RekeyInterval is data.rekey_interval, default 10m (10s-24h).
	RekeyInterval Duration `toml:"rekey_interval"`
	// RekeyRecords is data.rekey_records, records sent under one key before
	// a rekey; default 1<<27 (MinRekeyRecords to MaxRekeyRecords).
	RekeyRecords int64 `toml:"rekey_records"`
}

// Firewall is the [firewall] table. A packet passes when a rule of its
// direction matches; rules only allow. Without [[firewall.inbound]] rules
// inbound traffic is denied; without a firewall.outbound key outbound
// traffic is allowed (the default is one rule with peer "any"), and an
// explicit empty list (outbound = []) denies it.
type Firewall struct {
	Inbound   []Rule    `toml:"inbound"`
	Outbound  []Rule    `toml:"outbound"`
	Conntrack Conntrack `toml:"conntrack"`
}

// Rule is one [[firewall.inbound]] or [[firewall.outbound]] entry. Every set
// field must match (groups: all of them). At least one of Peer, Groups, CIDR
// and LocalCIDR must be set; Peer "any" matches every peer.
type Rule struct {
	// Proto is proto, default ProtoAny.
	Proto Proto `toml:"proto"`
	// Port is port, the local port for inbound rules and the remote port for
	// outbound ones; default AnyPort. A specific port with ProtoAny matches
	// TCP and UDP; it is an error with ProtoICMP.
	Port PortRange `toml:"port"`
	// Peer is peer, a node name or "any"; "" (default) means not checked.
	Peer string `toml:"peer"`
	// Groups is groups; the peer's certificate must hold all of them.
	Groups []string `toml:"groups"`
	// CIDR is cidr, matched against the peer side's address (the source of
	// inbound packets, the destination of outbound ones); zero means not
	// checked.
	CIDR netip.Prefix `toml:"cidr"`
	// LocalCIDR is local_cidr, matched against this side's address (useful on
	// subnet routers); zero means not checked.
	LocalCIDR netip.Prefix `toml:"local_cidr"`
}

// Conntrack is the [firewall.conntrack] table: how long an idle flow keeps
// its return traffic allowed.
type Conntrack struct {
	// TCPTimeout is tcp_timeout, default 12m.
	TCPTimeout Duration `toml:"tcp_timeout"`
	// UDPTimeout is udp_timeout, default 3m.
	UDPTimeout Duration `toml:"udp_timeout"`
	// DefaultTimeout is default_timeout (ICMP and other protocols), default 10m.
	DefaultTimeout Duration `toml:"default_timeout"`
}

// Routes is the [routes] table.
type Routes struct {
	// Advertise is routes.advertise, subnets this node routes for; each must
	// be inside the subnets its certificate allows (the daemon checks).
	Advertise []netip.Prefix `toml:"advertise"`
	// Forward is routes.forward, default false: forward between the overlay
	// and the local networks (IP forwarding and masquerade are the daemon's).
	Forward bool `toml:"forward"`
	// Accept is routes.accept: a subnet a peer advertises is installed only
	// if it lies inside one of these; default none.
	Accept []netip.Prefix `toml:"accept"`
}

// Control is the [control] table: the local API socket.
type Control struct {
	// Socket is control.socket, default "/run/meshd/meshd.sock".
	Socket string `toml:"socket"`
	// Group is control.group, the group allowed to use the socket besides
	// root; default "meshd"; "" means root only. When the file does not
	// set it (GroupSet false) and group meshd does not exist, as on a plain
	// binary install, meshd falls back to root only and warns; a group the
	// file names must exist.
	Group string `toml:"group"`
	// GroupSet reports whether the file sets control.group. Not part of
	// the schema; [Diff] ignores it.
	GroupSet bool `toml:"-"`
}

// Metrics is the [metrics] table: the Prometheus endpoint.
type Metrics struct {
	// Enabled is metrics.enabled, default false.
	Enabled bool `toml:"enabled"`
	// Listen is metrics.listen, default 127.0.0.1:9477.
	Listen netip.AddrPort `toml:"listen"`
}

// Relay is the [relay] table: this node serves as a member relay (a TURN
// server for the other members, announced in its registry record).
type Relay struct {
	// Enabled is relay.enabled, default false.
	Enabled bool `toml:"enabled"`
	// Listen is relay.listen (UDP), default 0.0.0.0:3479.
	Listen netip.AddrPort `toml:"listen"`
	// PublicAddress is relay.public_address, the address members reach the
	// relay at and relayed candidates carry. Zero (default) means Listen,
	// and is an error when Listen's IP is unspecified.
	PublicAddress netip.AddrPort `toml:"public_address"`
	// MaxAllocations is relay.max_allocations, the allocations held at
	// once (the capacity the record announces), 1-65535; default 64.
	MaxAllocations int `toml:"max_allocations"`
}

// DNS is the [dns] table: names for the mesh's nodes. The mesh domain
// itself is not configured here: it is stored in the CA certificate (meshctl
// ca init --domain), so that every node agrees.
type DNS struct {
	// Enabled is dns.enabled, default true: answer queries for
	// <node>.<mesh domain> (and PTR queries for overlay addresses) on this
	// node's overlay addresses, port 53, UDP and TCP. Nothing listens on
	// any other address.
	Enabled bool `toml:"enabled"`
	// Resolved is dns.resolved, default true: when systemd-resolved runs,
	// register the resolver for the mesh domain only (split DNS, "~domain")
	// on the TUN link over D-Bus, and revert it on stop. meshd never
	// writes resolv.conf. Only takes effect with Enabled.
	Resolved bool `toml:"resolved"`
	// Forward is dns.forward, upstream resolvers ("IP:port") asked for
	// names outside the mesh domain; default none: such queries are
	// refused. Names inside the mesh domain are never forwarded.
	Forward []netip.AddrPort `toml:"forward"`
}

// Log is the [log] table.
type Log struct {
	// Level is log.level, default LogInfo.
	Level LogLevel `toml:"level"`
	// Format is log.format, default LogText.
	Format LogFormat `toml:"format"`
}

// Default returns the configuration with every default set. It is not valid
// on its own: pki paths and a coordinator address have no default.
func Default() *Config {
	return &Config{
		Node: Node{StateDir: "/var/lib/meshd"},
		Tun:  Tun{Name: "meshd0", Mode: TunKernel},
		Coordinator: Coordinator{
			ClusterLabel: "meshd",
			TombstoneTTL: Duration(24 * time.Hour),
			STUN:         STUN{Enabled: true},
			TURN: TURN{
				Enabled:       true,
				RelayPortMin:  49152,
				RelayPortMax:  65535,
				CredentialTTL: Duration(24 * time.Hour),
				Realm:         "meshd",
				UserQuota:     1024,
			},
		},
		ICE: ICE{
			Port:                DefaultICEPort,
			IPv6:                true,
			DisconnectedTimeout: Duration(3 * time.Second),
			FailedTimeout:       Duration(7 * time.Second),
			KeepaliveInterval:   Duration(750 * time.Millisecond),
			CheckInterval:       Duration(100 * time.Millisecond),
		},
		Data: Data{
			Cipher:        CipherAuto,
			RekeyInterval: Duration(10 * time.Minute),
			RekeyRecords:  1 << 27,
		},
		Firewall: Firewall{
			Outbound: []Rule{{Proto: ProtoAny, Port: AnyPort, Peer: AnyPeer}},
			Conntrack: Conntrack{
				TCPTimeout:     Duration(12 * time.Minute),
				UDPTimeout:     Duration(3 * time.Minute),
				DefaultTimeout: Duration(10 * time.Minute),
			},
		},
		Control: Control{Socket: "/run/meshd/meshd.sock", Group: "meshd"},
		Metrics: Metrics{Listen: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), DefaultMetricsPort)},
		DNS:     DNS{Enabled: true, Resolved: true},
		Relay:   Relay{Listen: netip.AddrPortFrom(netip.IPv4Unspecified(), DefaultRelayPort), MaxAllocations: 64},
		Log:     Log{Level: LogInfo, Format: LogText},
	}
}

// AnyPeer is the firewall peer name that matches every peer; no node may be
// named like it.
const AnyPeer = "any"
