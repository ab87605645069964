package record

import "encoding/binary"

// Wire constants of a data record (docs/protocol.md "Data records" has the layout).
const (
	// HeaderLen is the record header: type, version, epoch, sequence, length.
	HeaderLen = 13
	// TagLen is the AEAD tag behind the ciphertext (both ciphers).
	TagLen = 16
	// Overhead is what sealing adds to a plaintext.
	Overhead = HeaderLen + TagLen
	// MaxPlaintext is the largest plaintext a record carries, DTLS 1.2's
	// limit (2^14), so capture tools and the record length field agree.
	MaxPlaintext = 1 << 14

	// ContentType is the record's first byte: DTLS application_data. It is
	// inside RFC 7983's DTLS range (20..63).
	ContentType = 23
	// VersionMajor and VersionMinor are DTLS 1.2 on the wire ({254, 253}).
	VersionMajor = 254
	VersionMinor = 253

	// FirstEpoch and LastEpoch bound the epochs of data records. pion/dtls
	// uses epochs 0 and 1 and never renegotiates, so the ranges never meet.
	// Epochs advance by one per rekey and wrap from LastEpoch to FirstEpoch.
	FirstEpoch uint16 = 0x4000
	LastEpoch  uint16 = 0x7fff

	// epochSpan is the number of data epochs; epochHalf splits "behind"
	// from "ahead" when comparing two epochs on the circle.
	epochSpan = uint32(LastEpoch-FirstEpoch) + 1
	epochHalf = epochSpan / 2

	// maxSeq is the largest 48-bit sequence number.
	maxSeq = 1<<48 - 1
)

// Byte offsets inside the header.
const (
	offType    = 0
	offVersion = 1
	offEpoch   = 3
	offSeq     = 5
	offLength  = 11
)

// IsDataRecord reports whether b starts like a meshd data record: content
// type 23, version DTLS 1.2 and an epoch in FirstEpoch..LastEpoch. It reads
// only the header, never the body, and is meant for the receive-side
// demultiplexer: STUN (first byte 0..3), TURN ChannelData (64..79) and
// pion's own DTLS records (epochs 0 and 1) all report false. A true result
// says where to send the datagram, not that it is authentic.
func IsDataRecord(b []byte) bool {
	if len(b) < HeaderLen {
		return false
	}
	if b[offType] != ContentType || b[offVersion] != VersionMajor || b[offVersion+1] != VersionMinor {
		return false
	}
	return ValidEpoch(binary.BigEndian.Uint16(b[offEpoch:]))
}

// ValidEpoch reports whether e is a data-record epoch.
func ValidEpoch(e uint16) bool { return e >= FirstEpoch && e <= LastEpoch }

// NextEpoch returns the epoch that follows e: e+1, wrapping from LastEpoch
// to FirstEpoch. For an e outside the data range it returns FirstEpoch.
func NextEpoch(e uint16) uint16 {
	if e >= LastEpoch || e < FirstEpoch {
		return FirstEpoch
	}
	return e + 1
}

// epochDistance is how far b lies ahead of a on the epoch circle
// (0..epochSpan-1). Both must be valid epochs.
func epochDistance(a, b uint16) uint32 {
	return (uint32(b) - uint32(a) + epochSpan) % epochSpan
}

// putHeader writes a record header for epoch, seq and a body of bodyLen
// bytes (ciphertext + tag) into h, which must hold HeaderLen bytes.
func putHeader(h []byte, epoch uint16, seq uint64, bodyLen int) {
	_ = h[HeaderLen-1]
	h[offType] = ContentType
	h[offVersion] = VersionMajor
	h[offVersion+1] = VersionMinor
	// epoch (16 bits) and sequence (48 bits) are one big-endian 64-bit word,
	// the same 8 bytes that go into the nonce.
	binary.BigEndian.PutUint64(h[offEpoch:], uint64(epoch)<<48|seq)
	binary.BigEndian.PutUint16(h[offLength:], uint16(bodyLen))
}
