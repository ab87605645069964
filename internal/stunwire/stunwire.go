// Package stunwire decodes the few parts of STUN messages (RFC 5389,
// RFC 8656) that the TURN fast paths learn from as control datagrams go
// by: the header, the attributes and XOR-*-ADDRESS values; and it cuts a
// TURN stream (TCP, TLS) into frames as pion does (StreamFrame). The embedded
// TURN server (discovery) and the relay client's socket (tunnel) share
// it. Nothing here allocates, and nothing reads past the slices it is
// given: the input is whatever arrived from the network.
package stunwire

import (
	"encoding/binary"
	"net/netip"
)

// STUN framing: the header and the message types and attributes the fast
// paths read.
const (
	// HeaderLen is the length of a STUN header: type, length, magic
	// cookie, transaction ID.
	HeaderLen = 20
	// MagicCookie is the fixed value of a STUN header's bytes 4 to 8.
	MagicCookie = 0x2112a442
	// MaxAttrs bounds the attributes WalkAttrs visits in one message.
	MaxAttrs = 32

	// TypeCreatePermissionRequest through TypeChannelBindSuccess are the
	// message types (method and class) the fast paths learn from.
	TypeCreatePermissionRequest = 0x0008
	TypeChannelBindRequest      = 0x0009
	TypeAllocateSuccess         = 0x0103
	TypeCreatePermissionSuccess = 0x0108
	TypeChannelBindSuccess      = 0x0109

	// AttrChannelNumber, AttrXORPeerAddress and AttrXORRelayedAddress
	// are the attribute types the fast paths read.
	AttrChannelNumber     = 0x000c
	AttrXORPeerAddress    = 0x0012
	AttrXORRelayedAddress = 0x0016

	// FamilyIPv4 and FamilyIPv6 are the address families of an
	// XOR-*-ADDRESS value.
	FamilyIPv4 = 0x01
	FamilyIPv6 = 0x02
)

// Type returns the message type of p if p is a STUN message: a header
// with the magic cookie, and a length field that is a multiple of 4 and
// fits p (p may run on past it).
func Type(p []byte) (uint16, bool) {
	if len(p) < HeaderLen || binary.BigEndian.Uint32(p[4:8]) != MagicCookie {
		return 0, false
	}
	l := int(binary.BigEndian.Uint16(p[2:4]))
	if l%4 != 0 || HeaderLen+l > len(p) {
		return 0, false
	}
	return binary.BigEndian.Uint16(p), true
}

// WalkAttrs calls fn with the type and value of each attribute of message
// p, in order, at most MaxAttrs of them, stopping at the first that
// overruns the message. It calls fn for nothing if Type rejects p.
// borrowed: v is a slice of p, valid while p is.
func WalkAttrs(p []byte, fn func(typ uint16, v []byte)) {
	if _, ok := Type(p); !ok {
		return
	}
	body := p[HeaderLen : HeaderLen+int(binary.BigEndian.Uint16(p[2:4]))]
	for n := 0; len(body) >= 4 && n < MaxAttrs; n++ {
		typ, l := binary.BigEndian.Uint16(body), int(binary.BigEndian.Uint16(body[2:4]))
		if 4+l > len(body) {
			return
		}
		fn(typ, body[4:4+l])
		adv := 4 + (l+3)&^3
		if adv > len(body) {
			return
		}
		body = body[adv:]
	}
}

// XORAddr decodes v, the value of an XOR-*-ADDRESS attribute of message p
// (the address is XORed with p's magic cookie and transaction ID). An
// IPv4-mapped IPv6 address comes back as IPv4. ok is false for a value
// too short for its family, an unknown family, or p shorter than a
// header.
func XORAddr(p, v []byte) (ap netip.AddrPort, ok bool) {
	if len(v) < 4 || len(p) < HeaderLen {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:4]) ^ uint16(MagicCookie>>16)
	switch v[1] {
	case FamilyIPv4:
		if len(v) < 8 {
			return netip.AddrPort{}, false
		}
		var a [4]byte
		for i := range a {
			a[i] = v[4+i] ^ p[4+i]
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case FamilyIPv6:
		if len(v) < 20 {
			return netip.AddrPort{}, false
		}
		var a [16]byte
		for i := range a {
			a[i] = v[4+i] ^ p[4+i] // the cookie, then the transaction ID
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}
