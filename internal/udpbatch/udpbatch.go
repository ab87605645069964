// Package udpbatch is batched UDP I/O on Linux without per-packet
// allocation: recvmmsg into caller-owned buffers and sendmmsg of a run of
// datagrams to one destination, runs of equal-sized datagrams coalesced
// with UDP_SEGMENT (GSO). The tunnel's fast socket and the embedded TURN
// server's relay both sit on it; elsewhere than Linux New fails with
// ErrUnsupported and callers keep their generic path.
package udpbatch

import "errors"

var (
	// ErrUnsupported is returned by New where batched I/O is not built.
	ErrUnsupported = errors.New("udpbatch: batched UDP I/O is Linux-only")
	// ErrFamily is returned by Send for a destination the socket's address
	// family cannot reach (an IPv6 address on an AF_INET socket).
	ErrFamily = errors.New("udpbatch: destination of the other address family")
)
