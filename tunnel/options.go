package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/pion/transport/v5"

	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel/record"
)

// Signaler carries signals (this package's wire format, see SignalVersion) to
// a peer through the coordinators. discovery satisfies it; tests use an
// in-memory router. SendSignal may block (ctx bounds it) and is called from
// one goroutine per link, in order. An error means the signal was not
// delivered (peer offline, coordinator unreachable); the link backs off and
// retries. The payload is not retained after the call returns.
type Signaler interface {
	SendSignal(ctx context.Context, to string, payload []byte) error
}

// ICEServer is one STUN or TURN server with its current credentials.
type ICEServer struct {
	// URL is an RFC 7064/7065 URI: "stun:host:port", "turn:host:port"
	// (UDP), "turn:host:port?transport=tcp", "turns:host:port" (TLS over
	// TCP).
	URL string
	// Username and Password are the TURN long-term credentials (for the
	// coturn static-auth-secret scheme: "expiry:name" and the HMAC).
	// Ignored for stun: URLs.
	Username string
	Password string
}

// Timers tune how fast links connect, notice loss and recover. Zero fields
// take the value from DefaultTimers. pion's own defaults (5 s to
// disconnected, 25 s more to failed, 2 s keepalives) are too slow to move a
// mesh link to the relay within 3 s, hence these.
type Timers struct {
	// CheckInterval is the pace of ICE connectivity checks while connecting.
	CheckInterval time.Duration
	// KeepaliveInterval is how often a connected link that carries traffic
	// checks every candidate pair (an idle one: IdleKeepalive) (consent freshness on the selected one, liveness of the
	// others so the link can move between direct and relay paths). With
	// PathTimeout it sets how fast a dead path is left: one lost check is
	// tolerated when PathTimeout > 2*KeepaliveInterval + RTT.
	KeepaliveInterval time.Duration
	// DisconnectedTimeout: no packet on the selected pair for this long and
	// the link reports Disconnected.
	DisconnectedTimeout time.Duration
	// FailedTimeout: this much more silence and ICE gives up; the link fails
	// and restarts ICE with backoff.
	FailedTimeout time.Duration
	// PathTimeout: the controlling side moves traffic off the selected pair
	// when its checks have gone unanswered this long and another pair answers.
	PathTimeout time.Duration
	// UpgradeHold: a direct pair must have been answering for this long
	// before a relayed link moves to it (avoids flapping).
	UpgradeHold time.Duration
	// RelayWait: during initial checks a relayed pair is only chosen after
	// this long, so that a direct pair that is about to work wins.
	RelayWait time.Duration
	// ConnectTimeout bounds signaling plus ICE checks of one attempt.
	ConnectTimeout time.Duration
	// HandshakeTimeout bounds one DTLS handshake.
	HandshakeTimeout time.Duration
	// FlightInterval is the DTLS handshake retransmission interval.
	FlightInterval time.Duration
	// GatherTimeout bounds STUN server-reflexive discovery.
	GatherTimeout time.Duration
	// RetryMin and RetryMax bound the exponential backoff (with ±20%
	// jitter) between failed attempts.
	RetryMin time.Duration
	RetryMax time.Duration
	// SignalTimeout bounds one Signaler.SendSignal call.
	SignalTimeout time.Duration
	// RekeyInterval is the age of a link's data keys after which it runs a
	// fresh DTLS handshake and moves to new keys (also after
	// Options.RekeyAfterRecords records).
	RekeyInterval time.Duration
	// RekeyOverlap is how long after a rekey records of the previous epoch
	// are still accepted (stragglers, and the peer switching a little later).
	RekeyOverlap time.Duration
	// IdleAfter: a connected link that has carried no data record either
	// way for this long (and whose selected pair answers) goes idle: it
	// stops checking every pair and keeps only IdleKeepalive (idle.go).
	IdleAfter time.Duration
	// IdleKeepalive is the pace of an idle link's one check on its selected
	// pair (the controlling side sends it, the other answers): often enough
	// to keep NAT mappings, which may expire after 25-30 s of silence.
	IdleKeepalive time.Duration
}

// DefaultTimers returns the production timer values.
func DefaultTimers() Timers {
	return Timers{
		CheckInterval:       100 * time.Millisecond,
		KeepaliveInterval:   750 * time.Millisecond,
		DisconnectedTimeout: 3 * time.Second,
		FailedTimeout:       7 * time.Second,
		PathTimeout:         2 * time.Second,
		UpgradeHold:         2 * time.Second,
		RelayWait:           600 * time.Millisecond,
		ConnectTimeout:      15 * time.Second,
		HandshakeTimeout:    10 * time.Second,
		FlightInterval:      250 * time.Millisecond,
		GatherTimeout:       3 * time.Second,
		RetryMin:            500 * time.Millisecond,
		RetryMax:            30 * time.Second,
		SignalTimeout:       5 * time.Second,
		RekeyInterval:       record.DefaultRekeyAfterTime,
		RekeyOverlap:        record.DefaultOverlap,
		IdleAfter:           defaultIdleAfter,
		IdleKeepalive:       defaultIdleKeepalive,
	}
}

// withDefaults fills zero fields from DefaultTimers.
func (t Timers) withDefaults() Timers {
	d := DefaultTimers()
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&t.CheckInterval, d.CheckInterval)
	set(&t.KeepaliveInterval, d.KeepaliveInterval)
	set(&t.DisconnectedTimeout, d.DisconnectedTimeout)
	set(&t.FailedTimeout, d.FailedTimeout)
	set(&t.PathTimeout, d.PathTimeout)
	set(&t.UpgradeHold, d.UpgradeHold)
	set(&t.RelayWait, d.RelayWait)
	set(&t.ConnectTimeout, d.ConnectTimeout)
	set(&t.HandshakeTimeout, d.HandshakeTimeout)
	set(&t.FlightInterval, d.FlightInterval)
	set(&t.GatherTimeout, d.GatherTimeout)
	set(&t.RetryMin, d.RetryMin)
	set(&t.RetryMax, d.RetryMax)
	set(&t.SignalTimeout, d.SignalTimeout)
	set(&t.RekeyInterval, d.RekeyInterval)
	set(&t.RekeyOverlap, d.RekeyOverlap)
	set(&t.IdleAfter, d.IdleAfter)
	set(&t.IdleKeepalive, d.IdleKeepalive)
	t.IdleKeepalive = max(t.IdleKeepalive, t.KeepaliveInterval)
	return t
}

func (t Timers) validate() error {
	for name, v := range map[string]time.Duration{
		"CheckInterval": t.CheckInterval, "KeepaliveInterval": t.KeepaliveInterval,
		"DisconnectedTimeout": t.DisconnectedTimeout, "FailedTimeout": t.FailedTimeout,
		"PathTimeout": t.PathTimeout, "UpgradeHold": t.UpgradeHold, "RelayWait": t.RelayWait,
		"ConnectTimeout": t.ConnectTimeout, "HandshakeTimeout": t.HandshakeTimeout,
		"FlightInterval": t.FlightInterval, "GatherTimeout": t.GatherTimeout,
		"RetryMin": t.RetryMin, "RetryMax": t.RetryMax, "SignalTimeout": t.SignalTimeout,
		"RekeyInterval": t.RekeyInterval, "RekeyOverlap": t.RekeyOverlap,
		"IdleAfter": t.IdleAfter, "IdleKeepalive": t.IdleKeepalive,
	} {
		if v < 0 {
			return fmt.Errorf("%w: Timers.%s is negative (%v)", ErrInvalidOptions, name, v)
		}
	}
	if t.RetryMax < t.RetryMin {
		return fmt.Errorf("%w: Timers.RetryMax %v is below RetryMin %v", ErrInvalidOptions, t.RetryMax, t.RetryMin)
	}
	if t.PathTimeout <= t.KeepaliveInterval {
		return fmt.Errorf("%w: Timers.PathTimeout %v must exceed KeepaliveInterval %v (a healthy pair answers once per keepalive)",
			ErrInvalidOptions, t.PathTimeout, t.KeepaliveInterval)
	}
	if t.IdleKeepalive != 0 && t.IdleKeepalive < t.KeepaliveInterval {
		return fmt.Errorf("%w: Timers.IdleKeepalive %v is below KeepaliveInterval %v (an idle link checks less often, never more)",
			ErrInvalidOptions, t.IdleKeepalive, t.KeepaliveInterval)
	}
	return nil
}

// Options configure a Manager.
type Options struct {
	// Logger receives the manager's and the links' logs; nil discards them.
	Logger *slog.Logger

	// Credentials are this node's certificate and key; must not be nil.
	Credentials *pki.Credentials
	// Verifier checks every peer certificate against the expected peer;
	// must not be nil. Its CRL may be updated at any time.
	Verifier *pki.Verifier
	// Signaler carries signals to peers; must not be nil.
	Signaler Signaler

	// ListenAddr is the local address of the one UDP socket every link
	// shares; the zero value means all IPv4 addresses (0.0.0.0). :: means
	// both families: an IPv6-only and an IPv4 socket on one port (IPv4
	// alone on a host without IPv6). Host candidates are this address, or
	// every interface address when it is unspecified (minus loopback,
	// link-local, ExcludePrefixes and the addresses Interfaces skips).
	ListenAddr netip.Addr
	// ListenPort is the UDP port of that socket; 0 picks a free port.
	ListenPort int
	// PacketConn, if not nil, is the shared socket instead of one opened
	// from ListenAddr/ListenPort. The manager owns it and closes it. Its
	// LocalAddr must be a *net.UDPAddr. A *net.UDPConn is read and written
	// in batches on Linux; other conns one datagram at a time.
	PacketConn net.PacketConn
	// SocketBuffer is the receive and send buffer size requested for each
	// socket; 0 means 8 MiB, negative leaves the OS default. On Linux the
	// size is forced past net.core.[rw]mem_max when the process has
	// CAP_NET_ADMIN, else capped there.
	SocketBuffer int

	// Cipher is this node's data-cipher preference; the zero value
	// (record.CipherAuto) means AES-128-GCM where the CPU has AES
	// instructions, else ChaCha20-Poly1305. The DTLS handshake settles one
	// cipher for both peers (record.PreferredSuites).
	Cipher record.Cipher
	// RekeyAfterRecords is the number of records sealed under one data key
	// after which the link rekeys; 0 means record.DefaultRekeyAfterRecords.
	RekeyAfterRecords uint64

	// Net is the network stack used to enumerate interfaces and reach
	// STUN/TURN servers; nil means the host's. Tests pass a pion vnet.
	Net transport.Net
	// Servers returns the STUN and TURN servers with their current
	// credentials; it is called at the start of every ICE attempt, so
	// rotating TURN credentials take effect on the next attempt. nil
	// means no servers (host candidates only). Must be safe for concurrent use.
	Servers func() []ICEServer
	// TURNTLSConfig is the TLS configuration for turns: servers (RootCAs,
	// for example the mesh CA when coordinators use mesh-signed
	// certificates); ServerName is set from each URL. nil means the system
	// roots.
	TURNTLSConfig *tls.Config
	// ForceRelay gathers relay candidates only (no host or server-reflexive
	// ones): every link goes through TURN. For networks that forbid direct
	// UDP between nodes, and for tests.
	ForceRelay bool
	// ExcludePrefixes are underlay addresses never offered as local
	// candidates nor accepted as remote ones. The daemon passes the overlay
	// prefix so a link never runs over the overlay itself.
	ExcludePrefixes []netip.Prefix
	// Interfaces decides which network interfaces offer host candidates,
	// and which remote candidates are worth checking (only those the host
	// routes out of a used interface): see ifaces.go. It applies when the
	// socket listens on an unspecified address of the host's own stack
	// (Net nil); judged at every gathering, so interfaces that come and go
	// are judged when a link connects.
	Interfaces InterfacePolicy
	// Links lists the host's interfaces for Interfaces; nil means
	// SystemLinks. Tests pass a table.
	Links func() ([]LinkInfo, error)
	// RouteInterface names the interface the host routes dst out of; nil
	// means the kernel's answer (netlink). Tests pass a table.
	RouteInterface func(dst netip.Addr) (string, error)

	// LinkDownError is an error value that WriteBatch's link-down error
	// matches with errors.Is, besides ErrLinkDown. The daemon passes
	// overlay.ErrLinkDown. nil: only ErrLinkDown.
	LinkDownError error

	// Timers tune connection, keepalive and recovery; zero fields take
	// DefaultTimers values.
	Timers Timers

	// Now is the clock used to check certificate validity during
	// handshakes; nil means time.Now.
	Now func() time.Time

	// listenUDP opens the host's UDP sockets; nil means net.ListenUDP.
	// Tests stand in a host without IPv6.
	listenUDP func(network string, laddr *net.UDPAddr) (*net.UDPConn, error)
}

func (o *Options) validate() error {
	switch {
	case o.Credentials == nil || o.Credentials.Cert == nil || o.Credentials.Key == nil:
		return fmt.Errorf("%w: Credentials (certificate and key) are required", ErrInvalidOptions)
	case o.Verifier == nil:
		return fmt.Errorf("%w: Verifier is required", ErrInvalidOptions)
	case o.Signaler == nil:
		return fmt.Errorf("%w: Signaler is required", ErrInvalidOptions)
	case o.ListenPort < 0 || o.ListenPort > 65535:
		return fmt.Errorf("%w: ListenPort %d out of range", ErrInvalidOptions, o.ListenPort)
	case o.Credentials.Cert.Fingerprint == "":
		return fmt.Errorf("%w: the node certificate has no fingerprint", ErrInvalidOptions)
	}
	if o.PacketConn != nil {
		if _, ok := o.PacketConn.LocalAddr().(*net.UDPAddr); !ok {
			return fmt.Errorf("%w: PacketConn's local address is %T, want *net.UDPAddr", ErrInvalidOptions, o.PacketConn.LocalAddr())
		}
	}
	if _, err := record.PreferredSuites(o.Cipher); err != nil {
		return fmt.Errorf("%w: Cipher: %w", ErrInvalidOptions, err)
	}
	if o.RekeyAfterRecords > record.RecordLimit {
		return fmt.Errorf("%w: RekeyAfterRecords %d exceeds the record limit %d", ErrInvalidOptions, o.RekeyAfterRecords, uint64(record.RecordLimit))
	}
	for _, p := range o.ExcludePrefixes {
		if !p.IsValid() {
			return fmt.Errorf("%w: ExcludePrefixes has an invalid prefix", ErrInvalidOptions)
		}
	}
	return o.Timers.validate()
}
