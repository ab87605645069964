package tunnel

import (
	"errors"
	"fmt"
)

// Conditions callers branch on. Test with errors.Is.
var (
	// ErrLinkDown is matched by the error WriteBatch returns when the link
	// cannot carry traffic now: it is connecting, reconnecting or closed. The
	// error also matches Options.LinkDownError (the daemon passes
	// overlay.ErrLinkDown there, so the overlay's errors.Is works without
	// tunnel importing overlay).
	ErrLinkDown = errors.New("tunnel: link down")
	// ErrClosed: the manager or link has been closed.
	ErrClosed = errors.New("tunnel: closed")
	// ErrNotStarted: the manager's Start has not been called yet.
	ErrNotStarted = errors.New("tunnel: manager not started")
	// ErrUnknownPeer: a signal came from a peer that has no link.
	ErrUnknownPeer = errors.New("tunnel: unknown peer")
	// ErrInvalidPeer: a Peer fails validation (name, address, fingerprint) or
	// is this node itself.
	ErrInvalidPeer = errors.New("tunnel: invalid peer")
	// ErrInvalidOptions: Options fail validation.
	ErrInvalidOptions = errors.New("tunnel: invalid options")
	// ErrBadOffset: WriteBatch was called with offset < HeaderRoom or beyond
	// a buffer.
	ErrBadOffset = errors.New("tunnel: bad packet offset")
	// ErrPacketTooLarge: WriteBatch was given a packet larger than one data
	// record carries (record.MaxPlaintext, 16 KiB).
	ErrPacketTooLarge = errors.New("tunnel: packet larger than a data record carries")

	// ErrBadSignal: a signal does not decode (truncated, trailing bytes,
	// unknown kind, invalid field).
	ErrBadSignal = errors.New("tunnel: malformed signal")
	// ErrSignalVersion: a signal carries a version this node does not speak.
	ErrSignalVersion = errors.New("tunnel: unsupported signal version")
	// ErrSignalTooLarge: a signal is larger than MaxSignalSize.
	ErrSignalTooLarge = errors.New("tunnel: signal too large")

	// ErrSignaling: a signal could not be sent to the peer (it is offline or
	// the coordinator refused); the link retries with backoff.
	ErrSignaling = errors.New("tunnel: signaling failed")
	// ErrTimeout: the peer did not answer, or ICE found no working pair, in
	// Timers.ConnectTimeout.
	ErrTimeout = errors.New("tunnel: connect timed out")
	// ErrICEFailed: ICE connectivity was lost (consent expired on every pair).
	ErrICEFailed = errors.New("tunnel: ICE failed")
	// ErrHandshake: the DTLS handshake failed. When this node refused the
	// peer's certificate the error also matches the pki sentinel (for example
	// pki.ErrExpired).
	ErrHandshake = errors.New("tunnel: DTLS handshake failed")
	// ErrPeerRestart: the peer asked for a new session (it restarted or lost
	// the previous one).
	ErrPeerRestart = errors.New("tunnel: peer requested a new session")
	// ErrRelayLost: the relayed path went silent with no other pair
	// answering, or its relay is no longer offered (relayfail.go).
	ErrRelayLost = errors.New("tunnel: the relay carrying the link is gone")
	// ErrPeerClosed: the peer closed the DTLS session.
	ErrPeerClosed = errors.New("tunnel: peer closed the session")
)

// linkDownError is what WriteBatch returns when the link cannot carry
// traffic. It matches ErrLinkDown and the injected alias (see
// Options.LinkDownError). The manager keeps one prebuilt value so the
// link-down path does not allocate per call.
type linkDownError struct {
	alias error // Options.LinkDownError, or nil
	cause error // nil for the prebuilt value
}

func (e *linkDownError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%v: %v", ErrLinkDown, e.cause)
	}
	return ErrLinkDown.Error()
}

func (e *linkDownError) Is(target error) bool {
	return target == ErrLinkDown || (e.alias != nil && target == e.alias)
}

func (e *linkDownError) Unwrap() error { return e.cause }
