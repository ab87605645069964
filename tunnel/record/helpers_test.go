package record

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// fakeExporter stands in for a handshake's RFC 5705 exporter: a
// deterministic expansion of secret and label, so two "sides" holding the
// same secret agree and sides with different secrets do not.
func fakeExporter(secret string) Exporter {
	return func(label string, context []byte, length int) ([]byte, error) {
		var out []byte
		for i := byte(0); len(out) < length; i++ {
			m := hmac.New(sha256.New, []byte(secret))
			m.Write([]byte(label))
			m.Write(context)
			m.Write([]byte{i})
			out = m.Sum(out)
		}
		return out[:length], nil
	}
}

// clock is a settable time source for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// mustDerive derives one side's keys from a fake handshake secret.
func mustDerive(t testing.TB, secret string, isClient bool, epoch uint16, c Cipher) *Keys {
	t.Helper()
	k, err := Derive(fakeExporter(secret), isClient, epoch, c)
	if err != nil {
		t.Fatalf("Derive(%q, client=%v, %#04x, %v): %v", secret, isClient, epoch, c, err)
	}
	return k
}

// peer is one end of a test link.
type peer struct {
	s *Session
	w *Sealer
	r *Opener
}

func newPeer(t testing.TB, k *Keys, opts Options) *peer {
	t.Helper()
	s, err := NewSession(k, opts)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	return &peer{s: s, w: s.NewSealer(), r: s.NewOpener()}
}

// newPair returns the client and server ends of a link keyed by secret.
func newPair(t testing.TB, secret string, c Cipher, opts Options) (client, server *peer) {
	t.Helper()
	return newPeer(t, mustDerive(t, secret, true, FirstEpoch, c), opts),
		newPeer(t, mustDerive(t, secret, false, FirstEpoch, c), opts)
}

// rekeyPair moves both ends to the next epoch with keys from secret.
func rekeyPair(t testing.TB, client, server *peer, secret string) {
	t.Helper()
	e := client.s.NextEpoch()
	c := client.s.send.Load().cipher
	if err := client.s.Rekey(mustDerive(t, secret, true, e, c)); err != nil {
		t.Fatalf("client Rekey: %v", err)
	}
	if err := server.s.Rekey(mustDerive(t, secret, false, e, c)); err != nil {
		t.Fatalf("server Rekey: %v", err)
	}
}

// headroom is the space tests leave in front of plaintexts.
const headroom = 32

// seal copies pt into a fresh buffer with headroom and room for the tag,
// seals it and returns a copy of the record that owns its memory.
func seal(t testing.TB, w *Sealer, pt []byte) []byte {
	t.Helper()
	buf := make([]byte, headroom+len(pt), headroom+len(pt)+TagLen)
	copy(buf[headroom:], pt)
	rec, err := w.SealInPlace(buf, headroom, len(pt))
	if err != nil {
		t.Fatalf("SealInPlace(%d bytes): %v", len(pt), err)
	}
	return append([]byte(nil), rec...)
}

// open opens a copy of rec (so the caller's record survives for replays).
func open(r *Opener, rec []byte) ([]byte, error) {
	return r.OpenInPlace(append([]byte(nil), rec...))
}

// payload returns n bytes of a recognizable pattern.
func payload(n int, tag byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag + byte(i*7)
	}
	return b
}

// refKeys is an independent reading of docs/protocol.md "Data records"'s key schedule: the
// exporter output split into client/server keys and IVs.
type refKeys struct {
	clientKey, serverKey []byte
	clientIV, serverIV   []byte
}

func refSchedule(t testing.TB, exp Exporter, c Cipher) refKeys {
	t.Helper()
	label, kl := LabelAES128GCM, 16
	if c == CipherChaCha20Poly1305 {
		label, kl = LabelChaCha20Poly1305, 32
	}
	m, err := exp(label, nil, 2*(kl+12))
	if err != nil {
		t.Fatal(err)
	}
	return refKeys{m[:kl], m[kl : 2*kl], m[2*kl : 2*kl+12], m[2*kl+12:]}
}

// refAEAD builds an AEAD from raw key bytes, outside the package's code.
func refAEAD(t testing.TB, c Cipher, key []byte) cipher.AEAD {
	t.Helper()
	if c == CipherChaCha20Poly1305 {
		a, err := chacha20poly1305.New(key)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// refNonce is docs/protocol.md "Data records"'s nonce: IV XOR (0^32 || epoch || seq48), read
// from the record header.
func refNonce(iv, rec []byte) []byte {
	n := append([]byte(nil), iv...)
	for i := 0; i < 8; i++ {
		n[4+i] ^= rec[3+i]
	}
	return n
}

// refOpen opens rec with the reference construction: nonce from the header,
// AAD = the 13 header bytes.
func refOpen(a cipher.AEAD, iv, rec []byte) ([]byte, error) {
	return a.Open(nil, refNonce(iv, rec), rec[HeaderLen:], rec[:HeaderLen])
}

// hdrSeq reads epoch and sequence from a record header.
func hdrSeq(rec []byte) (uint16, uint64) {
	es := binary.BigEndian.Uint64(rec[3:11])
	return uint16(es >> 48), es & (1<<48 - 1)
}
