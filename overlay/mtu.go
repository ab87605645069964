package overlay

// Per-packet overhead of the path a tunnelled packet takes, in bytes. The
// arithmetic and its sources are in docs/mtu.md.
const (
	outerIPv4Header   = 20 // outer IPv4 header without options
	outerIPv6Header   = 40 // outer IPv6 fixed header
	outerUDPHeader    = 8
	turnChannelData   = 4  // TURN ChannelData header (RFC 8656 §12.4) when relayed
	dtlsRecordHeader  = 13 // DTLS 1.2 record header (RFC 6347 §4.1)
	aeadTag           = 16 // AES-GCM and ChaCha20-Poly1305 tag
	aeadExplicitNonce = 8  // AES-GCM explicit nonce in pion/dtls records (RFC 5288)
)

// TailRoom is the spare capacity the overlay leaves after every packet it
// hands to a PeerConn, so a link can append its AEAD tag in place. Buffers are
// much larger than this (see maxPacket); TailRoom is the guaranteed minimum.
const TailRoom = 64

// MinMTU is the smallest MTU the overlay accepts: IPv6 requires every link to
// carry 1280-byte packets (RFC 8200 §5).
const MinMTU = 1280

// maxPacket is the largest IP packet a buffer holds. TUN reads never exceed
// the device MTU, but the MTU can be raised on a live device; sizing buffers
// for any IP packet means that never breaks reads. The untouched tail of a
// large buffer costs address space, not memory.
const maxPacket = 65535

// PathOverhead describes the path under the overlay for TunnelMTU.
type PathOverhead struct {
	// IPv6 is true when the underlay path may be IPv6 (40-byte header instead
	// of 20).
	IPv6 bool
	// Relayed is true when the path may go through a TURN relay, which adds a
	// 4-byte ChannelData header.
	Relayed bool
	// ExplicitNonce is true when records carry an 8-byte explicit nonce, as
	// pion/dtls AES-GCM records do. meshd's own data records use the record
	// sequence number as the nonce and set it false.
	ExplicitNonce bool
}

// Bytes returns how many bytes the path adds to every IP packet the overlay
// carries.
func (o PathOverhead) Bytes() int {
	n := outerIPv4Header
	if o.IPv6 {
		n = outerIPv6Header
	}
	n += outerUDPHeader
	if o.Relayed {
		n += turnChannelData
	}
	n += dtlsRecordHeader + aeadTag
	if o.ExplicitNonce {
		n += aeadExplicitNonce
	}
	return n
}

// TunnelMTU returns the largest inner IP packet that fits in one underlay
// packet of underlayMTU bytes over a path with overhead o, never less than
// MinMTU (below that the underlay must fragment; IPv6 inside the overlay needs
// 1280).
func TunnelMTU(underlayMTU int, o PathOverhead) int {
	m := underlayMTU - o.Bytes()
	if m < MinMTU {
		return MinMTU
	}
	return m
}

// DefaultMTU is the TUN MTU used when Options.MTU is zero: a 1500-byte
// underlay in the worst case meshd supports on UDP (IPv6, relayed) with
// meshd's data records, which carry no explicit nonce:
// 1500 - (40+8+4+13+16) = 1419.
const DefaultMTU = 1500 - (outerIPv6Header + outerUDPHeader + turnChannelData +
	dtlsRecordHeader + aeadTag)
