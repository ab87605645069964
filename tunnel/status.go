package tunnel

import (
	"fmt"
	"net/netip"
	"time"
)

// State is where a link is in its life. Transitions (owned by the link's run
// goroutine, see fsm.go):
//
//	New ──> Checking ──> Handshaking ──> Connected <──> Disconnected
//	          │  ↑            │              │               │
//	          ↓  │            ↓              ↓               ↓
//	          Failed <────────┴──────────────┴───────────────┘
//	(any) ──> Closed
//
// Checking covers signaling, candidate gathering and ICE connectivity checks;
// Handshaking is the DTLS handshake over the selected pair; Connected
// carries packets; Disconnected means the selected path went quiet (ICE
// consent) and the link is trying other pairs (WriteBatch still sends: the
// path may come back); Failed waits out a backoff before the next attempt.
type State int

// Link states.
const (
	StateNew State = iota
	StateChecking
	StateHandshaking
	StateConnected
	StateDisconnected
	StateFailed
	StateClosed
)

// String returns the state's name as meshctl shows it.
func (s State) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateChecking:
		return "checking"
	case StateHandshaking:
		return "handshaking"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateFailed:
		return "failed"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Path says how the link's packets travel.
type Path int

// Paths.
const (
	PathNone   Path = iota // no selected pair
	PathDirect             // host, server-reflexive or peer-reflexive candidates on both ends
	PathRelay              // through a TURN relay on at least one end
)

// String returns "none", "direct" or "relay".
func (p Path) String() string {
	switch p {
	case PathNone:
		return "none"
	case PathDirect:
		return "direct"
	case PathRelay:
		return "relay"
	}
	return fmt.Sprintf("Path(%d)", int(p))
}

// Candidate describes one ICE candidate.
type Candidate struct {
	// Type is "host", "srflx", "prflx" or "relay".
	Type string
	// Addr is the candidate's transport address.
	Addr netip.AddrPort
	// RelayProtocol is how this node reaches its TURN server ("udp",
	// "tcp", "tls") for local relay candidates; empty otherwise.
	RelayProtocol string
}

// String returns "type addr:port", or "-" for no candidate.
func (c Candidate) String() string {
	if c.Type == "" {
		return "-"
	}
	return c.Type + " " + c.Addr.String()
}

// PairStatus is one ICE candidate pair, for "meshctl peers --why".
type PairStatus struct {
	Local, Remote Candidate
	// State is pion's pair state: "waiting", "in-progress", "failed",
	// "succeeded".
	State     string
	Nominated bool
	Selected  bool
	// RTT is the latest check round-trip time; 0 if none answered.
	RTT time.Duration
	// LastResponse is when a check on this pair was last answered.
	LastResponse time.Time
}

// Status is a snapshot of a link.
type Status struct {
	Peer        string
	State       State
	Since       time.Time // when State was entered
	Controlling bool      // this node is ICE-controlling and DTLS client
	Generation  uint64    // current ICE session generation, 0 before the first

	Path        Path
	Local       Candidate // selected pair, local end
	Remote      Candidate // selected pair, remote end
	RelayServer string    // a relayed path's relay: "198.51.100.10:3478/udp" for our TURN server, "addr:port (peer's relay)" for the peer's relayed address
	RTT         time.Duration
	// Idle: connected, no data record either way for Timers.IdleAfter; the
	// link checks its selected pair only every Timers.IdleKeepalive.
	Idle bool

	BytesSent, BytesReceived     uint64
	PacketsSent, PacketsReceived uint64
	// Drops counts packets the link could not send (WriteBatch errors) or
	// deliver (receive errors).
	SendErrors, ReceiveErrors uint64

	HandshakeDuration time.Duration // of the last successful handshake
	LastHandshake     time.Time     // when it completed
	CipherSuite       string        // negotiated by the last handshake
	DataCipher        string        // of the data records ("aes-128-gcm", "chacha20-poly1305"); empty when down
	Epoch             uint16        // current data-record epoch (0x4000 after the first handshake, +1 per rekey); 0 when down
	KeyAge            time.Duration // since the current data keys were installed
	Rekeys            uint64        // rekeys completed on this link (all sessions)
	PeerFingerprint   string        // of the certificate the peer presented in it
	Attempts          uint64        // sessions started (offers made or accepted)
	Failures          uint64        // sessions that failed
	PathChanges       uint64        // selected-pair changes within sessions

	// LastError is why the last session failed (errors.Is works: ErrTimeout,
	// ErrHandshake and the pki sentinel, ErrSignaling, ...); nil if none.
	LastError error

	// Pairs are the current session's candidate pairs.
	Pairs []PairStatus
}

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	EventState EventKind = iota // the link's State changed
	EventPath                   // the selected path changed while connected
)

// String returns "state" or "path".
func (k EventKind) String() string {
	switch k {
	case EventState:
		return "state"
	case EventPath:
		return "path"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one change of a link, delivered to subscribers in order.
type Event struct {
	Kind  EventKind
	Peer  string
	Time  time.Time
	State State // the new state (EventState) or the current one (EventPath)
	Prev  State // the previous state (EventState)
	Path  Path  // the path after the change
	// Local and Remote are the selected pair after the change (zero if none).
	Local, Remote Candidate
	// Err is the failure for a transition to Failed, else nil.
	Err error
	// Reason says why the path changed (EventPath): one of the PathReason
	// constants.
	Reason string
}

// Why a connected link's selected pair changed (Event.Reason). A small
// fixed set: the daemon counts path changes by it in metrics.
const (
	// PathReasonFailed: the selected pair stopped answering and the link
	// moved to the best pair that still answers.
	PathReasonFailed = "path_failed"
	// PathReasonDirect: the link was relayed and a direct pair has
	// answered for UpgradeHold.
	PathReasonDirect = "direct_found"
	// PathReasonIPv6: the link ran directly over IPv4 and a direct IPv6
	// pair has answered for UpgradeHold with an RTT no worse.
	PathReasonIPv6 = "ipv6_preferred"
	// PathReasonPeer: the peer (the controlling side) moved the link.
	PathReasonPeer = "peer_moved"
	// PathReasonICE: the ICE agent selected another pair on its own.
	PathReasonICE = "ice_selected"
)

// PathReasonText is a PathReason in words, for logs and events.
func PathReasonText(r string) string {
	switch r {
	case PathReasonFailed:
		return "the selected path stopped answering"
	case PathReasonDirect:
		return "a direct path answers"
	case PathReasonIPv6:
		return "a direct IPv6 path answers as fast"
	case PathReasonRelay:
		return "another relay answers clearly faster"
	case PathReasonPeer:
		return "the peer moved the link"
	default:
		return "ICE selected another pair"
	}
}
