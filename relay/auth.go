package relay

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// Realm is the TURN realm of every member relay.
const Realm = "meshd-relay"

// MaxTTL bounds how far ahead of the relay's clock a username may expire.
const MaxTTL = 24 * time.Hour

// maxUsernameLen bounds a username: a 20-digit expiry, ':' and a node name
// (at most 63 bytes).
const maxUsernameLen = 20 + 1 + 63

// passwordSalt separates member relay passwords from every other use of an
// ECDH secret between two node keys.
const passwordSalt = "meshd member relay v1\x00"

// Username is the TURN username for node name, valid until expires.
func Username(name string, expires time.Time) string {
	return strconv.FormatInt(expires.Unix(), 10) + ":" + name
}

// parseUsername splits a username into its expiry and node name.
func parseUsername(u string) (time.Time, string, error) {
	if len(u) > maxUsernameLen {
		return time.Time{}, "", fmt.Errorf("%w: username of %d bytes", ErrBadUsername, len(u))
	}
	exp, name, ok := strings.Cut(u, ":")
	if !ok || name == "" {
		return time.Time{}, "", fmt.Errorf("%w: %q", ErrBadUsername, u)
	}
	t, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || t <= 0 {
		return time.Time{}, "", fmt.Errorf("%w: expiry %q", ErrBadUsername, exp)
	}
	return time.Unix(t, 0), name, nil
}

// Password derives the TURN password for username on the member relay
// relayName, from one side's private key and the other side's public key
// (requester key and relay certificate key, or relay key and requester
// certificate key: both give the same password).
func Password(own crypto.PrivateKey, peer crypto.PublicKey, username, relayName string) (string, error) {
	priv, err := ecdhPrivate(own)
	if err != nil {
		return "", err
	}
	pub, err := ecdhPublic(peer)
	if err != nil {
		return "", err
	}
	if priv.Curve() != pub.Curve() {
		return "", ErrKeyMismatch
	}
	secret, err := priv.ECDH(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	k, err := hkdf.Key(sha256.New, secret, []byte(passwordSalt+relayName), username, 32)
	if err != nil {
		return "", err
	}
	return base64.RawStdEncoding.EncodeToString(k), nil
}

// ecdhPrivate converts a node's private key (pki: ECDSA P-256 or Ed25519).
func ecdhPrivate(k crypto.PrivateKey) (*ecdh.PrivateKey, error) {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		p, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		return p, nil
	case ed25519.PrivateKey:
		if len(k) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("%w: Ed25519 key of %d bytes", ErrBadKey, len(k))
		}
		h := sha512.Sum512(k.Seed())
		p, err := ecdh.X25519().NewPrivateKey(h[:32]) // clamped by X25519 itself
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		return p, nil
	case *ed25519.PrivateKey:
		return ecdhPrivate(*k)
	}
	return nil, fmt.Errorf("%w: private key %T", ErrBadKey, k)
}

// curve25519P is 2^255 - 19.
var curve25519P = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))

// ecdhPublic converts a certificate's public key.
func ecdhPublic(k crypto.PublicKey) (*ecdh.PublicKey, error) {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		p, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		return p, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: Ed25519 key of %d bytes", ErrBadKey, len(k))
		}
		// u = (1 + y) / (1 - y) mod p, y the little-endian encoding with
		// the sign bit of x cleared (RFC 7748 §4.1).
		var be [32]byte
		for i := range 32 {
			be[i] = k[31-i]
		}
		be[0] &= 0x7f
		y := new(big.Int).SetBytes(be[:])
		if y.Cmp(curve25519P) >= 0 {
			return nil, fmt.Errorf("%w: Ed25519 point not canonical", ErrBadKey)
		}
		one := big.NewInt(1)
		den := new(big.Int).Sub(one, y)
		den.Mod(den, curve25519P)
		if den.Sign() == 0 {
			return nil, fmt.Errorf("%w: Ed25519 point of low order", ErrBadKey)
		}
		u := new(big.Int).Add(one, y)
		u.Mul(u, den.ModInverse(den, curve25519P))
		u.Mod(u, curve25519P)
		var out [32]byte
		ub := u.Bytes()
		for i := range ub {
			out[i] = ub[len(ub)-1-i]
		}
		p, err := ecdh.X25519().NewPublicKey(out[:])
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%w: public key %T", ErrBadKey, k)
}
