package discovery

import (
	"errors"
	"sync/atomic"

	"github.com/meshd/meshd/pki"
)

// CoordinatorStats are a coordinator's counters since Start. Rejections are
// counted, never logged per item (a hostile peer must not be able to flood
// the log).
type CoordinatorStats struct {
	Sessions int // node sessions currently registered here
	Records  int // registry entries (including tombstones)
	Members  int // live coordinators in the gossip cluster (including this one)

	RecordsAccepted     uint64 // new or newer records stored
	RecordsStale        uint64 // records older than the one held (replays, lagging gossip)
	RecordsBadSignature uint64 // records not signed by their certificate's key (forgeries)
	RecordsInvalid      uint64 // certificate rejected by pki, claims the certificate does not allow, or a version too far ahead
	RecordsMalformed    uint64 // undecodable records
	RecordsExpired      uint64 // tombstones/offline records past their TTL, dropped or refused
	RecordsOverLimit    uint64 // records of new nodes refused because the registry holds MaxRegistryEntries

	FramesMalformed   uint64 // undecodable or unexpected session frames
	FramesTooLarge    uint64 // session frames over MaxFrameSize
	FramesBadVersion  uint64 // session frames of an unknown version
	FramesRateLimited uint64 // session frames dropped by the per-session rate limit

	GossipDropped   uint64 // gossip messages dropped because the run loop was behind
	GossipMalformed uint64 // undecodable gossip messages
	// GossipRefused counts Hellos that did not prove the coordinator role
	// and signals or duplicate-identity queries from members that have not
	// proven it (gossipauth.go).
	GossipRefused uint64

	SessionsRefused uint64 // sessions refused (certificate, record, protocol, overload, duplicate identity, unauthenticated caps)
	// UnauthRefused counts connections closed at accept because the
	// unauthenticated connections of their source, or in total, were at
	// their cap (also in SessionsRefused).
	UnauthRefused uint64
	// SessionsFlooding counts sessions closed because their rate limits
	// dropped FloodDrops frames within FloodWindow (CodeFlooding).
	SessionsFlooding uint64
	// SessionsDuplicate counts sessions refused because another host holds
	// a live session with the node's name (also in SessionsRefused).
	SessionsDuplicate uint64
	// HoldersPresumedDead counts established sessions closed because they
	// stayed silent while another connection claimed their node.
	HoldersPresumedDead uint64
	SessionsClosed      uint64 // sessions ended for any reason
	SignalsRouted       uint64 // signals delivered to a local session
	SignalsForwarded    uint64 // signals forwarded to another coordinator
	SignalsFailed       uint64 // signals answered with an error
	CRLsInstalled       uint64 // newer CRLs installed and propagated
	CRLsRepeated        uint64 // CRLs seen before: answered from the verification cache
}

// ClientStats are a client's counters since Start.
type ClientStats struct {
	RecordsStale        uint64
	RecordsBadSignature uint64
	RecordsInvalid      uint64
	RecordsMalformed    uint64
	RecordsOverLimit    uint64 // new peers dropped because the node already holds MaxRegistryEntries
	FramesMalformed     uint64 // undecodable, oversized or unexpected frames from coordinators
	VersionsRefused     uint64 // stale answers not followed: the claimed version was too far ahead (ErrFutureVersion)
	SignalsDropped      uint64 // inbound signals dropped because OnSignal was behind
	Failovers           uint64
	// DuplicateRefusals counts sessions refused because another host holds
	// this node's session (CodeDuplicateIdentity).
	DuplicateRefusals uint64
}

// recordCounters classify record rejections.
type recordCounters struct {
	accepted, stale, badSig, invalid, malformed, expired, overLimit atomic.Uint64
}

// count files err under the counter for its reason.
func (c *recordCounters) count(err error) {
	switch {
	case err == nil:
		c.accepted.Add(1)
	case errors.Is(err, ErrStaleRecord):
		c.stale.Add(1)
	case errors.Is(err, ErrBadSignature):
		c.badSig.Add(1)
	case errors.Is(err, ErrExpired):
		c.expired.Add(1)
	case errors.Is(err, ErrMalformed), errors.Is(err, ErrUnsupportedVersion):
		c.malformed.Add(1)
	case errors.Is(err, ErrLimitExceeded): // a full registry (wire limits are ErrMalformed)
		c.overLimit.Add(1)
	default: // pki verification errors, ErrInvalidRecord, ErrFutureVersion
		c.invalid.Add(1)
	}
}

// isCertError reports whether err came from the pki policy.
func isCertError(err error) bool {
	var ve *pki.VerifyError
	return errors.As(err, &ve)
}

type frameCounters struct {
	malformed, tooLarge, badVersion, rateLimited atomic.Uint64
}

func (c *frameCounters) count(err error) {
	switch {
	case errors.Is(err, ErrFrameTooLarge):
		c.tooLarge.Add(1)
	case errors.Is(err, ErrUnsupportedVersion):
		c.badVersion.Add(1)
	default:
		c.malformed.Add(1)
	}
}
