package probe

import (
	"encoding/json"
	"fmt"
	"net/netip"
)

// Version is the wire version of every probe message; decoders reject others.
const Version = 1

// maxMessage bounds one probe datagram or line. Real messages are under 200
// bytes; anything larger is foreign traffic and is dropped unread.
const maxMessage = 512

// Operations a client can ask of a server.
const (
	// OpEcho asks the receiving socket to reply with the source it observed.
	OpEcho = "echo"
	// OpFilter asks the server to reply from every socket it has (same
	// address and port, same address other port, other address), which is
	// the RFC 4787 filtering test.
	OpFilter = "filter"
)

// Request is what a client sends to a server socket.
type Request struct {
	V  int    `json:"v"`
	Op string `json:"op"`
	// ID matches replies to this request; retransmissions reuse it.
	ID uint64 `json:"id"`
}

// Reply is what a server sends back.
type Reply struct {
	V  int    `json:"v"`
	ID uint64 `json:"id"`
	// From is the server socket the reply was sent from.
	From netip.AddrPort `json:"from"`
	// Observed is the client's address as the server saw it, that is after
	// every NAT on the way.
	Observed netip.AddrPort `json:"observed"`
}

// EchoResult is the JSON the labprobe echo command prints.
type EchoResult struct {
	// Observed holds, per target in the order given, the source address that
	// target saw.
	Observed []netip.AddrPort `json:"observed"`
}

// FilterResult is the JSON the labprobe filter command prints.
type FilterResult struct {
	// Observed is the client's address as the contacted target saw it.
	Observed netip.AddrPort `json:"observed"`
	// From lists the source address of every reply that reached the client,
	// the contacted target's included (for a public server: its sockets).
	From []netip.AddrPort `json:"from"`
}

// Passed reports whether a reply from ap reached the client.
func (r FilterResult) Passed(ap netip.AddrPort) bool {
	for _, f := range r.From {
		if f == ap {
			return true
		}
	}
	return false
}

// PunchResult is the JSON the labprobe punch command prints.
type PunchResult struct {
	// Heard is the source of the first datagram from the target.
	Heard netip.AddrPort `json:"heard"`
}

// TCPResult is the JSON the labprobe tcp command prints.
type TCPResult struct {
	Observed netip.AddrPort `json:"observed"`
}

func decodeRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > maxMessage {
		return r, fmt.Errorf("%w: %d bytes", ErrBadMessage, len(b))
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if r.V != Version {
		return r, fmt.Errorf("%w: version %d", ErrBadMessage, r.V)
	}
	if r.Op != OpEcho && r.Op != OpFilter {
		return r, fmt.Errorf("%w: op %q", ErrBadMessage, r.Op)
	}
	return r, nil
}

func decodeReply(b []byte) (Reply, error) {
	var r Reply
	if len(b) > maxMessage {
		return r, fmt.Errorf("%w: %d bytes", ErrBadMessage, len(b))
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if r.V != Version {
		return r, fmt.Errorf("%w: version %d", ErrBadMessage, r.V)
	}
	if !r.Observed.IsValid() || !r.From.IsValid() {
		return r, fmt.Errorf("%w: reply without addresses", ErrBadMessage)
	}
	return r, nil
}
