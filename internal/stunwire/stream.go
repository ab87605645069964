package stunwire

import "encoding/binary"

// TURN over TCP and TLS (RFC 6062, RFC 8656 §12.5) carries STUN messages
// and ChannelData frames back to back on one stream, ChannelData padded to
// a multiple of 4 bytes. Both ends of meshd's stream fast paths — the
// embedded server's connections (discovery) and the relay client's stream
// (tunnel) — cut that stream beneath pion, which cuts the same bytes again
// in its STUNConn (pion/turn internal/proto consumeSingleTURNFrame, the
// same code in pion's client and server). Every frame cut here must be
// cut the same by pion, whatever pion has buffered at the time, or pion
// and the fast path disagree about where frames start from then on. So
// the client and the server need one cut, not two: StreamFrame.

// ChannelHeaderLen is the length of a ChannelData header: channel number
// and length.
const ChannelHeaderLen = 4

// MinChannelFrame and MaxChannelFrame bound the channel numbers pion cuts
// as ChannelData on a stream (RFC 5766's 0x4000-0x7FFF; RFC 8656 binds
// only 0x4000-0x4FFF, but pion frames the whole range).
const (
	MinChannelFrame = 0x4000
	MaxChannelFrame = 0x7fff
)

// FrameKind says what StreamFrame found at the start of a stream.
type FrameKind uint8

const (
	// FrameIncomplete: too few bytes to tell; read more.
	FrameIncomplete FrameKind = iota
	// FrameSTUN: a STUN message.
	FrameSTUN
	// FrameChannelData: a ChannelData frame, padding included.
	FrameChannelData
	// FrameUnframed: no frame pion is sure to cut the same; from here on
	// the stream is pion's, unparsed.
	FrameUnframed
)

func (k FrameKind) String() string {
	switch k {
	case FrameIncomplete:
		return "incomplete"
	case FrameSTUN:
		return "stun"
	case FrameChannelData:
		return "channelData"
	case FrameUnframed:
		return "unframed"
	}
	return "unknown"
}

// StreamFrame returns the length and kind of the frame at the start of b,
// a TURN stream cut at frame boundaries so far. n may exceed len(b): the
// frame is not all there yet (the caller decides by n whether to wait for
// it); n is 0 unless kind is FrameSTUN or FrameChannelData, and never more
// than 0xffff. The edge cases, each where pion's cut could differ:
//
//   - Fewer than 8 bytes: FrameIncomplete, even for an empty ChannelData
//     frame (4 bytes). Bytes 4-8 decide whether pion sees the magic cookie,
//     and for a frame shorter than 8 they are the next frame's (pion itself
//     cuts nothing below 9 bytes).
//   - Bytes 0-2 a channel number (first byte 0x40-0x7F) and bytes 4-8 not
//     the magic cookie: ChannelData, 4 + length padded to 4.
//   - First two bits 00 and bytes 4-8 the magic cookie: STUN, 20 + length.
//   - A channel number with the magic cookie at bytes 4-8 (a ChannelData
//     payload that starts with it, or an empty frame followed by a STUN
//     message): FrameUnframed. pion cuts STUN once it holds 20 bytes and
//     ChannelData before, so its cut depends on how the stream was read.
//   - The magic cookie after a first byte of 0x80 or more: FrameUnframed.
//     pion would cut a STUN message, but no STUN message starts so
//     (RFC 8489 §6, RFC 7983); neither end follows such a stream further.
//   - Anything else (no cookie, no channel number): FrameUnframed.
//   - A frame longer than 0xffff (a STUN length above 65515, a ChannelData
//     length above 65531): FrameUnframed. pion computes the length in 16
//     bits, which wrap there, and would cut a short frame.
//
// borrowed: b is only read, during the call.
func StreamFrame(b []byte) (n int, kind FrameKind) {
	if len(b) < 8 {
		return 0, FrameIncomplete
	}
	ch := binary.BigEndian.Uint16(b[0:2])
	length := int(binary.BigEndian.Uint16(b[2:4]))
	cookie := binary.BigEndian.Uint32(b[4:8]) == MagicCookie
	switch {
	case ch >= MinChannelFrame && ch <= MaxChannelFrame && !cookie:
		n, kind = ChannelHeaderLen+(length+3)&^3, FrameChannelData
	case b[0]&0xc0 == 0 && cookie:
		n, kind = HeaderLen+length, FrameSTUN
	default:
		return 0, FrameUnframed
	}
	if n > 0xffff {
		return 0, FrameUnframed
	}
	return n, kind
}
