package tunnel

import (
	"encoding/binary"
	"fmt"
)

// SignalVersion is the version of the signal wire format this package
// speaks. Signals are the messages two nodes exchange through the
// coordinators to set up a link (Signaler carries them as opaque bytes).
//
// # Signal wire format, version 1
//
// All integers are big-endian. A signal is at most MaxSignalSize bytes:
//
//	offset size  field
//	0      1     version = 1
//	1      1     kind: 1 offer, 2 answer, 3 candidate, 4 end-of-candidates, 5 restart
//	2      8     generation (uint64)
//	10     ...   body, by kind (below); nothing may follow it
//
//	offer, answer:      ufrag-len (1) ufrag (4..64 ice-chars)  pwd-len (1) pwd (22..128 ice-chars)
//	candidate:          len (2) candidate (1..512 bytes: an RFC 8839 candidate-attribute value,
//	                    "candidate:" prefix optional, printable ASCII and spaces)
//	end-of-candidates:  empty
//	restart:            reason (1): 0 unspecified, 1 no session (the sender has none), 2 session failed
//
// ice-char is ALPHA / DIGIT / "+" / "/" (RFC 8445).
//
// # Exchange
//
// Roles are fixed by certificate fingerprints (see Peer.Fingerprint): the
// node with the smaller one is ICE-controlling and DTLS client ("A"), the
// other is controlled and DTLS server ("B").
//
// A session is one ICE generation: a number A picks (its clock in
// nanoseconds when the attempt starts, and at least one more than its
// previous generation), so that a restarted node's offers supersede the
// ones it sent before it restarted. Every signal carries the generation it
// belongs to and is ignored by a receiver that is on another generation.
//
//   - A starts an attempt: offer (its ICE ufrag and pwd), then its
//     candidates as it gathers them (trickle), then end-of-candidates.
//   - B, on an offer with a generation newer than its own (or any offer when
//     it has no live session), drops its old session, answers with its own
//     ufrag and pwd, and trickles its candidates the same way. A candidate
//     that arrives before its offer is kept until the offer comes.
//   - A starts checks on the answer; both sides run DTLS over the pair ICE
//     selects (A is the client). Path changes inside a generation (relay to
//     direct and back) need no signals: A renominates the pair in ICE.
//   - Recovery: when A's attempt fails it starts a new generation after a
//     backoff. When B's fails, or when B starts and has no session, B sends
//     restart (with its generation, 0 if it has none); A then starts a new
//     generation, or resends its current offer and candidates if B simply
//     has not seen them yet.
//
// Coordinators see ICE credentials and addresses but cannot impersonate a
// node: the DTLS handshake checks the peer certificate against the CA, the
// CRL and the expected name and address. A forged signal can at worst
// disturb a link (denial of service), never redirect it.
const SignalVersion = 1

// MaxSignalSize is the largest signal a decoder accepts.
const MaxSignalSize = 1024

// Field limits of the version 1 format.
const (
	signalHeaderLen = 10
	minUfragLen     = 4
	maxUfragLen     = 64
	minPwdLen       = 22
	maxPwdLen       = 128
	maxCandidateLen = 512
)

// signalKind is the second byte of a signal.
type signalKind uint8

const (
	kindOffer           signalKind = 1
	kindAnswer          signalKind = 2
	kindCandidate       signalKind = 3
	kindEndOfCandidates signalKind = 4
	kindRestart         signalKind = 5
)

func (k signalKind) String() string {
	switch k {
	case kindOffer:
		return "offer"
	case kindAnswer:
		return "answer"
	case kindCandidate:
		return "candidate"
	case kindEndOfCandidates:
		return "end-of-candidates"
	case kindRestart:
		return "restart"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// restartReason says why B asks A for a new session.
type restartReason uint8

const (
	restartUnspecified restartReason = 0
	restartNoSession   restartReason = 1
	restartFailed      restartReason = 2
	maxRestartReason                 = restartFailed
)

// signal is one decoded signal.
type signal struct {
	kind       signalKind
	generation uint64
	ufrag, pwd string        // offer, answer
	candidate  string        // candidate
	reason     restartReason // restart
}

// marshal encodes s, checking the same limits the decoder enforces so that
// this node never sends what a peer would reject.
func (s signal) marshal() ([]byte, error) {
	b := make([]byte, signalHeaderLen, signalHeaderLen+4+len(s.ufrag)+len(s.pwd)+len(s.candidate))
	b[0] = SignalVersion
	b[1] = byte(s.kind)
	binary.BigEndian.PutUint64(b[2:], s.generation)
	switch s.kind {
	case kindOffer, kindAnswer:
		if err := checkICEString("ufrag", s.ufrag, minUfragLen, maxUfragLen); err != nil {
			return nil, err
		}
		if err := checkICEString("pwd", s.pwd, minPwdLen, maxPwdLen); err != nil {
			return nil, err
		}
		b = append(b, byte(len(s.ufrag)))
		b = append(b, s.ufrag...)
		b = append(b, byte(len(s.pwd)))
		b = append(b, s.pwd...)
	case kindCandidate:
		if err := checkCandidate(s.candidate); err != nil {
			return nil, err
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.candidate)))
		b = append(b, s.candidate...)
	case kindEndOfCandidates:
	case kindRestart:
		if s.reason > maxRestartReason {
			return nil, fmt.Errorf("%w: restart reason %d", ErrBadSignal, s.reason)
		}
		b = append(b, byte(s.reason))
	default:
		return nil, fmt.Errorf("%w: unknown kind %d", ErrBadSignal, s.kind)
	}
	return b, nil
}

// parseSignal decodes b. It rejects oversized input, unknown versions and
// kinds, truncation, trailing bytes and invalid fields with an error (never
// a panic). The returned strings do not alias b.
func parseSignal(b []byte) (signal, error) {
	var s signal
	if len(b) > MaxSignalSize {
		return s, fmt.Errorf("%w: %d bytes, the limit is %d", ErrSignalTooLarge, len(b), MaxSignalSize)
	}
	if len(b) < signalHeaderLen {
		return s, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrBadSignal, len(b), signalHeaderLen)
	}
	if b[0] != SignalVersion {
		return s, fmt.Errorf("%w: version %d, this node speaks %d", ErrSignalVersion, b[0], SignalVersion)
	}
	s.kind = signalKind(b[1])
	s.generation = binary.BigEndian.Uint64(b[2:])
	body := b[signalHeaderLen:]
	var err error
	switch s.kind {
	case kindOffer, kindAnswer:
		if s.ufrag, body, err = readString8(body, "ufrag"); err != nil {
			return s, err
		}
		if err = checkICEString("ufrag", s.ufrag, minUfragLen, maxUfragLen); err != nil {
			return s, err
		}
		if s.pwd, body, err = readString8(body, "pwd"); err != nil {
			return s, err
		}
		if err = checkICEString("pwd", s.pwd, minPwdLen, maxPwdLen); err != nil {
			return s, err
		}
	case kindCandidate:
		if len(body) < 2 {
			return s, fmt.Errorf("%w: candidate length missing", ErrBadSignal)
		}
		n := int(binary.BigEndian.Uint16(body))
		body = body[2:]
		if n > len(body) {
			return s, fmt.Errorf("%w: candidate of %d bytes truncated to %d", ErrBadSignal, n, len(body))
		}
		s.candidate = string(body[:n])
		body = body[n:]
		if err = checkCandidate(s.candidate); err != nil {
			return s, err
		}
	case kindEndOfCandidates:
	case kindRestart:
		if len(body) < 1 {
			return s, fmt.Errorf("%w: restart reason missing", ErrBadSignal)
		}
		s.reason = restartReason(body[0])
		body = body[1:]
		if s.reason > maxRestartReason {
			return s, fmt.Errorf("%w: restart reason %d", ErrBadSignal, s.reason)
		}
	default:
		return s, fmt.Errorf("%w: unknown kind %d", ErrBadSignal, b[1])
	}
	if len(body) != 0 {
		return s, fmt.Errorf("%w: %d trailing bytes after the %s", ErrBadSignal, len(body), s.kind)
	}
	return s, nil
}

func readString8(b []byte, field string) (string, []byte, error) {
	if len(b) < 1 {
		return "", nil, fmt.Errorf("%w: %s length missing", ErrBadSignal, field)
	}
	n := int(b[0])
	if n > len(b)-1 {
		return "", nil, fmt.Errorf("%w: %s of %d bytes truncated to %d", ErrBadSignal, field, n, len(b)-1)
	}
	return string(b[1 : 1+n]), b[1+n:], nil
}

func checkICEString(field, s string, minLen, maxLen int) error {
	if len(s) < minLen || len(s) > maxLen {
		return fmt.Errorf("%w: %s is %d characters, want %d..%d", ErrBadSignal, field, len(s), minLen, maxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/') {
			return fmt.Errorf("%w: %s has a character outside ice-char at %d", ErrBadSignal, field, i)
		}
	}
	return nil
}

func checkCandidate(s string) error {
	if len(s) == 0 || len(s) > maxCandidateLen {
		return fmt.Errorf("%w: candidate is %d bytes, want 1..%d", ErrBadSignal, len(s), maxCandidateLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%w: candidate has a non-printable byte at %d", ErrBadSignal, i)
		}
	}
	return nil
}
