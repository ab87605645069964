package probe

import "errors"

var (
	// ErrNoReply means a probe target did not answer before the context ended:
	// the path is blocked, filtered, or the server is not running.
	ErrNoReply = errors.New("probe: no reply")
	// ErrNoAddrs means a server was asked to listen on nothing.
	ErrNoAddrs = errors.New("probe: no listen addresses")
	// ErrBadMessage means a datagram or stream line was not a probe message of
	// this version; servers drop such input, clients report it.
	ErrBadMessage = errors.New("probe: malformed or foreign message")
)
