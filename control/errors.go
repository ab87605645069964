package control

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors. Callers branch on them with errors.Is; the typed errors
// below carry the details and match them through their Is methods.
var (
	// ErrNotRunning: nothing listens on the control socket.
	ErrNotRunning = errors.New("control: meshd is not running")
	// ErrPermissionDenied: the caller is neither root nor in the control group.
	ErrPermissionDenied = errors.New("control: permission denied")
	// ErrSchemaVersion: a document carries a schema_version this code does not
	// speak.
	ErrSchemaVersion = errors.New("control: unsupported schema version")
	// ErrPeerNotFound: no peer has that name. A Backend returns it (wrapped is
	// fine) from PeerWhy and Ping; the server answers 404 and the client
	// returns an error that matches it.
	ErrPeerNotFound = errors.New("control: no such peer")
	// ErrUnavailable: the daemon cannot answer yet (starting, shutting down).
	// A Backend may return it; the server answers 503.
	ErrUnavailable = errors.New("control: meshd is not ready")
	// ErrInvalidRequest: the request was malformed or out of bounds.
	ErrInvalidRequest = errors.New("control: invalid request")
	// ErrSocketInUse: Start found a live server (or a file that is not a
	// socket) at the socket path and left it alone.
	ErrSocketInUse = errors.New("control: socket path in use")
	// ErrUnknownGroup: ServerOptions.Group names no group on this system.
	ErrUnknownGroup = errors.New("control: unknown group")
	// ErrServerClosed: Start was called on a closed (or started) Server.
	ErrServerClosed = errors.New("control: server closed")
	// ErrStreamClosed: meshd ended a stream the client expected to continue
	// (the events stream ends only when meshd shuts down).
	ErrStreamClosed = errors.New("control: meshd closed the stream")
	// ErrReloadFailed: meshd refused the new configuration; the running state
	// is unchanged.
	ErrReloadFailed = errors.New("control: reload failed")
	// ErrProtocol: the response was not a well-formed control API document.
	ErrProtocol = errors.New("control: malformed response")
)

// Error codes in ErrorResponse.Code and stream error lines.
const (
	codePermission   = "permission_denied"
	codeNotFound     = "not_found"
	codePeerNotFound = "peer_not_found"
	codeBadRequest   = "bad_request"
	codeSchema       = "schema_version"
	codeMethod       = "method_not_allowed"
	codeTooLarge     = "too_large"
	codeUnavailable  = "unavailable"
	codeTimeout      = "timeout"
	codeInternal     = "internal"
)

// NotRunningError says no daemon answers on Socket.
type NotRunningError struct {
	Socket string
	// Refused is true when the socket file exists but nothing accepts on it
	// (a daemon that crashed without removing it).
	Refused bool
}

func (e *NotRunningError) Error() string {
	if e.Refused {
		return "meshd is not running (stale socket at " + e.Socket + ")"
	}
	return "meshd is not running (no socket at " + e.Socket + ")"
}

// Is matches ErrNotRunning.
func (e *NotRunningError) Is(target error) bool { return target == ErrNotRunning }

// PermissionError says the caller may not use the socket and what to do about
// it.
type PermissionError struct {
	// Group is the name (or gid) of the group that may use the socket; empty
	// or "root" when only root may.
	Group string
}

func (e *PermissionError) Error() string {
	if e.Group == "" || e.Group == "root" || e.Group == "0" {
		return "permission denied: run as root"
	}
	return "permission denied: run as root or join group " + e.Group
}

// Is matches ErrPermissionDenied.
func (e *PermissionError) Is(target error) bool { return target == ErrPermissionDenied }

// SchemaError says a document had a schema version this code does not speak.
type SchemaError struct {
	Got int
}

func (e *SchemaError) Error() string {
	if e.Got == 0 {
		return "control: response has no schema_version; is this meshd's control socket?"
	}
	return fmt.Sprintf("control: meshd speaks schema version %d, this client only %d: use matching meshd and meshctl versions",
		e.Got, SchemaVersion)
}

// Is matches ErrSchemaVersion.
func (e *SchemaError) Is(target error) bool { return target == ErrSchemaVersion }

// APIError is a non-2xx answer from the server (or an error line ending a
// stream).
type APIError struct {
	Status  int    // HTTP status; 200 for a stream error line
	Code    string // ErrorResponse.Code
	Message string // ErrorResponse.Error, already a sentence for a person
}

func (e *APIError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return "control: meshd answered HTTP " + strconv.Itoa(e.Status)
}

// Is matches the sentinel for its code: ErrPeerNotFound, ErrUnavailable,
// ErrInvalidRequest, ErrPermissionDenied, ErrSchemaVersion.
func (e *APIError) Is(target error) bool {
	switch e.Code {
	case codePeerNotFound:
		return target == ErrPeerNotFound
	case codeUnavailable:
		return target == ErrUnavailable
	case codeBadRequest, codeTooLarge, codeMethod, codeNotFound:
		return target == ErrInvalidRequest
	case codePermission:
		return target == ErrPermissionDenied
	case codeSchema:
		return target == ErrSchemaVersion
	}
	return false
}

// ReloadError is a reload meshd refused.
type ReloadError struct {
	Message string
}

func (e *ReloadError) Error() string {
	return "reload failed: " + e.Message + " (the running configuration is unchanged)"
}

// Is matches ErrReloadFailed.
func (e *ReloadError) Is(target error) bool { return target == ErrReloadFailed }
