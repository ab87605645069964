package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func validSignals() []signal {
	return []signal{
		{kind: kindOffer, generation: 1, ufrag: "abcd", pwd: strings.Repeat("p", 22)},
		{kind: kindAnswer, generation: 1<<63 + 5, ufrag: "Zz09+/Zz09+/abcd", pwd: strings.Repeat("Q/+9", 32)},
		{kind: kindCandidate, generation: 7, candidate: "1966762134 1 udp 2130706431 192.0.2.1 40000 typ host"},
		{kind: kindCandidate, generation: 7, candidate: "candidate:2 1 udp 16777215 198.51.100.7 50000 typ relay raddr 0.0.0.0 rport 41234"},
		{kind: kindEndOfCandidates, generation: 9},
		{kind: kindRestart, generation: 0, reason: restartNoSession},
		{kind: kindRestart, generation: 12345, reason: restartFailed},
	}
}

func TestSignalRoundTrip(t *testing.T) {
	for _, s := range validSignals() {
		b, err := s.marshal()
		if err != nil {
			t.Fatalf("marshal %+v: %v", s, err)
		}
		if len(b) > MaxSignalSize {
			t.Fatalf("%s encodes to %d bytes, over MaxSignalSize", s.kind, len(b))
		}
		got, err := parseSignal(b)
		if err != nil {
			t.Fatalf("parse %s: %v", s.kind, err)
		}
		if got != s {
			t.Fatalf("round trip: got %+v, want %+v", got, s)
		}
	}
}

func TestSignalWireLayout(t *testing.T) {
	b, err := signal{kind: kindRestart, generation: 0x0102030405060708, reason: restartFailed}.marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{1, 5, 1, 2, 3, 4, 5, 6, 7, 8, 2}
	if !bytes.Equal(b, want) {
		t.Fatalf("restart encodes as %x, want %x", b, want)
	}
	b, err = signal{kind: kindOffer, generation: 1, ufrag: "abcd", pwd: strings.Repeat("x", 22)}.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if b[10] != 4 || string(b[11:15]) != "abcd" || b[15] != 22 || len(b) != 16+22 {
		t.Fatalf("offer layout wrong: %x", b)
	}
}

func TestSignalDecodeRejects(t *testing.T) {
	good := func(s signal) []byte {
		b, err := s.marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	offer := good(validSignals()[0])
	cand := good(validSignals()[2])
	header := func(kind byte) []byte {
		b := make([]byte, signalHeaderLen)
		b[0], b[1] = SignalVersion, kind
		return b
	}
	candWithLen := func(n int, body string) []byte {
		b := header(byte(kindCandidate))
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		return append(b, body...)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrBadSignal},
		{"short header", offer[:9], ErrBadSignal},
		{"version 0", append([]byte{0}, offer[1:]...), ErrSignalVersion},
		{"version 2", append([]byte{2}, offer[1:]...), ErrSignalVersion},
		{"unknown kind 0", header(0), ErrBadSignal},
		{"unknown kind 6", header(6), ErrBadSignal},
		{"oversized", make([]byte, MaxSignalSize+1), ErrSignalTooLarge},
		{"offer truncated", offer[:len(offer)-1], ErrBadSignal},
		{"offer trailing byte", append(bytes.Clone(offer), 0), ErrBadSignal},
		{"offer no body", header(byte(kindOffer)), ErrBadSignal},
		{"ufrag too short", append(header(byte(kindOffer)), append([]byte{3}, "abc"...)...), ErrBadSignal},
		{"ufrag bad char", good2(header(byte(kindOffer)), "ab:d", strings.Repeat("p", 22)), ErrBadSignal},
		{"pwd too short", good2(header(byte(kindOffer)), "abcd", strings.Repeat("p", 21)), ErrBadSignal},
		{"pwd bad char", good2(header(byte(kindAnswer)), "abcd", strings.Repeat("p", 21)+"\x00"), ErrBadSignal},
		{"candidate truncated", cand[:len(cand)-3], ErrBadSignal},
		{"candidate length missing", header(byte(kindCandidate)), ErrBadSignal},
		{"candidate empty", candWithLen(0, ""), ErrBadSignal},
		{"candidate too long", candWithLen(maxCandidateLen+1, strings.Repeat("a", maxCandidateLen+1)), ErrBadSignal},
		{"candidate control char", candWithLen(3, "a\nb"), ErrBadSignal},
		{"candidate trailing", append(bytes.Clone(cand), 'x'), ErrBadSignal},
		{"eoc trailing", append(header(byte(kindEndOfCandidates)), 0), ErrBadSignal},
		{"restart no reason", header(byte(kindRestart)), ErrBadSignal},
		{"restart bad reason", append(header(byte(kindRestart)), 3), ErrBadSignal},
		{"restart trailing", append(header(byte(kindRestart)), 1, 0), ErrBadSignal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSignal(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("parseSignal = %v, want %v", err, tc.want)
			}
		})
	}
}

// good2 appends an offer/answer body without validating it.
func good2(h []byte, ufrag, pwd string) []byte {
	h = append(h, byte(len(ufrag)))
	h = append(h, ufrag...)
	h = append(h, byte(len(pwd)))
	return append(h, pwd...)
}

func TestSignalMarshalRejects(t *testing.T) {
	for _, s := range []signal{
		{kind: kindOffer, ufrag: "abc", pwd: strings.Repeat("p", 22)},
		{kind: kindAnswer, ufrag: "abcd", pwd: "short"},
		{kind: kindCandidate, candidate: ""},
		{kind: kindCandidate, candidate: strings.Repeat("x", maxCandidateLen+1)},
		{kind: kindRestart, reason: 9},
		{kind: 42},
	} {
		if _, err := s.marshal(); !errors.Is(err, ErrBadSignal) {
			t.Errorf("marshal %+v = %v, want ErrBadSignal", s, err)
		}
	}
}

// FuzzParseSignal: the decoder never panics, never accepts more than
// MaxSignalSize, and whatever it accepts re-encodes to the same bytes.
func FuzzParseSignal(f *testing.F) {
	for _, s := range validSignals() {
		b, err := s.marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff})
	f.Add([]byte{2, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseSignal(b)
		if err != nil {
			return
		}
		if len(b) > MaxSignalSize {
			t.Fatalf("accepted %d bytes", len(b))
		}
		out, err := s.marshal()
		if err != nil {
			t.Fatalf("accepted %x but cannot re-encode %+v: %v", b, s, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, out)
		}
	})
}
