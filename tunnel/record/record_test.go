package record

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/pion/dtls/v3"
	"github.com/pion/stun/v4"
)

// dtlsHeader returns a 13-byte DTLS record header followed by body bytes.
func dtlsHeader(typ, major, minor byte, epoch uint16, body int) []byte {
	b := make([]byte, HeaderLen+body)
	b[0], b[1], b[2] = typ, major, minor
	binary.BigEndian.PutUint16(b[3:], epoch)
	binary.BigEndian.PutUint16(b[11:], uint16(body))
	return b
}

func TestIsDataRecord(t *testing.T) {
	stunMsg, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	client, _ := newPair(t, "classify", CipherAES128GCM, Options{})
	ours := seal(t, client.w, payload(100, 1))
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"our data record", ours, true},
		{"our header alone", ours[:HeaderLen], true},
		{"first data epoch", dtlsHeader(23, 254, 253, FirstEpoch, 16), true},
		{"last data epoch", dtlsHeader(23, 254, 253, LastEpoch, 16), true},
		{"STUN binding request", stunMsg.Raw, false},
		{"STUN-range first byte 0..3", append([]byte{3}, ours[1:]...), false},
		{"pion handshake, epoch 0", dtlsHeader(22, 254, 253, 0, 40), false},
		{"pion ClientHello, DTLS 1.0 version", dtlsHeader(22, 254, 255, 0, 40), false},
		{"pion change_cipher_spec", dtlsHeader(20, 254, 253, 0, 1), false},
		{"pion alert, epoch 1", dtlsHeader(21, 254, 253, 1, 26), false},
		{"pion application data, epoch 1", dtlsHeader(23, 254, 253, 1, 40), false},
		{"pion application data, epoch 0", dtlsHeader(23, 254, 253, 0, 40), false},
		{"epoch just below the range", dtlsHeader(23, 254, 253, FirstEpoch-1, 16), false},
		{"epoch just above the range", dtlsHeader(23, 254, 253, LastEpoch+1, 16), false},
		{"epoch 0xffff", dtlsHeader(23, 254, 253, 0xffff, 16), false},
		{"DTLS 1.0 version", dtlsHeader(23, 254, 255, FirstEpoch, 16), false},
		{"TLS 1.2 version", dtlsHeader(23, 3, 3, FirstEpoch, 16), false},
		{"connection-ID record (type 25)", dtlsHeader(25, 254, 253, FirstEpoch, 16), false},
		{"TURN ChannelData (0x40)", append([]byte{0x40, 0x00, 0x00, 0x10}, make([]byte, 16)...), false},
		{"RTP-range first byte", append([]byte{0x80}, ours[1:]...), false},
		{"twelve bytes", ours[:HeaderLen-1], false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		if got := IsDataRecord(tt.b); got != tt.want {
			t.Errorf("%s: IsDataRecord = %v, want %v", tt.name, got, tt.want)
		}
		// Anything we claim is inside RFC 7983's DTLS range.
		if IsDataRecord(tt.b) && (tt.b[0] < 20 || tt.b[0] > 63) {
			t.Errorf("%s: data record outside RFC 7983's DTLS range", tt.name)
		}
	}
}

func TestEpochArithmetic(t *testing.T) {
	tests := []struct{ in, next uint16 }{
		{FirstEpoch, FirstEpoch + 1},
		{0x5000, 0x5001},
		{LastEpoch - 1, LastEpoch},
		{LastEpoch, FirstEpoch},
		{0, FirstEpoch}, // invalid input: restart the range
	}
	for _, tt := range tests {
		if got := NextEpoch(tt.in); got != tt.next {
			t.Errorf("NextEpoch(%#x) = %#x, want %#x", tt.in, got, tt.next)
		}
	}
	if d := epochDistance(LastEpoch, FirstEpoch); d != 1 {
		t.Errorf("distance LastEpoch→FirstEpoch = %d", d)
	}
	if d := epochDistance(FirstEpoch, LastEpoch); d != epochSpan-1 {
		t.Errorf("distance FirstEpoch→LastEpoch = %d", d)
	}
}

func TestCipherNames(t *testing.T) {
	for _, c := range []Cipher{CipherAuto, CipherAES128GCM, CipherChaCha20Poly1305} {
		got, err := ParseCipher(c.String())
		if err != nil || got != c {
			t.Errorf("ParseCipher(%q) = %v, %v", c.String(), got, err)
		}
	}
	if _, err := ParseCipher("aes-256-cbc"); !errors.Is(err, ErrCipher) {
		t.Errorf("ParseCipher of an unknown name: %v", err)
	}
	if r := CipherAuto.Resolve(); r != CipherAES128GCM && r != CipherChaCha20Poly1305 {
		t.Errorf("CipherAuto.Resolve() = %v", r)
	}
	if (CipherAuto.Resolve() == CipherAES128GCM) != HasAESHardware() {
		t.Error("Resolve disagrees with HasAESHardware")
	}
	if CipherChaCha20Poly1305.Resolve() != CipherChaCha20Poly1305 {
		t.Error("Resolve changed an explicit cipher")
	}
	if !strings.Contains(Cipher(9).String(), "9") {
		t.Errorf("unknown cipher prints as %q", Cipher(9).String())
	}
}

func TestSuites(t *testing.T) {
	for _, c := range []Cipher{CipherAuto, CipherAES128GCM, CipherChaCha20Poly1305} {
		suites, err := PreferredSuites(c)
		if err != nil || len(suites) == 0 {
			t.Fatalf("PreferredSuites(%v): %v, %v", c, suites, err)
		}
		first, err := CipherForSuite(suites[0])
		if err != nil || first != c.Resolve() {
			t.Errorf("PreferredSuites(%v) leads with %v (%v), want %v", c, suites[0], err, c.Resolve())
		}
		if c != CipherAuto && len(suites) != 1 {
			t.Errorf("explicit %v offers %v", c, suites)
		}
	}
	if _, err := PreferredSuites(Cipher(7)); !errors.Is(err, ErrCipher) {
		t.Errorf("PreferredSuites of an unknown cipher: %v", err)
	}
	tests := []struct {
		id   dtls.CipherSuiteID
		want Cipher
		err  error
	}{
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, CipherAES128GCM, nil},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, CipherAES128GCM, nil},
		{dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, CipherChaCha20Poly1305, nil},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, 0, ErrCipher},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM, 0, ErrCipher},
	}
	for _, tt := range tests {
		got, err := CipherForSuite(tt.id)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("CipherForSuite(%v) = %v, %v", tt.id, got, err)
		}
	}
}

func TestDeriveErrors(t *testing.T) {
	good := fakeExporter("derive")
	failing := func(string, []byte, int) ([]byte, error) { return nil, errors.New("handshake not finished") }
	short := func(l string, c []byte, n int) ([]byte, error) { return good(l, c, n-1) }
	tests := []struct {
		name  string
		exp   Exporter
		epoch uint16
		c     Cipher
		want  error
	}{
		{"auto is not an agreement", good, FirstEpoch, CipherAuto, ErrCipher},
		{"unknown cipher", good, FirstEpoch, Cipher(5), ErrCipher},
		{"pion's epoch", good, 1, CipherAES128GCM, ErrEpoch},
		{"epoch above range", good, LastEpoch + 1, CipherAES128GCM, ErrEpoch},
		{"nil exporter", nil, FirstEpoch, CipherAES128GCM, ErrExporter},
		{"exporter fails", failing, FirstEpoch, CipherAES128GCM, ErrExporter},
		{"exporter returns too little", short, FirstEpoch, CipherChaCha20Poly1305, ErrExporter},
		{"aes", good, FirstEpoch, CipherAES128GCM, nil},
		{"chacha", good, LastEpoch, CipherChaCha20Poly1305, nil},
	}
	for _, tt := range tests {
		k, err := Derive(tt.exp, true, tt.epoch, tt.c)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
			continue
		}
		if err == nil && (k.Epoch() != tt.epoch || k.Cipher() != tt.c) {
			t.Errorf("%s: keys for %#x/%v", tt.name, k.Epoch(), k.Cipher())
		}
	}
	if _, err := DeriveFromState(nil, true, FirstEpoch); !errors.Is(err, ErrExporter) {
		t.Errorf("DeriveFromState(nil): %v", err)
	}
}

// TestDeriveLabels: the exporter is asked for the documented label and
// length per cipher, with no context.
func TestDeriveLabels(t *testing.T) {
	tests := []struct {
		c      Cipher
		label  string
		length int
	}{
		{CipherAES128GCM, "EXPORTER-meshd-data-v1-aes-128-gcm", 56},
		{CipherChaCha20Poly1305, "EXPORTER-meshd-data-v1-chacha20-poly1305", 88},
	}
	for _, tt := range tests {
		var gotLabel string
		var gotLen int
		var gotCtx []byte
		exp := func(label string, ctx []byte, n int) ([]byte, error) {
			gotLabel, gotCtx, gotLen = label, ctx, n
			return fakeExporter("labels")(label, ctx, n)
		}
		if _, err := Derive(exp, false, FirstEpoch, tt.c); err != nil {
			t.Fatal(err)
		}
		if gotLabel != tt.label || gotLen != tt.length || gotCtx != nil {
			t.Errorf("%v: exporter asked for %q, %d bytes, context %v", tt.c, gotLabel, gotLen, gotCtx)
		}
	}
}
