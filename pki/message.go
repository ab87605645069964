package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
)

// messageContext prefixes every signed message. Node keys also sign DTLS and
// TLS handshakes; the prefix keeps a signature made here from ever being valid
// there, and the other way round. A TLS 1.2 ServerKeyExchange signature
// covers client_random (32 bytes the peer chooses) then server_random (ours),
// so the prefix is longer than 32 bytes: a peer cannot make our handshake
// signature start with it. CertificateVerify and TLS 1.3 inputs start with
// bytes no printable prefix matches.
const messageContext = "meshd signed message v1: a node record signature, not a handshake\x00"

// renewalContext prefixes a renewal proof (CreateRenewalCSR): the current
// key's consent to a new key. Distinct from messageContext, so that neither
// signature can stand in for the other; as long, for the same reason.
const renewalContext = "meshd signed message v1: a certificate renewal, not a record or handshake\x00"

func messageDigestInput(msg []byte) []byte { return contextInput(messageContext, msg) }

func contextInput(context string, msg []byte) []byte {
	b := make([]byte, 0, len(context)+len(msg))
	return append(append(b, context...), msg...)
}

// SignMessage signs msg (for example a registry record) with a node key:
// Ed25519 over the context-prefixed message, or ECDSA (ASN.1) over its
// SHA-256.
func SignMessage(key crypto.Signer, msg []byte) ([]byte, error) {
	return signContext(key, messageContext, msg)
}

func signContext(key crypto.Signer, context string, msg []byte) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: nil key", ErrKeyType)
	}
	kt, err := KeyTypeOf(key.Public())
	if err != nil {
		return nil, err
	}
	in := contextInput(context, msg)
	if kt == KeyEd25519 {
		return key.Sign(rand.Reader, in, crypto.Hash(0))
	}
	sum := sha256.Sum256(in)
	return key.Sign(rand.Reader, sum[:], crypto.SHA256)
}

// VerifyMessage checks that sig is SignMessage's signature of msg by the key
// in cert (ErrBadSignature otherwise). It does not verify cert itself; callers
// pass a certificate that Verifier.Verify accepted.
func VerifyMessage(cert *x509.Certificate, msg, sig []byte) error {
	return verifyContext(cert, messageContext, msg, sig)
}

func verifyContext(cert *x509.Certificate, context string, msg, sig []byte) error {
	if cert == nil {
		return fmt.Errorf("%w: no certificate", ErrBadSignature)
	}
	in := contextInput(context, msg)
	switch pub := cert.PublicKey.(type) {
	case ed25519.PublicKey:
		if len(pub) == ed25519.PublicKeySize && ed25519.Verify(pub, in, sig) {
			return nil
		}
	case *ecdsa.PublicKey:
		if _, err := KeyTypeOf(pub); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		sum := sha256.Sum256(in)
		if ecdsa.VerifyASN1(pub, sum[:], sig) {
			return nil
		}
	default:
		return fmt.Errorf("%w: unsupported key %T", ErrBadSignature, cert.PublicKey)
	}
	return fmt.Errorf("%w: message not signed by %q", ErrBadSignature, cert.Subject.CommonName)
}
