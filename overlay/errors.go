package overlay

import (
	"errors"
	"fmt"
)

// ErrLinkDown is returned (wrapped) by a PeerConn that cannot carry traffic now:
// it is still connecting, reconnecting, or closed. The overlay counts the
// packets as dropped with reason "link down".
var ErrLinkDown = errors.New("overlay: link down")

// ErrNoChanges is returned by Reconfig when the new configuration equals the
// running one.
var ErrNoChanges = errors.New("overlay: no changes")

// ErrClosed is returned by Start, Reconfig and SetFirewall after Close.
var ErrClosed = errors.New("overlay: interface closed")

// ErrAlreadyStarted is returned by a second Start.
var ErrAlreadyStarted = errors.New("overlay: already started")

// ErrInvalidConfig is what every *ConfigError is (errors.Is): Options or a
// Config was rejected and nothing was changed.
var ErrInvalidConfig = errors.New("overlay: invalid configuration")

// Drop reasons. The data path returns one of these (nil = pass) instead of
// logging; each maps to one counter in Stats.Drops. They are sentinels so a
// drop costs no allocation.
var (
	// ErrNoRoute: no peer's routes cover the destination (Drops.NoRoute).
	ErrNoRoute = errors.New("overlay: no route to destination")
	// ErrNotLocal: a peer sent a packet whose destination is neither one of
	// our overlay addresses nor inside a forwarded local subnet
	// (Drops.NotLocal).
	ErrNotLocal = errors.New("overlay: destination is not local")
	// ErrSpoofedSource: the source address is not one the sending peer's
	// certificate allows (Drops.Spoofed).
	ErrSpoofedSource = errors.New("overlay: source address not allowed for peer")
	// ErrNoMatchingRule: no firewall rule allows the packet and no tracked
	// flow covers it (Drops.FirewallIn / Drops.FirewallOut).
	ErrNoMatchingRule = errors.New("overlay: no matching firewall rule")
	// ErrMalformed: the packet is not a well-formed IPv4/IPv6 packet
	// (Drops.Malformed). Errors from the parser wrap it with the detail.
	ErrMalformed = errors.New("overlay: malformed packet")
	// ErrTooBig: the packet is larger than the interface MTU (Drops.TooBig).
	ErrTooBig = errors.New("overlay: packet larger than MTU")
)

// ConfigError says which field of Options or Config was rejected and why.
// errors.Is(err, ErrInvalidConfig) holds for every ConfigError.
type ConfigError struct {
	Field  string // e.g. "Peers[2].Routes[0]"
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("overlay: invalid configuration: %s: %s", e.Field, e.Reason)
}

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// malformedError is a parser failure. The parser returns pointers to the
// package-level values below so that a drop never allocates.
type malformedError struct{ what string }

func (e *malformedError) Error() string        { return "overlay: malformed packet: " + e.what }
func (e *malformedError) Is(target error) bool { return target == ErrMalformed }

var (
	errTruncated      = &malformedError{"truncated header"}
	errBadVersion     = &malformedError{"IP version is neither 4 nor 6"}
	errBadIHL         = &malformedError{"IPv4 header length below 20 bytes"}
	errLengthMismatch = &malformedError{"IP length field exceeds the packet"}
	errShortL4        = &malformedError{"transport header truncated"}
	errBadTCPOffset   = &malformedError{"TCP data offset out of range"}
	errTooManyExt     = &malformedError{"too many IPv6 extension headers"}
	errBadOffset      = &malformedError{"buffer shorter than its header room"}
)
