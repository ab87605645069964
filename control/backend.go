package control

import (
	"context"
	"time"
)

// Backend is what the control server asks the daemon. daemon satisfies it;
// controltest.Backend is an in-memory double.
//
// Concurrency: methods are called concurrently, from one goroutine per API
// request, and must be safe for that. ctx is the request's context; it is
// canceled when the client goes away, the request times out or the server
// closes, and methods must return promptly after that.
//
// The documents a Backend returns are owned by the server after the call
// (it stamps SchemaVersion and fills derived fields); return copies, not
// pointers into live state. A Backend need not set SchemaVersion.
//
// Errors: wrap ErrPeerNotFound for an unknown peer name, ErrUnavailable when
// the daemon cannot answer yet, ErrInvalidRequest for bad arguments; anything
// else is reported as an internal error with its message.
type Backend interface {
	// Status returns the node summary. The server fills PeerCounts and
	// Peers from Peers and the certificate's DaysLeft and Warning from
	// Cert.NotAfter, so the Backend may leave them zero.
	Status(ctx context.Context) (*Status, error)

	// Peers returns every peer the node knows (online or not), in any order.
	Peers(ctx context.Context) ([]Peer, error)

	// PeerWhy explains the path to the named peer.
	PeerWhy(ctx context.Context, name string) (*PeerWhy, error)

	// Ping sends count pings to peer through the overlay, interval apart,
	// calling fn once per ping (a reply or a reply with Error set) in
	// sequence order. When untilDirect is true it stops after the first
	// reply that came over a direct path. fn is never called concurrently
	// and never after Ping returns; it may block while the client reads
	// (bounded by a write timeout), so call it from Ping's own goroutine and
	// never from a goroutine that owns link state. Ping returns nil when it
	// sent all pings (or stopped early for untilDirect) and ctx.Err() when
	// ctx ended it. The server also stops the stream after the first direct
	// reply when untilDirect is set, so a Backend that ignores the flag still
	// behaves.
	Ping(ctx context.Context, peer string, count int, interval time.Duration, untilDirect bool, fn func(PingReply)) error

	// Netcheck probes STUN servers, coordinators and relays and reports.
	// It may take seconds; ctx bounds it.
	Netcheck(ctx context.Context) (*Netcheck, error)

	// Events calls fn for each event until ctx is done, then returns nil (or
	// the error that ended the stream early). fn never blocks: the server
	// buffers events per subscriber and drops them (reporting how many in
	// an EventDropped event) when the reader falls behind. fn may be called
	// from any goroutine but not concurrently, and never after Events
	// returns.
	Events(ctx context.Context, fn func(Event)) error

	// Reload re-reads and applies the configuration like SIGHUP does. An
	// invalid configuration is an error (with the file:line:col reason) and
	// leaves the running state untouched.
	Reload(ctx context.Context) (*ReloadResult, error)
}
