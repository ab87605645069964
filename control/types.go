package control

import (
	"net/netip"
	"strconv"
	"time"
)

// SchemaVersion is the version of every JSON document on the control API. The
// server stamps it on each response (and each streamed line); the client
// rejects any other value. Adding a field does not change it; removing,
// renaming or changing the meaning of one does.
const SchemaVersion = 1

// CertWarnDays is how many days before expiry the node certificate becomes a
// warning in Status.Cert.
const CertWarnDays = 30

// Durations on the wire are integer nanoseconds (time.Duration's own JSON
// form) in fields whose names end in "_ns"; times are RFC 3339 and omitted when
// unknown; addresses are netip text forms and omitted when unknown.

// Path says how packets reach a peer.
type Path string

// Paths a link can use.
const (
	PathNone   Path = ""       // no path: the link is down
	PathDirect Path = "direct" // UDP straight between the two nodes
	PathRelay  Path = "relay"  // through a TURN relay
)

// CandidateType is the ICE candidate type (RFC 8445 §5.1.1).
type CandidateType string

// ICE candidate types.
const (
	CandidateHost  CandidateType = "host"
	CandidateSrflx CandidateType = "srflx"
	CandidatePrflx CandidateType = "prflx"
	CandidateRelay CandidateType = "relay"
)

// LinkState is a peer link's state as tunnel's state machine names it:
// new → gathering → checking → handshaking → up → failed/closed. "idle" is a
// lazy peer that no packet has asked for yet; "offline" is a peer in the
// registry whose session no coordinator holds (stopped or unreachable), so
// no link is tried.
type LinkState string

// Link states.
const (
	LinkIdle        LinkState = "idle"
	LinkNew         LinkState = "new"
	LinkGathering   LinkState = "gathering"
	LinkChecking    LinkState = "checking"
	LinkHandshaking LinkState = "handshaking"
	LinkUp          LinkState = "up"
	LinkFailed      LinkState = "failed"
	LinkClosed      LinkState = "closed"
	LinkOffline     LinkState = "offline"
)

// NATBehavior is the mapping behaviour of the NAT in front of a node, in RFC
// 4787 terms, as far as STUN probes can tell.
type NATBehavior string

// NAT behaviours.
const (
	NATUnknown NATBehavior = "unknown"
	// NATNone: the node's own address is public (reflexive == local).
	NATNone NATBehavior = "none"
	// NATEndpointIndependent ("easy", full/restricted cone): one mapping for
	// every destination, so hole punching works.
	NATEndpointIndependent NATBehavior = "endpoint-independent"
	// NATAddressDependent: the mapping changes per destination address.
	NATAddressDependent NATBehavior = "address-dependent"
	// NATAddressPortDependent ("hard", symmetric): the mapping changes per
	// destination address and port; direct paths to another NATed node
	// usually need a relay.
	NATAddressPortDependent NATBehavior = "address-and-port-dependent"
	// NATUDPBlocked: no STUN reply at all; only TCP/TLS relays could work.
	NATUDPBlocked NATBehavior = "udp-blocked"
)

// Hard reports whether this NAT makes direct paths unlikely.
func (n NATBehavior) Hard() bool {
	return n == NATAddressDependent || n == NATAddressPortDependent || n == NATUDPBlocked
}

// SessionState is the state of the node's session with a coordinator.
type SessionState string

// Coordinator session states.
const (
	SessionConnected    SessionState = "connected"
	SessionConnecting   SessionState = "connecting"
	SessionDisconnected SessionState = "disconnected"
)

// EventKind names what an Event reports.
type EventKind string

// Event kinds.
const (
	EventPeerUp              EventKind = "peer_up"
	EventPeerDown            EventKind = "peer_down"
	EventPathChange          EventKind = "path_change"
	EventCertWarning         EventKind = "cert_warning"
	EventCoordinatorFailover EventKind = "coordinator_failover"
	EventReload              EventKind = "reload"
	// EventDropped is made by the server, not the Backend: the reader was too
	// slow and Message says how many events it missed.
	EventDropped EventKind = "events_dropped"
)

// Status is the node's summary: GET /v1/status.
type Status struct {
	SchemaVersion int `json:"schema_version"`

	Name     string     `json:"name"`
	Address  netip.Addr `json:"address,omitzero"`  // overlay IPv4
	Address6 netip.Addr `json:"address6,omitzero"` // overlay IPv6, if any
	Version  string     `json:"version"`
	// Uptime is how long the daemon has been running.
	Uptime time.Duration `json:"uptime_ns"`

	Cert        CertInfo        `json:"cert"`
	Coordinator CoordinatorInfo `json:"coordinator"`

	// PublicEndpoints are the reflexive addresses STUN servers saw.
	PublicEndpoints []netip.AddrPort `json:"public_endpoints,omitempty"`
	NAT             NATBehavior      `json:"nat"`

	// PeerCounts and Peers are filled by the server from Backend.Peers, so the
	// counts always agree with the list.
	PeerCounts PeerCounts `json:"peer_counts"`
	Peers      []Peer     `json:"peers,omitempty"`

	// Drops counts packets the data path dropped, by reason ("no_route",
	// "firewall", "spoofed", ...).
	Drops map[string]uint64 `json:"drops,omitempty"`

	// DNS summarises the resolver of the mesh's names (GET /v1/dns has
	// the whole picture); nil from a meshd without one.
	DNS *DNSSummary `json:"dns,omitempty"`
}

// CertInfo describes the node certificate's validity.
type CertInfo struct {
	NotAfter    time.Time `json:"not_after,omitzero"`
	Fingerprint string    `json:"fingerprint,omitempty"`
	// DaysLeft and Warning are computed by the server from NotAfter (see
	// CertStatus); a Backend need not fill them.
	DaysLeft int    `json:"days_left"`
	Warning  string `json:"warning,omitempty"`
}

// CoordinatorInfo is the session with the coordinator tier.
type CoordinatorInfo struct {
	State SessionState `json:"state"`
	// Name and Address identify the coordinator currently (or last) used.
	Name      string    `json:"name,omitempty"`
	Address   string    `json:"address,omitempty"`
	Since     time.Time `json:"since,omitzero"` // in State since
	LastError string    `json:"last_error,omitempty"`
	// Conflict is set while coordinators refuse this node because another
	// host holds a live session with its identity (a cloned machine running
	// with this node's certificate and key), e.g. "another host at
	// 192.0.2.7:41234 is using this node's identity (refused by coordinator
	// c1)". The established session keeps the name; this node retries with
	// backoff.
	Conflict string `json:"conflict,omitempty"`
}

// PeerCounts summarises the peer list.
type PeerCounts struct {
	Total  int `json:"total"`
	Online int `json:"online"`
	Direct int `json:"direct"`
	Relay  int `json:"relay"`
}

// Peer is one peer link: an element of GET /v1/peers.
type Peer struct {
	Name     string     `json:"name"`
	Address  netip.Addr `json:"address,omitzero"`
	Address6 netip.Addr `json:"address6,omitzero"`
	Online   bool       `json:"online"`
	State    LinkState  `json:"state"`
	Since    time.Time  `json:"since,omitzero"` // in State since

	Path            Path          `json:"path"`
	LocalCandidate  CandidateType `json:"local_candidate,omitempty"`
	RemoteCandidate CandidateType `json:"remote_candidate,omitempty"`
	// Endpoint is the peer's address on the selected pair (for a relayed
	// pair, the peer's address as the relay sees it).
	Endpoint netip.AddrPort `json:"endpoint,omitzero"`
	// Family is the underlay address family of the selected pair,
	// "ipv4" or "ipv6": the family of Endpoint (for a relayed pair, the
	// family the relay reaches the peer on). Empty when offline.
	Family string `json:"family,omitempty"`
	// Relay is the TURN server (host:port) carrying a relayed path.
	Relay string `json:"relay,omitempty"`
	// RelayNode is the node name of the member relay carrying a relayed
	// path ("" for a coordinator's or a configured TURN server).
	RelayNode string `json:"relay_node,omitempty"`
	// PathChanges counts the link's selected-pair changes while connected
	// (a steady link keeps it still; see meshd_path_changes_total).
	PathChanges uint64 `json:"path_changes"`

	RTT       time.Duration `json:"rtt_ns"`
	RxBytes   uint64        `json:"rx_bytes"`
	TxBytes   uint64        `json:"tx_bytes"`
	RxPackets uint64        `json:"rx_packets"`
	TxPackets uint64        `json:"tx_packets"`

	LastHandshake time.Time `json:"last_handshake,omitzero"`
	LastError     string    `json:"last_error,omitempty"`

	Groups  []string       `json:"groups,omitempty"`
	Subnets []netip.Prefix `json:"subnets,omitempty"`
}

// PeerList is the document of GET /v1/peers.
type PeerList struct {
	SchemaVersion int    `json:"schema_version"`
	Peers         []Peer `json:"peers"`
}

// Candidate is one ICE candidate.
type Candidate struct {
	Type CandidateType `json:"type"`
	// Address is host:port (or an mDNS name:port for obfuscated host
	// candidates), so it stays a string.
	Address string `json:"address"`
}

// CandidatePair is one ICE candidate pair of a link's checklist.
type CandidatePair struct {
	Local  Candidate `json:"local"`
	Remote Candidate `json:"remote"`
	// State is the ICE pair state: frozen, waiting, in-progress, succeeded,
	// failed.
	State     string        `json:"state"`
	Nominated bool          `json:"nominated"`
	RTT       time.Duration `json:"rtt_ns"`
	LastError string        `json:"last_error,omitempty"`
}

// PeerWhy explains a link's path: GET /v1/peers/why?peer=NAME.
type PeerWhy struct {
	SchemaVersion int `json:"schema_version"`

	Peer    string     `json:"peer"`
	Address netip.Addr `json:"address,omitzero"`
	State   LinkState  `json:"state"`
	Path    Path       `json:"path"`

	Pairs     []CandidatePair `json:"pairs"`
	LocalNAT  NATBehavior     `json:"local_nat"`
	RemoteNAT NATBehavior     `json:"remote_nat"`
	// Explanation says in plain words why the link has the path it has (or
	// none), e.g. "both sides are behind address-and-port-dependent NATs, so
	// no direct pair succeeded; traffic goes through the relay".
	Explanation string `json:"explanation"`
}

// PingRequest is the body of POST /v1/ping.
type PingRequest struct {
	SchemaVersion int `json:"schema_version"`
	// Peer is a peer's name or one of its overlay addresses (IPv4 or IPv6).
	Peer string `json:"peer"`
	// Count is how many pings to send, 1..MaxPingCount; zero means
	// DefaultPingCount.
	Count int `json:"count"`
	// Interval between pings, MinPingInterval..MaxPingInterval; zero means
	// DefaultPingInterval.
	Interval time.Duration `json:"interval_ns"`
	// UntilDirect stops the stream after the first reply over a direct path.
	UntilDirect bool `json:"until_direct"`
}

// Bounds on PingRequest, checked by the server.
const (
	MaxPingCount    = 10000
	MinPingInterval = 10 * time.Millisecond
	MaxPingInterval = time.Minute
)

// PingReply is one line of the POST /v1/ping stream: a reply, or a ping that
// got none (Error set).
type PingReply struct {
	SchemaVersion int `json:"schema_version"`

	Seq  int    `json:"seq"`
	Peer string `json:"peer"`
	// Address is the peer's overlay address the ping named (its IPv4
	// address when it named the peer).
	Address netip.Addr `json:"address,omitzero"`
	Path    Path       `json:"path,omitempty"`
	// Relay is the TURN server the reply came through, for PathRelay.
	Relay string `json:"relay,omitempty"`
	// Endpoint is the peer's address the reply came from.
	Endpoint netip.AddrPort `json:"endpoint,omitzero"`
	RTT      time.Duration  `json:"rtt_ns"`
	// Error is why this ping got no reply ("timeout", "no path", ...).
	Error string `json:"error,omitempty"`
}

// Netcheck is the report of GET /v1/netcheck.
type Netcheck struct {
	SchemaVersion int `json:"schema_version"`

	// UDP reports whether any STUN server answered over UDP.
	UDP  bool        `json:"udp"`
	STUN []STUNProbe `json:"stun"`
	// MappingVariesByDest is true when different STUN servers saw different
	// reflexive ports: a hard (destination-dependent) NAT.
	MappingVariesByDest bool        `json:"mapping_varies_by_dest"`
	NAT                 NATBehavior `json:"nat"`
	// Latencies to each coordinator and relay.
	Latencies []ServerLatency `json:"latencies"`
	// Verdict is one sentence: what this means for direct paths.
	Verdict string `json:"verdict"`
	// Interfaces are the host's network interfaces and whether each offers
	// ICE host candidates, with the reason (other VPNs, container bridges
	// and meshd's own TUN are skipped by default). Empty when the daemon
	// cannot list them.
	Interfaces []InterfaceUse `json:"interfaces"`
	// IPv6 is the IPv6 underlay: whether the ICE port is open on IPv6,
	// which IPv6 addresses are offered or skipped, and whether a STUN
	// server answered over IPv6.
	IPv6 IPv6Check `json:"ipv6"`
}

// IPv6Check is the IPv6 part of a netcheck.
type IPv6Check struct {
	// Enabled is true when the ICE port is open on IPv6.
	Enabled bool `json:"enabled"`
	// Reason says why it is not ("ice.ipv6 = false", the host has no
	// IPv6); empty when Enabled.
	Reason string `json:"reason,omitempty"`
	// Addresses are the host's IPv6 interface addresses, offered as host
	// candidates or not, with why.
	Addresses []AddressUse `json:"addresses"`
	// STUN is true when a STUN server answered over IPv6.
	STUN bool `json:"stun"`
}

// AddressUse is one interface address as the candidate policy sees it.
type AddressUse struct {
	Address   netip.Addr `json:"address"`
	Interface string     `json:"interface"`
	Used      bool       `json:"used"`
	// Reason says why the address is skipped (or "offered").
	Reason string `json:"reason"`
}

// InterfaceUse is one network interface as the candidate policy sees it.
type InterfaceUse struct {
	Name      string       `json:"name"`
	Used      bool         `json:"used"`
	Reason    string       `json:"reason"`
	Addresses []netip.Addr `json:"addresses"`
}

// STUNProbe is one STUN server's answer.
type STUNProbe struct {
	Server    string         `json:"server"`
	Reflexive netip.AddrPort `json:"reflexive,omitzero"`
	Latency   time.Duration  `json:"latency_ns"`
	Error     string         `json:"error,omitempty"`
}

// Server kinds in ServerLatency.
const (
	ServerCoordinator = "coordinator"
	ServerRelay       = "relay"
)

// ServerLatency is the round trip to one coordinator or relay.
type ServerLatency struct {
	Name    string        `json:"name"`
	Kind    string        `json:"kind"` // ServerCoordinator or ServerRelay
	Address string        `json:"address"`
	Latency time.Duration `json:"latency_ns"`
	Error   string        `json:"error,omitempty"`
}

// Event is one line of the GET /v1/events stream.
type Event struct {
	SchemaVersion int `json:"schema_version"`

	Time time.Time `json:"time"`
	Kind EventKind `json:"kind"`
	Peer string    `json:"peer,omitempty"`
	// From and To are the old and new value of what changed (path, state,
	// coordinator).
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
	Message string `json:"message,omitempty"`
}

// ReloadResult is the document of POST /v1/reload.
type ReloadResult struct {
	SchemaVersion int `json:"schema_version"`

	// Changed lists the config sections applied live.
	Changed []string `json:"changed"`
	// NeedsRestart lists changed sections that only take effect after a
	// restart (listen port, TUN name, ...).
	NeedsRestart []string `json:"needs_restart"`
	// Error is why the reload was refused; the running state is unchanged.
	Error string `json:"error,omitempty"`
}

// ErrorResponse is the body of every non-2xx response.
type ErrorResponse struct {
	SchemaVersion int    `json:"schema_version"`
	Error         string `json:"error"`
	Code          string `json:"code"`
}

// streamError is the last line of a stream that failed after it started.
type streamError struct {
	SchemaVersion int    `json:"schema_version"`
	StreamError   string `json:"stream_error"`
	Code          string `json:"code"`
}

// CountPeers summarises peers.
func CountPeers(peers []Peer) PeerCounts {
	c := PeerCounts{Total: len(peers)}
	for _, p := range peers {
		if !p.Online {
			continue
		}
		c.Online++
		switch p.Path {
		case PathDirect:
			c.Direct++
		case PathRelay:
			c.Relay++
		}
	}
	return c
}

// CertStatus fills DaysLeft and Warning from NotAfter as of now. Days are
// whole days rounded down; a certificate with hours left has 0 days left.
func CertStatus(c CertInfo, now time.Time) CertInfo {
	c.Warning = ""
	c.DaysLeft = 0
	if c.NotAfter.IsZero() {
		return c
	}
	left := c.NotAfter.Sub(now)
	date := c.NotAfter.UTC().Format(time.DateOnly)
	if left <= 0 {
		ago := int(-left / (24 * time.Hour))
		c.DaysLeft = -ago
		c.Warning = "certificate expired on " + date + "; peers refuse it until it is renewed"
		return c
	}
	c.DaysLeft = int(left / (24 * time.Hour))
	if c.DaysLeft < CertWarnDays {
		c.Warning = "certificate expires in " + plural(c.DaysLeft, "day") + " (" + date + "); renew it before then"
	}
	return c
}

func plural(n int, unit string) string {
	s := strconv.Itoa(n) + " " + unit
	if n != 1 {
		s += "s"
	}
	return s
}
