package discovery

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors callers branch on. Wrapped errors are tested with errors.Is.
var (
	// ErrCoordinatorNotPinned: the coordinator's certificate has the role
	// but its name is not one the node pins (ClientOptions.CoordinatorNames).
	ErrCoordinatorNotPinned = errors.New("discovery: coordinator name not among the pinned coordinator names")

	// ErrUnknownPeer: a signal named a node the registry has no record of (or
	// only a tombstone).
	ErrUnknownPeer = errors.New("discovery: unknown peer")
	// ErrPeerOffline: the target has a record but no coordinator holds a
	// session for it now, or its coordinator could not be reached.
	ErrPeerOffline = errors.New("discovery: peer offline")
	// ErrNotConnected: the client holds no session to any coordinator now.
	ErrNotConnected = errors.New("discovery: not connected to a coordinator")
	// ErrRateLimited: the coordinator dropped a frame because the session
	// exceeded its frame rate.
	ErrRateLimited = errors.New("discovery: rate limited")
	// ErrClosed: the component was closed.
	ErrClosed = errors.New("discovery: closed")
	// ErrRefused: a coordinator refused the node's session; RefusedError
	// carries the coordinator's reason.
	ErrRefused = errors.New("discovery: session refused")
	// ErrCertificateRejected: a peer certificate failed the pki policy. It is
	// matched together with the pki sentinel that says why.
	ErrCertificateRejected = errors.New("discovery: certificate rejected")
	// ErrDuplicateIdentity: a coordinator refused the session because another
	// host holds a live session with this node's name (typically a cloned
	// machine running with the same certificate and key). It is matched
	// together with ErrRefused; the RefusedError names the other host.
	ErrDuplicateIdentity = errors.New("discovery: another host is using this node's identity")

	// ErrFrameTooLarge: a frame's announced length exceeds the limit.
	ErrFrameTooLarge = errors.New("discovery: frame too large")
	// ErrUnsupportedVersion: a frame, record, gossip message or cache file
	// carries a format version this build does not speak.
	ErrUnsupportedVersion = errors.New("discovery: unsupported version")
	// ErrMalformed: input does not decode (truncated, trailing bytes, bad
	// lengths or values out of range).
	ErrMalformed = errors.New("discovery: malformed input")
	// ErrPayloadTooLarge: a signal payload exceeds MaxSignalPayload.
	ErrPayloadTooLarge = errors.New("discovery: signal payload too large")
	// ErrLimitExceeded: a count or length exceeds its documented limit
	// (docs/protocol.md, "Limits"): a count or length read from the wire
	// (then the error is also ErrMalformed), a snapshot with more entries
	// than it announced, or a registry already holding MaxRegistryEntries
	// records.
	ErrLimitExceeded = errors.New("discovery: limit exceeded")

	// ErrBadSignature: a record's signature does not verify with the key of
	// the certificate it carries (a forged or tampered record).
	ErrBadSignature = errors.New("discovery: bad record signature")
	// ErrStaleRecord: a record's version is older than the one held (replay).
	ErrStaleRecord = errors.New("discovery: stale record version")
	// ErrFutureVersion: a record version (its signing time) lies more than
	// MaxVersionSkew ahead of the receiver's clock, or a coordinator claims
	// to hold such a version of this node. Accepting it would let one record
	// block every later one of its node.
	ErrFutureVersion = errors.New("discovery: record version too far in the future")
	// ErrInvalidRecord: a record contradicts its certificate (name, overlay
	// address, group or route not allowed) or is otherwise invalid.
	ErrInvalidRecord = errors.New("discovery: invalid record")
	// ErrExpired: a tombstone or offline record is past its time to live.
	ErrExpired = errors.New("discovery: expired")
)

// RefusedError says that a coordinator refused the session and why, as the
// coordinator put it in its error frame. Is matches ErrRefused,
// ErrCertificateRejected when the reason is the node's certificate, and
// ErrDuplicateIdentity when another host holds the node's session.
type RefusedError struct {
	Coordinator string // address dialed
	Code        ErrorCode
	Reason      string
	// Holder is, for CodeDuplicateIdentity, the address ("ip:port") of the
	// host holding the node's session as the coordinator tier sees it; ""
	// when the coordinator did not say (or said something unparsable).
	Holder string
	// RetryAfter is, for CodeDuplicateIdentity, when the coordinator expects
	// to know whether that session is still alive (0 = no hint).
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("discovery: coordinator %s refused the session: %s: %s", e.Coordinator, e.Code, e.Reason)
}

// Is reports whether target is ErrRefused, ErrCertificateRejected for a
// certificate refusal, or ErrDuplicateIdentity for a duplicate identity.
func (e *RefusedError) Is(target error) bool {
	return target == ErrRefused || (target == ErrCertificateRejected && e.Code == CodeCertificateRejected) ||
		(target == ErrDuplicateIdentity && e.Code == CodeDuplicateIdentity)
}

// SignalError is returned by SendSignal when the coordinator reports that it
// could not deliver. It unwraps to ErrUnknownPeer, ErrPeerOffline,
// ErrRateLimited or ErrPayloadTooLarge.
type SignalError struct {
	To     string
	Reason error
}

func (e *SignalError) Error() string {
	return fmt.Sprintf("discovery: signal to %q not delivered: %v", e.To, e.Reason)
}

func (e *SignalError) Unwrap() error { return e.Reason }

// RecordError says why a record was rejected. It unwraps to the reason
// (ErrBadSignature, ErrStaleRecord, ErrInvalidRecord, ErrMalformed, a pki
// verification error, ...).
type RecordError struct {
	Name   string // node name claimed by the record, "" when undecodable
	Reason error
}

func (e *RecordError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("discovery: record rejected: %v", e.Reason)
	}
	return fmt.Sprintf("discovery: record of %q rejected: %v", e.Name, e.Reason)
}

func (e *RecordError) Unwrap() error { return e.Reason }

// ErrorCode is the code carried by an error frame on a session.
type ErrorCode uint8

// Error frame codes (docs/protocol.md, "Session frames").
const (
	CodeProtocol            ErrorCode = 1  // malformed or unexpected frame; fatal
	CodeUnsupportedVersion  ErrorCode = 2  // frame version not spoken; fatal
	CodeCertificateRejected ErrorCode = 3  // pki policy refused the session certificate; fatal
	CodeInvalidRecord       ErrorCode = 4  // record rejected (signature, cert mismatch); fatal during registration
	CodeStaleRecord         ErrorCode = 5  // record version not newer than held; Have says which; not fatal
	CodeRateLimited         ErrorCode = 6  // frame dropped by the rate limit; not fatal
	CodeSuperseded          ErrorCode = 7  // a newer session of the same node replaced this one; fatal
	CodeShuttingDown        ErrorCode = 8  // coordinator is closing; fatal
	CodeOverloaded          ErrorCode = 9  // too many sessions or a session that cannot keep up; fatal
	CodeRevoked             ErrorCode = 10 // the session's certificate was revoked while connected; fatal
	// CodeDuplicateIdentity: another host holds a live session with this
	// node's name; the established session wins. The error's "version held"
	// field carries a retry-after in milliseconds and its text starts with
	// the holder's address (docs/protocol.md, "Duplicate identities"); fatal.
	CodeDuplicateIdentity ErrorCode = 11
	// CodeFlooding: the session kept sending frames beyond its rate limits
	// (FloodDrops dropped within FloodWindow); the text says how many of
	// which kind; fatal.
	CodeFlooding ErrorCode = 12
)

func (c ErrorCode) String() string {
	switch c {
	case CodeProtocol:
		return "protocol error"
	case CodeUnsupportedVersion:
		return "unsupported version"
	case CodeCertificateRejected:
		return "certificate rejected"
	case CodeInvalidRecord:
		return "invalid record"
	case CodeStaleRecord:
		return "stale record"
	case CodeRateLimited:
		return "rate limited"
	case CodeSuperseded:
		return "superseded"
	case CodeShuttingDown:
		return "shutting down"
	case CodeOverloaded:
		return "overloaded"
	case CodeRevoked:
		return "revoked"
	case CodeDuplicateIdentity:
		return "duplicate identity"
	case CodeFlooding:
		return "flooding"
	default:
		return fmt.Sprintf("error code %d", uint8(c))
	}
}

// refusal reports whether the code refuses this node (as opposed to the
// coordinator going away or moving the node elsewhere).
func (c ErrorCode) refusal() bool {
	switch c {
	case CodeSuperseded, CodeShuttingDown, CodeOverloaded:
		return false
	}
	return true
}

// fatal reports whether the coordinator closes the session after sending it.
func (c ErrorCode) fatal() bool {
	return c != CodeStaleRecord && c != CodeRateLimited
}

// signalCode is the result code of a signal (session SignalResult frame and
// gossip signal result message).
type signalCode uint8

const (
	sigOK          signalCode = 0
	sigUnknownPeer signalCode = 1
	sigPeerOffline signalCode = 2
	sigRateLimited signalCode = 3
	sigTooLarge    signalCode = 4
)

func (c signalCode) err() error {
	switch c {
	case sigOK:
		return nil
	case sigUnknownPeer:
		return ErrUnknownPeer
	case sigPeerOffline:
		return ErrPeerOffline
	case sigRateLimited:
		return ErrRateLimited
	case sigTooLarge:
		return ErrPayloadTooLarge
	default:
		return fmt.Errorf("%w: signal result code %d", ErrMalformed, uint8(c))
	}
}
