package discovery

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// Session frame format (docs/protocol.md, "Session frames"):
//
//	+---------+---------+-------------------+-----------------+
//	| version | type    | length (u32, BE)  | payload         |
//	| 1 byte  | 1 byte  | 4 bytes           | length bytes    |
//	+---------+---------+-------------------+-----------------+
//
// version is frameVersion; length is at most MaxFrameSize. Every payload is
// decoded exactly (no trailing bytes).
const (
	frameVersion   = 1
	frameHeaderLen = 6

	// MaxFrameSize bounds one frame's payload.
	MaxFrameSize = 64 << 10
	// MaxSignalPayload bounds the opaque payload of one signal.
	MaxSignalPayload = 32 << 10

	maxTURNURLs  = 16
	maxErrorText = 1024
)

// sessionALPN is the TLS application protocol of node sessions; a peer that
// does not offer it is not a meshd session.
const sessionALPN = "meshd-session/1"

type frameType uint8

// Node → coordinator.
const (
	frameRecord frameType = 0x01 // register or update the node's signed record
	frameLeave  frameType = 0x02 // signed tombstone record; the node leaves the mesh
	frameSignal frameType = 0x03 // opaque signal to another node
	framePing   frameType = 0x04 // keepalive; answered by Pong
)

// Coordinator → node.
const (
	frameWelcome       frameType = 0x10 // registration accepted
	frameSnapshotBegin frameType = 0x11 // a full registry follows
	frameEntry         frameType = 0x12 // one registry entry (presence + signed record)
	frameSnapshotEnd   frameType = 0x13 // end of the full registry
	frameRemove        frameType = 0x14 // a node was dropped from the registry
	frameDeliver       frameType = 0x15 // a signal from another node
	frameSignalResult  frameType = 0x16 // outcome of one of this node's signals
	frameTURN          frameType = 0x17 // TURN credentials
	framePong          frameType = 0x18 // keepalive answer
	frameError         frameType = 0x1f // error; fatal codes close the session
)

// Both directions.
const (
	frameCRL frameType = 0x20 // a CA-signed CRL (DER)
)

func (t frameType) String() string {
	switch t {
	case frameRecord:
		return "record"
	case frameLeave:
		return "leave"
	case frameSignal:
		return "signal"
	case framePing:
		return "ping"
	case frameWelcome:
		return "welcome"
	case frameSnapshotBegin:
		return "snapshot-begin"
	case frameEntry:
		return "entry"
	case frameSnapshotEnd:
		return "snapshot-end"
	case frameRemove:
		return "remove"
	case frameDeliver:
		return "deliver"
	case frameSignalResult:
		return "signal-result"
	case frameTURN:
		return "turn"
	case framePong:
		return "pong"
	case frameError:
		return "error"
	case frameCRL:
		return "crl"
	default:
		return fmt.Sprintf("frame-%#x", uint8(t))
	}
}

// removeReason says why a node left the registry (Remove frames).
type removeReason uint8

const (
	removeLeft    removeReason = 1 // signed tombstone
	removeRevoked removeReason = 2 // certificate revoked by a CRL
	removeExpired removeReason = 3 // offline too long, or certificate expired
)

func (r removeReason) String() string {
	switch r {
	case removeLeft:
		return "left"
	case removeRevoked:
		return "revoked"
	case removeExpired:
		return "expired"
	default:
		return fmt.Sprintf("reason-%d", uint8(r))
	}
}

// TURNCredentials are short-lived credentials for the coordinators' TURN
// servers (and any external TURN sharing the secret), in the coturn
// static-auth-secret scheme: Username is "<unix expiry>:<node name>" and
// Password is base64(HMAC-SHA1(secret, Username)).
type TURNCredentials struct {
	URLs     []string // stun:/turn:/turns: URLs (RFC 7064/7065)
	Username string
	Password string
	Expires  time.Time
}

// frame is one decoded session frame; which fields are set depends on typ.
type frame struct {
	typ frameType

	raw     []byte        // record, leave: signed record
	entry   rawEntry      // entry
	id      uint32        // signal, signal-result
	name    string        // signal: target; deliver: sender; welcome: coordinator; remove: node
	payload []byte        // signal, deliver
	code    uint8         // signal-result, error, remove (reason)
	version uint64        // welcome: accepted record version; remove: record version; error: version held (stale record) or retry-after ms (duplicate identity)
	since   int64         // welcome: session start (unix ns)
	period  time.Duration // welcome: keepalive interval
	count   uint32        // snapshot-begin: at most MaxRegistryEntries
	nonce   uint64        // ping, pong
	text    string        // error
	turn    TURNCredentials
	crl     []byte // crl: DER
}

// encodeFrame builds a frame whose payload fill writes.
func encodeFrame(t frameType, fill func(w *wbuf)) []byte {
	w := wbuf{b: make([]byte, frameHeaderLen, 64)}
	w.b[0] = frameVersion
	w.b[1] = byte(t)
	if fill != nil {
		fill(&w)
	}
	binary.BigEndian.PutUint32(w.b[2:6], uint32(len(w.b)-frameHeaderLen))
	return w.b
}

func recordFrame(t frameType, rec *Record) []byte {
	return encodeFrame(t, func(w *wbuf) { w.b = append(w.b, rec.raw...) })
}

func signalFrame(id uint32, to string, payload []byte) []byte {
	return encodeFrame(frameSignal, func(w *wbuf) { w.u32(id); w.str8(to); w.bytes16(payload) })
}

func pingFrame(t frameType, nonce uint64) []byte {
	return encodeFrame(t, func(w *wbuf) { w.u64(nonce) })
}

func welcomeFrame(coord string, since int64, keepalive time.Duration, version uint64) []byte {
	return encodeFrame(frameWelcome, func(w *wbuf) {
		w.str8(coord)
		w.i64(since)
		w.u32(uint32(keepalive / time.Millisecond))
		w.u64(version)
	})
}

func snapshotBeginFrame(n int) []byte {
	return encodeFrame(frameSnapshotBegin, func(w *wbuf) { w.u32(uint32(n)) })
}

func entryFrame(rec *Record) []byte {
	return encodeFrame(frameEntry, func(w *wbuf) { encodeEntry(w, rec) })
}

func removeFrame(name string, version uint64, why removeReason) []byte {
	return encodeFrame(frameRemove, func(w *wbuf) { w.str8(name); w.u64(version); w.u8(uint8(why)) })
}

func deliverFrame(from string, payload []byte) []byte {
	return encodeFrame(frameDeliver, func(w *wbuf) { w.str8(from); w.bytes16(payload) })
}

func signalResultFrame(id uint32, code signalCode) []byte {
	return encodeFrame(frameSignalResult, func(w *wbuf) { w.u32(id); w.u8(uint8(code)) })
}

func turnFrame(c TURNCredentials) []byte {
	return encodeFrame(frameTURN, func(w *wbuf) {
		w.u8(uint8(len(c.URLs)))
		for _, u := range c.URLs {
			w.str8(u)
		}
		w.str8(c.Username)
		w.str8(c.Password)
		w.i64(unixNano(c.Expires))
	})
}

func errorFrame(code ErrorCode, have uint64, text string) []byte {
	if len(text) > maxErrorText {
		text = text[:maxErrorText]
	}
	return encodeFrame(frameError, func(w *wbuf) { w.u8(uint8(code)); w.u64(have); w.u16(uint16(len(text))); w.b = append(w.b, text...) })
}

func crlFrame(der []byte) []byte {
	return encodeFrame(frameCRL, func(w *wbuf) { w.b = append(w.b, der...) })
}

// frameHeader validates a frame header and returns its type and payload length.
func frameHeader(h []byte) (frameType, int, error) {
	if h[0] != frameVersion {
		return 0, 0, fmt.Errorf("%w: session frame version %d (this build speaks %d)", ErrUnsupportedVersion, h[0], frameVersion)
	}
	n := binary.BigEndian.Uint32(h[2:6])
	if n > MaxFrameSize {
		return 0, 0, fmt.Errorf("%w: %w: %s frame announces %d bytes, limit %d", ErrFrameTooLarge, ErrLimitExceeded, frameType(h[1]), n, MaxFrameSize)
	}
	return frameType(h[1]), int(n), nil
}

// readFrame reads and decodes one frame from r. The returned frame owns its
// byte slices.
func readFrame(r io.Reader, hdr *[frameHeaderLen]byte) (frame, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	t, n, err := frameHeader(hdr[:])
	if err != nil {
		return frame{}, err
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	return decodePayload(t, payload)
}

// decodeFrame decodes one frame from the front of b and returns how many
// bytes it used. It is the byte-slice form of readFrame (fuzzed).
func decodeFrame(b []byte) (frame, int, error) {
	if len(b) < frameHeaderLen {
		return frame{}, 0, fmt.Errorf("%w: %d bytes, frame header needs %d", ErrMalformed, len(b), frameHeaderLen)
	}
	t, n, err := frameHeader(b[:frameHeaderLen])
	if err != nil {
		return frame{}, 0, err
	}
	if len(b)-frameHeaderLen < n {
		return frame{}, 0, fmt.Errorf("%w: %s frame announces %d bytes, %d present", ErrMalformed, t, n, len(b)-frameHeaderLen)
	}
	f, err := decodePayload(t, b[frameHeaderLen:frameHeaderLen+n])
	return f, frameHeaderLen + n, err
}

// decodePayload decodes the payload p of a frame of type t; p is retained.
func decodePayload(t frameType, p []byte) (frame, error) {
	f := frame{typ: t}
	r := rbuf{b: p}
	switch t {
	case frameRecord, frameLeave:
		if len(p) == 0 {
			return f, fmt.Errorf("%w: empty %s frame", ErrMalformed, t)
		}
		if len(p) > MaxRecordSize {
			return f, fmt.Errorf("%w: %w: %s frame carries %d record bytes, limit %d", ErrMalformed, ErrLimitExceeded, t, len(p), MaxRecordSize)
		}
		f.raw = p
		r.b = nil
	case frameSignal:
		f.id = r.u32("signal id")
		f.name = r.str8("signal target", maxNameLen)
		f.payload = r.bytes16("signal payload", MaxSignalPayload)
	case framePing, framePong:
		f.nonce = r.u64("nonce")
	case frameWelcome:
		f.name = r.str8("coordinator", maxNameLen)
		f.since = r.i64("since")
		f.period = time.Duration(r.u32("keepalive")) * time.Millisecond
		f.version = r.u64("accepted version")
	case frameSnapshotBegin:
		// Bounded here, before the client sizes its snapshot by it.
		f.count = uint32(r.count("snapshot count", MaxRegistryEntries))
	case frameEntry:
		f.entry = decodeEntry(&r)
	case frameSnapshotEnd:
	case frameRemove:
		f.name = r.str8("node", maxNameLen)
		f.version = r.u64("version")
		f.code = r.u8("reason")
	case frameDeliver:
		f.name = r.str8("signal sender", maxNameLen)
		f.payload = r.bytes16("signal payload", MaxSignalPayload)
	case frameSignalResult:
		f.id = r.u32("signal id")
		f.code = r.u8("signal result")
	case frameTURN:
		n := int(r.u8("url count"))
		if n > maxTURNURLs {
			r.failLimit("TURN url count", uint64(n), maxTURNURLs)
		}
		for i := 0; i < n && r.err == nil; i++ {
			f.turn.URLs = append(f.turn.URLs, r.str8("url", 255))
		}
		f.turn.Username = r.str8("username", 255)
		f.turn.Password = r.str8("password", 255)
		f.turn.Expires = fromUnixNano(r.i64("expires"))
	case frameError:
		f.code = r.u8("error code")
		f.version = r.u64("version held")
		f.text = string(r.bytes16("error text", maxErrorText))
	case frameCRL:
		if len(p) == 0 {
			return f, fmt.Errorf("%w: empty CRL frame", ErrMalformed)
		}
		f.crl = p
		r.b = nil
	default:
		return f, fmt.Errorf("%w: unknown session frame type %#x", ErrMalformed, uint8(t))
	}
	if err := r.done(t.String() + " frame"); err != nil {
		return f, err
	}
	return f, nil
}
