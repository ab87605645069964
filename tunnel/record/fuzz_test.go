package record

import (
	"encoding/binary"
	"testing"
)

// FuzzOpen: arbitrary input never panics and never authenticates under a
// session whose keys the input's author does not have. Seeds are
// well-formed records sealed under other keys (every epoch case), so the
// fuzzer starts deep in the opener.
func FuzzOpen(f *testing.F) {
	for _, c := range ciphers {
		stranger, _ := newPair(f, "stranger", c, Options{})
		for _, n := range []int{0, 1, 100, 1400} {
			f.Add(seal(f, stranger.w, payload(n, byte(n))))
		}
	}
	f.Add([]byte{})
	f.Add(dtlsHeader(23, 254, 253, FirstEpoch, TagLen))
	f.Add(dtlsHeader(23, 254, 253, FirstEpoch+1, 40))
	f.Add(dtlsHeader(23, 254, 253, LastEpoch, 40))
	f.Add(dtlsHeader(22, 254, 253, 0, 40))

	// The victim has a previous epoch in its overlap, so both lookups run.
	_, victim := newPair(f, "victim-0", CipherAES128GCM, Options{})
	if err := victim.s.Rekey(mustDerive(f, "victim-1", false, victim.s.NextEpoch(), CipherChaCha20Poly1305)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in := append([]byte(nil), b...)
		pt, err := victim.r.OpenInPlace(in)
		if err == nil {
			t.Fatalf("forged %d-byte input authenticated (%d-byte plaintext)", len(b), len(pt))
		}
		// Framing errors and the classifier agree: a datagram that is a
		// data record with a consistent length fails only for reasons past
		// framing (epoch state, replay, authentication), and one that is
		// not a data record is malformed (or truncated).
		framed := IsDataRecord(b) && len(b) >= Overhead &&
			int(binary.BigEndian.Uint16(b[11:])) == len(b)-HeaderLen && len(b)-HeaderLen <= MaxPlaintext+TagLen
		switch {
		case framed && (err == ErrMalformed || err == ErrTruncated):
			t.Fatalf("well-framed data record refused as %v", err)
		case !IsDataRecord(b) && err != ErrMalformed && err != ErrTruncated:
			t.Fatalf("non-data record refused as %v, want ErrMalformed or ErrTruncated", err)
		}
	})
}

// FuzzClassify: IsDataRecord never panics, agrees with the spec read
// literally, and never claims anything outside RFC 7983's DTLS range.
func FuzzClassify(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42})
	f.Add(dtlsHeader(23, 254, 253, FirstEpoch, 20))
	f.Add(dtlsHeader(23, 254, 253, 1, 20))
	f.Add(dtlsHeader(22, 254, 255, 0, 20))
	f.Add([]byte{0x40, 0, 0, 4, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		got := IsDataRecord(b)
		want := len(b) >= 13 && b[0] == 23 && b[1] == 0xfe && b[2] == 0xfd &&
			b[3] >= 0x40 && b[3] <= 0x7f
		if got != want {
			t.Fatalf("IsDataRecord(%x) = %v, want %v", b, got, want)
		}
		if got && (b[0] < 20 || b[0] > 63 || b[0] <= 3) {
			t.Fatalf("data record outside RFC 7983's DTLS range: %x", b[0])
		}
	})
}
