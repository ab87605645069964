package record

import (
	"crypto/cipher"
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/pion/dtls/v3"
)

// RFC 5705 exporter labels, one per cipher. Each export is
// client_write_key | server_write_key | client_write_iv | server_write_iv,
// 2*(key length + IVLen) bytes, with no context.
const (
	LabelAES128GCM        = "EXPORTER-meshd-data-v1-aes-128-gcm"
	LabelChaCha20Poly1305 = "EXPORTER-meshd-data-v1-chacha20-poly1305"
)

// IVLen is the per-direction IV exported with each key; it is also the AEAD
// nonce length of both ciphers.
const IVLen = 12

// Exporter is the RFC 5705 keying-material exporter of a finished handshake;
// (*dtls.State).ExportKeyingMaterial has this shape.
type Exporter func(label string, context []byte, length int) ([]byte, error)

// Keys are one handshake's data keys for one side, bound to an epoch: the
// send direction (this side's half) and the receive direction (the peer's
// half). They are created by Derive and consumed by NewSession or
// Session.Rekey, exactly once.
type Keys struct {
	cipher Cipher
	epoch  uint16
	send   direction
	recv   direction
	used   atomic.Bool // set when a Session takes the keys
}

// direction is the key material of one direction.
type direction struct {
	aead cipher.AEAD
	iv   [IVLen]byte
}

// Epoch returns the epoch the keys were derived for.
func (k *Keys) Epoch() uint16 { return k.epoch }

// Cipher returns the keys' cipher.
func (k *Keys) Cipher() Cipher { return k.cipher }

// Derive exports keying material from a finished DTLS handshake and returns
// this side's Keys for epoch. isClient is this side's DTLS role: the client
// seals with the client_write half and opens with the server_write half,
// the server the other way round. c must be a concrete cipher both peers
// agreed on (normally CipherForSuite of the negotiated suite); CipherAuto
// is refused with ErrCipher. epoch must be a data epoch: FirstEpoch for the
// first handshake of a link, Session.NextEpoch for a rekey.
func Derive(exp Exporter, isClient bool, epoch uint16, c Cipher) (*Keys, error) {
	if exp == nil {
		return nil, fmt.Errorf("%w: no exporter", ErrExporter)
	}
	kl := c.keyLen()
	if kl == 0 {
		return nil, fmt.Errorf("%w: %v (Derive needs the cipher both peers agreed on)", ErrCipher, c)
	}
	if !ValidEpoch(epoch) {
		return nil, fmt.Errorf("%w: %#04x is outside %#04x..%#04x", ErrEpoch, epoch, FirstEpoch, LastEpoch)
	}
	n := 2 * (kl + IVLen)
	m, err := exp(c.label(), nil, n)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrExporter, err)
	}
	if len(m) != n {
		return nil, fmt.Errorf("%w: got %d bytes, want %d", ErrExporter, len(m), n)
	}
	defer clear(m) // the AEADs hold their own copies (key schedules)
	client, err := newDirection(c, m[:kl], m[2*kl:2*kl+IVLen])
	if err != nil {
		return nil, err
	}
	server, err := newDirection(c, m[kl:2*kl], m[2*kl+IVLen:])
	if err != nil {
		return nil, err
	}
	k := &Keys{cipher: c, epoch: epoch, send: server, recv: client}
	if isClient {
		k.send, k.recv = client, server
	}
	return k, nil
}

// DeriveFromState is Derive for a pion/dtls connection state (from
// dtls.Conn.ConnectionState after the handshake): the cipher follows the
// negotiated suite (CipherForSuite). isClient is this side's DTLS role.
func DeriveFromState(st *dtls.State, isClient bool, epoch uint16) (*Keys, error) {
	if st == nil {
		return nil, fmt.Errorf("%w: no connection state", ErrExporter)
	}
	c, err := CipherForSuite(st.CipherSuiteID)
	if err != nil {
		return nil, err
	}
	return Derive(st.ExportKeyingMaterial, isClient, epoch, c)
}

func newDirection(c Cipher, key, iv []byte) (direction, error) {
	a, err := newAEAD(c, key)
	if err != nil {
		return direction{}, err
	}
	d := direction{aead: a}
	copy(d.iv[:], iv)
	return d, nil
}

// nonce writes the nonce of the record with this epoch and sequence number
// into dst: the IV XOR the 64-bit epoch||sequence, right-aligned (as in
// TLS 1.3 and RFC 7905). Distinct (epoch, seq) give distinct nonces.
func (d *direction) nonce(dst *[IVLen]byte, epoch uint16, seq uint64) {
	*dst = d.iv
	x := binary.BigEndian.Uint64(d.iv[4:]) ^ (uint64(epoch)<<48 | seq)
	binary.BigEndian.PutUint64(dst[4:], x)
}
