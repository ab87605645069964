// Package testpkt builds IP packets with valid checksums for overlay's tests.
// It imports nothing of overlay, so overlay's own (internal) tests can use it;
// overlaytest re-exports it for everyone else.
package testpkt

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers for Packet.Proto.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flags for Packet.TCPFlags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
)

// Packet describes a test IP packet; Marshal builds it with valid
// checksums. The IP version follows Src (Src and Dst must be of one family).
type Packet struct {
	Src, Dst netip.Addr
	Proto    uint8 // ProtoTCP, ProtoUDP, ProtoICMP (v4), ProtoICMPv6 or any other
	SrcPort  uint16
	DstPort  uint16
	TCPFlags uint8
	ICMPType uint8
	ICMPCode uint8
	ICMPID   uint16
	ICMPSeq  uint16
	Payload  []byte
	TTL      uint8 // zero means 64
	DF       bool  // IPv4 don't-fragment
	// FragOffset (IPv4, in 8-byte units) and MoreFragments make a fragment.
	FragOffset    uint16
	MoreFragments bool
}

func sum(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// Checksum returns the Internet checksum of b (0 when b carries a valid one).
func Checksum(b []byte) uint16 { return fold(sum(b, 0)) }

// transport builds the transport header and payload; pseudo is the
// pseudo-header sum for TCP, UDP and ICMPv6.
func (p Packet) transport(pseudo func(proto uint8, n int) uint32) []byte {
	var t []byte
	switch p.Proto {
	case ProtoTCP:
		t = make([]byte, 20+len(p.Payload))
		binary.BigEndian.PutUint16(t[0:], p.SrcPort)
		binary.BigEndian.PutUint16(t[2:], p.DstPort)
		binary.BigEndian.PutUint32(t[4:], 1)
		t[12] = 5 << 4
		t[13] = p.TCPFlags
		binary.BigEndian.PutUint16(t[14:], 65535)
		copy(t[20:], p.Payload)
		binary.BigEndian.PutUint16(t[16:], fold(sum(t, pseudo(ProtoTCP, len(t)))))
	case ProtoUDP:
		t = make([]byte, 8+len(p.Payload))
		binary.BigEndian.PutUint16(t[0:], p.SrcPort)
		binary.BigEndian.PutUint16(t[2:], p.DstPort)
		binary.BigEndian.PutUint16(t[4:], uint16(len(t)))
		copy(t[8:], p.Payload)
		binary.BigEndian.PutUint16(t[6:], fold(sum(t, pseudo(ProtoUDP, len(t)))))
	case ProtoICMP, ProtoICMPv6:
		t = make([]byte, 8+len(p.Payload))
		t[0], t[1] = p.ICMPType, p.ICMPCode
		binary.BigEndian.PutUint16(t[4:], p.ICMPID)
		binary.BigEndian.PutUint16(t[6:], p.ICMPSeq)
		copy(t[8:], p.Payload)
		var s uint32
		if p.Proto == ProtoICMPv6 {
			s = pseudo(ProtoICMPv6, len(t))
		}
		binary.BigEndian.PutUint16(t[2:], fold(sum(t, s)))
	default:
		t = append([]byte(nil), p.Payload...)
	}
	return t
}

// Marshal returns the packet's bytes.
func (p Packet) Marshal() []byte {
	ttl := p.TTL
	if ttl == 0 {
		ttl = 64
	}
	src, dst := p.Src.AsSlice(), p.Dst.AsSlice()
	pseudo := func(proto uint8, n int) uint32 {
		return sum(dst, sum(src, 0)) + uint32(proto) + uint32(n)
	}
	t := p.transport(pseudo)
	if p.Src.Is4() {
		b := make([]byte, 20+len(t))
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		frag := p.FragOffset & 0x1fff
		if p.DF {
			frag |= 0x4000
		}
		if p.MoreFragments {
			frag |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:], frag)
		b[8] = ttl
		b[9] = p.Proto
		copy(b[12:], src)
		copy(b[16:], dst)
		binary.BigEndian.PutUint16(b[10:], Checksum(b[:20]))
		copy(b[20:], t)
		return b
	}
	b := make([]byte, 40+len(t))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(t)))
	b[6] = p.Proto
	b[7] = ttl
	copy(b[8:], src)
	copy(b[24:], dst)
	copy(b[40:], t)
	return b
}
