package dns

import "errors"

var (
	// ErrInvalidOptions is returned by New for unusable options.
	ErrInvalidOptions = errors.New("dns: invalid options")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("dns: closed")
	// ErrAlreadyStarted is returned by a second Start.
	ErrAlreadyStarted = errors.New("dns: already started")
)
