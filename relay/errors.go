package relay

import "errors"

var (
	// ErrBadUsername: a TURN username is not "<unix expiry>:<node name>".
	ErrBadUsername = errors.New("relay: malformed username")
	// ErrExpired: a username's expiry has passed, or lies more than MaxTTL
	// ahead.
	ErrExpired = errors.New("relay: username expired or too far ahead")
	// ErrUnknownMember: the username names no node of the verified
	// registry (unknown, left or revoked).
	ErrUnknownMember = errors.New("relay: not a mesh member")
	// ErrKeyMismatch: the two keys are of different types (ECDSA P-256 and
	// Ed25519) and share no curve to agree a password on.
	ErrKeyMismatch = errors.New("relay: key types differ")
	// ErrBadKey: a key is not a usable ECDSA P-256 or Ed25519 key.
	ErrBadKey = errors.New("relay: unusable key")
	// ErrInvalidOptions: Options fail validation.
	ErrInvalidOptions = errors.New("relay: invalid options")
)
