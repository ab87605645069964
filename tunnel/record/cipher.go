package record

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"runtime"

	"github.com/pion/dtls/v3"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Cipher names a data-record AEAD.
type Cipher uint8

const (
	// CipherAuto is a local preference, not a cipher: AES-128-GCM where this
	// CPU has AES and carry-less multiply instructions, ChaCha20-Poly1305
	// where it does not. PreferredSuites turns it into DTLS cipher suites
	// so the handshake settles one cipher for both peers.
	CipherAuto Cipher = iota
	// CipherAES128GCM is AES-128-GCM (NIST SP 800-38D), 16-byte key.
	CipherAES128GCM
	// CipherChaCha20Poly1305 is ChaCha20-Poly1305 (RFC 8439), 32-byte key.
	CipherChaCha20Poly1305
)

// String returns the name ParseCipher accepts.
func (c Cipher) String() string {
	switch c {
	case CipherAuto:
		return "auto"
	case CipherAES128GCM:
		return "aes-128-gcm"
	case CipherChaCha20Poly1305:
		return "chacha20-poly1305"
	default:
		return fmt.Sprintf("cipher(%d)", uint8(c))
	}
}

// ParseCipher parses "auto", "aes-128-gcm" or "chacha20-poly1305" (the
// configuration spelling).
func ParseCipher(s string) (Cipher, error) {
	for _, c := range []Cipher{CipherAuto, CipherAES128GCM, CipherChaCha20Poly1305} {
		if s == c.String() {
			return c, nil
		}
	}
	return 0, fmt.Errorf("%w: %q (want auto, aes-128-gcm or chacha20-poly1305)", ErrCipher, s)
}

// HasAESHardware reports whether this CPU runs AES-GCM in constant-time
// hardware (the same test crypto/tls uses to order its suites). Without it
// Go's AES-GCM is a slow software fallback and ChaCha20-Poly1305 wins.
func HasAESHardware() bool {
	switch runtime.GOARCH {
	case "amd64", "386":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		return cpu.S390X.HasAES && cpu.S390X.HasAESCTR && cpu.S390X.HasGHASH
	case "ppc64", "ppc64le":
		return true
	default:
		return false
	}
}

// Resolve turns CipherAuto into the cipher this CPU prefers; other values
// are returned unchanged.
func (c Cipher) Resolve() Cipher {
	if c != CipherAuto {
		return c
	}
	if HasAESHardware() {
		return CipherAES128GCM
	}
	return CipherChaCha20Poly1305
}

// PreferredSuites returns the DTLS cipher suites to offer (in order) so that
// the handshake also picks the data cipher; CipherForSuite reads it back
// from the connection state. pion's server takes the first suite of the
// client's list that it also offers, so:
//
//   - CipherAuto on a CPU with AES hardware offers AES-128-GCM, then
//     ChaCha20-Poly1305; without AES hardware only ChaCha20-Poly1305. Two
//     Auto peers therefore use AES-128-GCM only when both have the hardware.
//   - An explicit cipher offers only that cipher: a peer that cannot agree
//     fails the handshake ("no cipher suite") instead of running slowly.
//
// Only ECDHE_ECDSA suites are returned: meshd certificates are ECDSA or
// Ed25519, both of which pion signs under the ECDSA suites.
func PreferredSuites(c Cipher) ([]dtls.CipherSuiteID, error) {
	const (
		aes  = dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
		chch = dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
	)
	switch c {
	case CipherAuto:
		if HasAESHardware() {
			return []dtls.CipherSuiteID{aes, chch}, nil
		}
		return []dtls.CipherSuiteID{chch}, nil
	case CipherAES128GCM:
		return []dtls.CipherSuiteID{aes}, nil
	case CipherChaCha20Poly1305:
		return []dtls.CipherSuiteID{chch}, nil
	default:
		return nil, fmt.Errorf("%w: %v", ErrCipher, c)
	}
}

// CipherForSuite returns the data cipher that goes with a negotiated DTLS
// cipher suite: AES-128-GCM for the AES-GCM suites (also AES-256-GCM ones;
// the data path uses 128-bit keys), ChaCha20-Poly1305 for the ChaCha20
// suites. Other suites (CBC, CCM) are refused with ErrCipher.
func CipherForSuite(id dtls.CipherSuiteID) (Cipher, error) {
	switch id {
	case dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		dtls.TLS_PSK_WITH_AES_128_GCM_SHA256:
		return CipherAES128GCM, nil
	case dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256:
		return CipherChaCha20Poly1305, nil
	default:
		return 0, fmt.Errorf("%w: DTLS suite %v has no data-record cipher", ErrCipher, id)
	}
}

// keyLen is the AEAD key length of a concrete cipher (0 if not concrete).
func (c Cipher) keyLen() int {
	switch c {
	case CipherAES128GCM:
		return 16
	case CipherChaCha20Poly1305:
		return chacha20poly1305.KeySize
	default:
		return 0
	}
}

// label is the RFC 5705 exporter label of a concrete cipher. Naming the
// cipher in the label keeps the two ciphers' keys unrelated even if two
// peers ever disagreed about the cipher.
func (c Cipher) label() string {
	switch c {
	case CipherAES128GCM:
		return LabelAES128GCM
	case CipherChaCha20Poly1305:
		return LabelChaCha20Poly1305
	default:
		return ""
	}
}

// newAEAD builds the AEAD of a concrete cipher.
func newAEAD(c Cipher, key []byte) (cipher.AEAD, error) {
	switch c {
	case CipherAES128GCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("record: AES key: %w", err)
		}
		a, err := cipher.NewGCM(b)
		if err != nil {
			return nil, fmt.Errorf("record: AES-GCM: %w", err)
		}
		return a, nil
	case CipherChaCha20Poly1305:
		a, err := chacha20poly1305.New(key)
		if err != nil {
			return nil, fmt.Errorf("record: ChaCha20-Poly1305 key: %w", err)
		}
		return a, nil
	default:
		return nil, fmt.Errorf("%w: %v", ErrCipher, c)
	}
}
