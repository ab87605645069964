package tunnel

import "sync/atomic"

// Stats are counters of a Manager: what the shared port dropped, by reason,
// and what signaling and events lost.
type Stats struct {
	// DroppedGarbage counts datagrams on the shared port whose first byte is
	// neither STUN nor DTLS (RFC 7983).
	DroppedGarbage uint64
	// DroppedMalformed counts STUN, DTLS or data-record datagrams with
	// broken framing (bad length field or version, oversized).
	DroppedMalformed uint64
	// DroppedUnknownSource counts data records from an address that is no
	// link's selected path, and DTLS from addresses the node never sent to.
	DroppedUnknownSource uint64
	// ReplayedRecords counts data records dropped as replays: already
	// accepted, or behind the replay window (ReplayWindow). Checked before
	// decryption, so forged duplicates count too.
	ReplayedRecords uint64
	// DroppedTampered counts data records that failed authentication:
	// altered on the way, or sealed under another key (another peer's,
	// another session's).
	DroppedTampered uint64
	// DroppedOldEpoch counts data records of an epoch whose keys were
	// retired (a rekey's overlap ended).
	DroppedOldEpoch uint64
	// DroppedUnknownEpoch counts data records of an epoch this side has no
	// keys for: ahead of the installed keys, or for a link whose keys are
	// not installed yet (handshaking) or any more (closing).
	DroppedUnknownEpoch uint64
	// DroppedTruncated counts data records shorter than their header says.
	DroppedTruncated uint64
	// DroppedControl counts STUN and DTLS datagrams dropped because the
	// queue to pion (ICE mux, a DTLS connection) was full.
	DroppedControl uint64
	// DroppedRelayForeign counts datagrams dropped on the sockets of UDP
	// TURN clients because they came from an address other than one the
	// socket sent to (its TURN server); see relaynet.go.
	DroppedRelayForeign uint64
	// SocketOverflows counts datagrams the kernel dropped because a socket's
	// receive buffer was full (SO_RXQ_OVFL; batched Linux sockets only).
	SocketOverflows uint64
	// ReadErrors counts failed socket reads.
	ReadErrors uint64
	// SignalsInvalid counts received signals that did not decode.
	SignalsInvalid uint64
	// SignalsUnknownPeer counts signals from peers without a link.
	SignalsUnknownPeer uint64
	// SignalsDropped counts signals dropped because a link's inbox was full.
	SignalsDropped uint64
	// EventsDropped counts events dropped because subscribers were too slow.
	EventsDropped uint64
	// CandidatesDropped counts remote ICE candidates refused: beyond
	// maxRemoteCandidates in a session, or beyond a peer's pace
	// (candlimit.go).
	CandidatesDropped uint64
}

// counters are the Manager's Stats, updated atomically from any goroutine
// (the data path adds once per batch).
type counters struct {
	garbage, malformed, unknownSource, replayed    atomic.Uint64
	tampered, oldEpoch, unknownEpoch, truncated    atomic.Uint64
	ctrlDropped, readErrors, relayForeign          atomic.Uint64
	signalsInvalid, signalsUnknown, signalsDropped atomic.Uint64
	candidatesDropped                              atomic.Uint64

	lat latencyStages // the data path's stage histograms (latency.go)
}
