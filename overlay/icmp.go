package overlay

import (
	"encoding/binary"
	"time"
)

// ICMP errors the overlay writes back into the TUN so that local clients
// fail fast (EHOSTUNREACH, or a smaller path MTU) instead of timing out.
const (
	icmpUnreachable = iota // v4 3/1 host unreachable, v6 1/3 address unreachable
	icmpTooBig             // v4 3/4 fragmentation needed, v6 2/0 packet too big
)

// ICMP error rate limit: a token bucket owned by the TUN reader goroutine.
// Linux limits its own ICMP errors similarly (net.ipv4.icmp_ratelimit).
const (
	icmpRate  = 100 // per second
	icmpBurst = 20
	// icmpBufSize is the size of one ICMP error buffer: HeaderRoom plus the
	// IPv6 minimum MTU, which bounds an ICMPv6 error (RFC 4443 §2.4(c)).
	icmpBufSize = HeaderRoom + 1280
	// maxICMPPerBatch bounds the ICMP errors one TUN read can produce.
	maxICMPPerBatch = 8
)

type tokenBucket struct {
	credit int64 // nanoseconds of credit, at most icmpBurst intervals
	last   int64
}

func (t *tokenBucket) allow(now int64) bool {
	const interval = int64(time.Second) / icmpRate
	t.credit += now - t.last
	t.last = now
	if t.credit > icmpBurst*interval {
		t.credit = icmpBurst * interval
	}
	if t.credit < interval {
		return false
	}
	t.credit -= interval
	return true
}

// checksum is the Internet checksum (RFC 1071) of b, folded with initial.
func checksum(b []byte, initial uint32) uint16 {
	s := initial
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// shouldAnswer reports whether an ICMP error may be sent about packet p
// (RFC 1122 §3.2.2, RFC 4443 §2.4(e)): never about an ICMP error, a non-first
// fragment, or a packet whose source cannot be answered or whose destination
// is multicast or broadcast.
func shouldAnswer(p *packet) bool {
	if p.frag || p.isICMPError() {
		return false
	}
	if p.isICMP() && p.v6 && p.icmpType < 128 {
		return false
	}
	if !p.src.IsGlobalUnicast() {
		return false
	}
	if p.dst.IsMulticast() || p.dst.IsUnspecified() || p.dst.IsLinkLocalUnicast() {
		return false
	}
	if p.dst.Is4() && p.dst.As4() == [4]byte{255, 255, 255, 255} {
		return false
	}
	return true
}

// buildICMPError writes into out[HeaderRoom:] an ICMP error of the given kind
// about the packet orig (parsed as p) and returns its length, or 0 when none
// may be sent. The error comes from orig's destination: the kernel drops
// packets that claim to come from one of its own addresses, and the
// destination is the host that is unreachable. mtu is reported by
// icmpTooBig. out must hold icmpBufSize bytes.
func buildICMPError(out []byte, orig []byte, p *packet, kind int, mtu int) int {
	if len(out) < icmpBufSize || !shouldAnswer(p) {
		return 0
	}
	orig = orig[:p.length]
	b := out[HeaderRoom:]
	if !p.v6 {
		n := min(len(orig), 576-28) // RFC 1812 §4.3.2.3: up to 576 bytes in all
		total := 28 + n
		clear(b[:28])
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(total))
		b[8] = 64
		b[9] = protoICMP
		dst, src := p.dst.As4(), p.src.As4()
		copy(b[12:16], dst[:])
		copy(b[16:20], src[:])
		binary.BigEndian.PutUint16(b[10:], checksum(b[:20], 0))
		icmp := b[20:total]
		icmp[0] = 3
		icmp[1] = 1
		if kind == icmpTooBig {
			icmp[1] = 4
			binary.BigEndian.PutUint16(icmp[6:], uint16(mtu))
		}
		copy(icmp[8:], orig[:n])
		binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, 0))
		return total
	}
	n := min(len(orig), 1280-48)
	total := 48 + n
	clear(b[:48])
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(8+n))
	b[6] = protoICMPv6
	b[7] = 64
	dst, src := p.dst.As16(), p.src.As16()
	copy(b[8:24], dst[:])
	copy(b[24:40], src[:])
	icmp := b[40:total]
	icmp[0] = 1
	icmp[1] = 3
	if kind == icmpTooBig {
		icmp[0] = 2
		icmp[1] = 0
		binary.BigEndian.PutUint32(icmp[4:], uint32(mtu))
	}
	copy(icmp[8:], orig[:n])
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, pseudoSum6(b[8:24], b[24:40], len(icmp))))
	return total
}

// pseudoSum6 is the unfolded sum of the IPv6 pseudo-header for ICMPv6.
func pseudoSum6(src, dst []byte, length int) uint32 {
	var s uint32
	for i := 0; i < 16; i += 2 {
		s += uint32(binary.BigEndian.Uint16(src[i:])) + uint32(binary.BigEndian.Uint16(dst[i:]))
	}
	return s + uint32(length) + protoICMPv6
}
