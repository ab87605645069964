package overlay

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers the overlay looks into.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// TCP flags the firewall's connection tracking cares about.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// maxIPv6ExtHeaders bounds the walk over IPv6 extension headers so that a
// crafted chain cannot make parsing expensive.
const maxIPv6ExtHeaders = 8

// packet is what the data path needs to know about one IP packet. It is
// filled in place by parse (no allocation) and reused for every packet of a
// batch.
type packet struct {
	src, dst netip.Addr
	length   int   // IP total length; bytes past it in the buffer are padding
	l4       int   // offset of the transport header, 0 when there is none
	proto    uint8 // transport protocol (after IPv6 extension headers)
	v6       bool
	// frag is true for a non-first fragment: it carries no transport header.
	frag bool
	// df is the IPv4 don't-fragment bit (always true for IPv6, which routers
	// never fragment).
	df       bool
	srcPort  uint16 // TCP/UDP
	dstPort  uint16 // TCP/UDP
	tcpFlags uint8
	icmpType uint8
	icmpCode uint8
	icmpID   uint16 // echo request/reply identifier
}

// parse fills p from the IP packet b (version 4 or 6). It returns a
// *malformedError (errors.Is ErrMalformed) for a truncated header, a bad
// version, a bad IHL, a length field beyond the buffer, or a first fragment too
// short to hold its transport header. It never panics, whatever b holds.
func (p *packet) parse(b []byte) error {
	*p = packet{}
	if len(b) < 1 {
		return errTruncated
	}
	switch b[0] >> 4 {
	case 4:
		return p.parse4(b)
	case 6:
		return p.parse6(b)
	default:
		return errBadVersion
	}
}

func (p *packet) parse4(b []byte) error {
	if len(b) < 20 {
		return errTruncated
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return errBadIHL
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl {
		return errLengthMismatch
	}
	if total > len(b) || ihl > len(b) {
		return errLengthMismatch
	}
	p.length = total
	p.proto = b[9]
	p.src = netip.AddrFrom4([4]byte(b[12:16]))
	p.dst = netip.AddrFrom4([4]byte(b[16:20]))
	frag := binary.BigEndian.Uint16(b[6:8])
	p.df = frag&0x4000 != 0
	if frag&0x1fff != 0 {
		p.frag = true
		return nil
	}
	return p.parseL4(b[:total], ihl)
}

func (p *packet) parse6(b []byte) error {
	if len(b) < 40 {
		return errTruncated
	}
	total := 40 + int(binary.BigEndian.Uint16(b[4:6]))
	if total > len(b) {
		return errLengthMismatch
	}
	p.v6 = true
	p.df = true
	p.length = total
	p.src = netip.AddrFrom16([16]byte(b[8:24]))
	p.dst = netip.AddrFrom16([16]byte(b[24:40]))
	b = b[:total]
	next, off := b[6], 40
	for i := 0; ; i++ {
		if i == maxIPv6ExtHeaders {
			return errTooManyExt
		}
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if off+2 > len(b) {
				return errTruncated
			}
			n := (int(b[off+1]) + 1) * 8
			if off+n > len(b) {
				return errTruncated
			}
			next, off = b[off], off+n
		case 51: // authentication header: length in 4-byte units, minus 2
			if off+2 > len(b) {
				return errTruncated
			}
			n := (int(b[off+1]) + 2) * 4
			if off+n > len(b) {
				return errTruncated
			}
			next, off = b[off], off+n
		case 44: // fragment
			if off+8 > len(b) {
				return errTruncated
			}
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			next = b[off]
			off += 8
			if fo&0xfff8 != 0 {
				p.proto = next
				p.frag = true
				return nil
			}
		default:
			p.proto = next
			return p.parseL4(b, off)
		}
	}
}

// parseL4 reads the transport header at b[off:] for the protocols the
// firewall matches on. Other protocols are accepted without looking further.
func (p *packet) parseL4(b []byte, off int) error {
	l := b[off:]
	switch p.proto {
	case protoTCP:
		if len(l) < 20 {
			return errShortL4
		}
		if d := int(l[12]>>4) * 4; d < 20 || d > len(l) {
			return errBadTCPOffset
		}
		p.srcPort = binary.BigEndian.Uint16(l[0:2])
		p.dstPort = binary.BigEndian.Uint16(l[2:4])
		p.tcpFlags = l[13]
	case protoUDP:
		if len(l) < 8 {
			return errShortL4
		}
		p.srcPort = binary.BigEndian.Uint16(l[0:2])
		p.dstPort = binary.BigEndian.Uint16(l[2:4])
	case protoICMP, protoICMPv6:
		if (p.proto == protoICMP) == p.v6 {
			// ICMPv4 in IPv6 or ICMPv6 in IPv4: carried, not interpreted.
			return nil
		}
		if len(l) < 8 {
			return errShortL4
		}
		p.icmpType = l[0]
		p.icmpCode = l[1]
		p.icmpID = binary.BigEndian.Uint16(l[4:6])
	default:
		return nil
	}
	p.l4 = off
	return nil
}

// isICMP reports whether p is ICMP of its own IP version.
func (p *packet) isICMP() bool {
	return p.l4 != 0 && (p.proto == protoICMP && !p.v6 || p.proto == protoICMPv6 && p.v6)
}

// isEcho reports whether p is an ICMP echo request or reply.
func (p *packet) isEcho() bool {
	if !p.isICMP() {
		return false
	}
	if p.v6 {
		return p.icmpType == 128 || p.icmpType == 129
	}
	return p.icmpType == 8 || p.icmpType == 0
}

// isICMPError reports whether p is an ICMP error message, which embeds the
// header of the packet that caused it.
func (p *packet) isICMPError() bool {
	if !p.isICMP() {
		return false
	}
	if p.v6 {
		return p.icmpType >= 1 && p.icmpType <= 4
	}
	switch p.icmpType {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}

// hasPorts reports whether p carries TCP or UDP ports.
func (p *packet) hasPorts() bool {
	return p.l4 != 0 && (p.proto == protoTCP || p.proto == protoUDP)
}

// parseEmbedded reads the packet header embedded in the ICMP error p (whose
// bytes are b) into q. The embedded packet is usually cut short, so only the
// addresses, the protocol and the first 8 transport bytes (ports, ICMP id)
// are read, and its length field is not checked against what is there.
func (p *packet) parseEmbedded(b []byte, q *packet) bool {
	*q = packet{}
	if !p.isICMPError() || p.l4+8 > len(b) {
		return false
	}
	in := b[p.l4+8:]
	if len(in) < 1 {
		return false
	}
	var off int
	switch in[0] >> 4 {
	case 4:
		if p.v6 || len(in) < 20 {
			return false
		}
		off = int(in[0]&0x0f) * 4
		if off < 20 || off > len(in) || binary.BigEndian.Uint16(in[6:8])&0x1fff != 0 {
			return false
		}
		q.proto = in[9]
		q.src = netip.AddrFrom4([4]byte(in[12:16]))
		q.dst = netip.AddrFrom4([4]byte(in[16:20]))
	case 6:
		if !p.v6 || len(in) < 40 {
			return false
		}
		q.v6 = true
		q.proto = in[6]
		q.src = netip.AddrFrom16([16]byte(in[8:24]))
		q.dst = netip.AddrFrom16([16]byte(in[24:40]))
		off = 40 // extension headers in an embedded packet are not followed
	default:
		return false
	}
	l := in[off:]
	if len(l) < 8 {
		return false
	}
	switch q.proto {
	case protoTCP, protoUDP:
		q.srcPort = binary.BigEndian.Uint16(l[0:2])
		q.dstPort = binary.BigEndian.Uint16(l[2:4])
	case protoICMP, protoICMPv6:
		q.icmpType = l[0]
		q.icmpID = binary.BigEndian.Uint16(l[4:6])
	default:
		return true
	}
	q.l4 = off
	return true
}
