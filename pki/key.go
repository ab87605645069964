package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyType is the kind of key pair a CA or node uses. The zero value is the
// default, ECDSA P-256.
type KeyType int

const (
	// KeyECDSAP256 is ECDSA on NIST P-256: the default, supported everywhere.
	KeyECDSAP256 KeyType = iota
	// KeyEd25519 is Ed25519: smaller and faster signatures; pion/dtls v3 and
	// crypto/tls both accept it for certificate authentication.
	KeyEd25519
)

func (k KeyType) String() string {
	switch k {
	case KeyECDSAP256:
		return "ecdsa-p256"
	case KeyEd25519:
		return "ed25519"
	default:
		return fmt.Sprintf("KeyType(%d)", int(k))
	}
}

// ParseKeyType reads the names String returns ("ecdsa-p256", "ed25519").
// The empty string means the default.
func ParseKeyType(s string) (KeyType, error) {
	switch s {
	case "", "ecdsa-p256", "ecdsa", "p256":
		return KeyECDSAP256, nil
	case "ed25519":
		return KeyEd25519, nil
	default:
		return 0, fmt.Errorf("%w: %q (want ecdsa-p256 or ed25519)", ErrKeyType, s)
	}
}

// KeyTypeOf reports the KeyType of a public key, or ErrKeyType for any other
// kind (RSA, other curves).
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return 0, fmt.Errorf("%w: empty ECDSA key", ErrKeyType)
		}
		if k.Curve == elliptic.P256() {
			return KeyECDSAP256, nil
		}
		return 0, fmt.Errorf("%w: ECDSA on %s", ErrKeyType, k.Curve.Params().Name)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return 0, fmt.Errorf("%w: Ed25519 key of %d bytes", ErrKeyType, len(k))
		}
		return KeyEd25519, nil
	default:
		return 0, fmt.Errorf("%w: %T", ErrKeyType, pub)
	}
}

// GenerateKey makes a new private key of the given type.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyEd25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return priv, nil
	default:
		return nil, fmt.Errorf("%w: %v", ErrKeyType, kt)
	}
}

const (
	pemPrivateKey = "PRIVATE KEY"
	pemECKey      = "EC PRIVATE KEY"
	pemCert       = "CERTIFICATE"
	pemCSR        = "CERTIFICATE REQUEST"
	pemCRL        = "X509 CRL"
)

// MarshalKeyPEM encodes a supported private key as a PKCS#8 "PRIVATE KEY"
// PEM block.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: nil key", ErrKeyType)
	}
	if _, err := KeyTypeOf(key.Public()); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// ParseKeyPEM decodes the first private key block: PKCS#8 "PRIVATE KEY", or
// SEC 1 "EC PRIVATE KEY" as written by openssl. Only supported key types are
// accepted. Errors never quote the key bytes.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("pki: no PRIVATE KEY block in PEM data")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case pemPrivateKey:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case pemECKey:
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			// x509's messages describe the structure, never the key.
			return nil, fmt.Errorf("pki: parse private key: %w", err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%w: %T", ErrKeyType, key)
		}
		if _, err := KeyTypeOf(signer.Public()); err != nil {
			return nil, err
		}
		return signer, nil
	}
}

// WriteKeyFile writes key as PKCS#8 PEM with mode 0600. It refuses to replace
// an existing file (ErrExists inside an *fs.PathError) unless force is set.
func WriteKeyFile(path string, key crypto.Signer, force bool) error {
	data, err := MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	return WriteFile(path, data, 0o600, force)
}

// WriteFile writes data to path with exactly mode (umask does not apply). It
// refuses to replace an existing file (ErrExists inside an *fs.PathError)
// unless force is set; with force the new file replaces the old one by an
// atomic rename, so a reader never sees half a file and a key file never
// passes through a wider mode.
func WriteFile(path string, data []byte, mode os.FileMode, force bool) error {
	if !force {
		return writeExclusive(path, data, mode)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// CreateTemp makes the file 0600, so key material is never readable by
	// others, even for an instant.
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := writeSync(f, data, mode); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	ok = true
	return nil
}

func writeExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode&0o600)
	if errors.Is(err, fs.ErrExist) {
		return &fs.PathError{Op: "write", Path: path, Err: ErrExists}
	}
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := writeSync(f, data, mode); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}

// writeSync fills f, sets its final mode and flushes it to disk. The file is
// created owner-only and widened (if at all) only once its content is in place.
func writeSync(f *os.File, data []byte, mode os.FileMode) error {
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(mode.Perm()); err != nil {
		return err
	}
	return f.Sync()
}
