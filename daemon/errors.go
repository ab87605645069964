package daemon

import (
	"errors"
	"fmt"
)

// Kinds of setup failure. Every error New, Check and Start return matches
// exactly one of them with errors.Is, so cmd/meshd maps them to exit codes
// without matching strings; the underlying cause (a *config.Errors, a
// pki sentinel, an overlay error) stays reachable through errors.Is/As too.
var (
	// ErrConfig: the configuration is unusable although it parsed (node.name
	// is not the certificate's, routes.advertise outside the certificate, an
	// unreadable gossip key, forwarding in userspace mode, ...). cmd/meshd
	// exits 3.
	ErrConfig = errors.New("daemon: configuration invalid")
	// ErrCredentials: the CA certificate, node certificate, node key or CRL
	// cannot be used (missing, malformed, key mismatch, not issued by the
	// CA). An expired certificate is not this error: the daemon starts and
	// warns. cmd/meshd exits 4.
	ErrCredentials = errors.New("daemon: certificate or key unusable")
	// ErrNetwork: the TUN device, its addresses, the ICE port, a
	// coordinator or metrics listener could not be set up. cmd/meshd exits 5.
	ErrNetwork = errors.New("daemon: network setup failed")
)

// Lifecycle conditions.
var (
	// ErrClosed: the daemon has been closed.
	ErrClosed = errors.New("daemon: closed")
	// ErrAlreadyStarted: Start was called twice.
	ErrAlreadyStarted = errors.New("daemon: already started")
	// ErrNotStarted: the operation needs a started daemon.
	ErrNotStarted = errors.New("daemon: not started")
)

// SetupError says which part of the node could not be set up. Kind is one
// of ErrConfig, ErrCredentials and ErrNetwork; errors.Is matches it and
// everything Err wraps.
type SetupError struct {
	Kind error
	// What names the part in the words an operator uses ("config",
	// "certificate", "TUN device", "ICE port", ...).
	What string
	Err  error
}

// Error prints "what: cause", the shape of cmd/meshd's one-line errors.
func (e *SetupError) Error() string { return fmt.Sprintf("%s: %v", e.What, e.Err) }

// Is matches the kind.
func (e *SetupError) Is(target error) bool { return target != nil && target == e.Kind }

// Unwrap returns the cause.
func (e *SetupError) Unwrap() error { return e.Err }

func configErr(format string, args ...any) error {
	return &SetupError{Kind: ErrConfig, What: "config", Err: fmt.Errorf(format, args...)}
}

func credErr(what string, err error) error {
	return &SetupError{Kind: ErrCredentials, What: what, Err: err}
}

func netErr(what string, err error) error {
	return &SetupError{Kind: ErrNetwork, What: what, Err: err}
}
