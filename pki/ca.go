package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"time"
	"unicode"
	"unicode/utf8"
)

// File names inside a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	CRLFile    = "crl.pem"
)

// backdate is subtracted from NotBefore of everything the CA signs so that a
// node whose clock is a few minutes behind the signer's accepts a fresh
// certificate.
const backdate = 5 * time.Minute

// CA is the mesh certificate authority: its self-signed certificate and key.
// It prints (fmt, slog) without key material.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// validMeshName accepts what RFC 5280 allows in a CN (at most 64 characters)
// minus control characters, so a mesh may be called "Home Lab".
func validMeshName(s string) bool {
	if s == "" || !utf8.ValidString(s) || utf8.RuneCountInString(s) > 64 {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// NewCA creates a self-signed CA certificate (IsCA, MaxPathLen 0, certSign and
// cRLSign) with a new key of type kt, valid from now for validity. The CA has
// no mesh IPv6 prefix (an IPv4-only mesh); NewCAWithPrefix6 makes one with.
func NewCA(name string, validity time.Duration, kt KeyType) (*CA, error) {
	return NewCAWithPrefix6(name, validity, kt, netip.Prefix{})
}

// NewCAWithPrefix6 is NewCA for a dual-stack mesh: the CA certificate
// carries prefix6 (a unique local /48, ValidateMeshPrefix6) as the mesh's IPv6
// overlay prefix. The zero prefix makes an IPv4-only CA, as NewCA does.
func NewCAWithPrefix6(name string, validity time.Duration, kt KeyType, prefix6 netip.Prefix) (*CA, error) {
	var exts []pkix.Extension
	if prefix6 != (netip.Prefix{}) {
		if err := ValidateMeshPrefix6(prefix6); err != nil {
			return nil, err
		}
		v, err := marshalMeshPrefix6(prefix6)
		if err != nil {
			return nil, fmt.Errorf("pki: encode IPv6 prefix: %w", err)
		}
		exts = append(exts, pkix.Extension{Id: OIDMeshPrefix6, Value: v})
	}
	return newCA(name, validity, kt, exts)
}

// newCA makes the self-signed CA certificate with the extra extensions exts.
func newCA(name string, validity time.Duration, kt KeyType, exts []pkix.Extension) (*CA, error) {
	if !validMeshName(name) {
		return nil, fmt.Errorf("%w: CA name %q: want 1-64 printable characters", ErrBadIdentity, name)
	}
	if validity <= 0 {
		return nil, fmt.Errorf("pki: CA validity %v: must be positive", validity)
	}
	key, err := GenerateKey(kt)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtraExtensions:       exts,
		// SubjectKeyId is derived from the key by x509 for CA templates; CRLs
		// and node certificates reference it as their authority key id.
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads dir/ca.crt and dir/ca.key and checks that they belong together
// and that the certificate is a CA.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: %w", err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA %s: %w", filepath.Join(dir, CACertFile), err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("pki: load CA: %s is not a CA certificate", filepath.Join(dir, CACertFile))
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA %s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("pki: load CA: %s and %s: %w", CACertFile, CAKeyFile, ErrKeyMismatch)
	}
	if _, err := MeshPrefix6(cert); err != nil {
		return nil, fmt.Errorf("pki: load CA %s: %w", filepath.Join(dir, CACertFile), err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Save writes dir/ca.crt (0644) and dir/ca.key (0600), creating dir (0700) if
// needed. Without force it refuses (ErrExists) when either file exists, and
// writes nothing.
func (ca *CA) Save(dir string, force bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: save CA: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if !force {
		for _, p := range []string{keyPath, certPath} {
			if _, err := os.Lstat(p); err == nil {
				return &fs.PathError{Op: "write", Path: p, Err: ErrExists}
			}
		}
	}
	if err := WriteKeyFile(keyPath, ca.Key, force); err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: ca.Cert.Raw})
	if err := WriteFile(certPath, certPEM, 0o644, force); err != nil {
		if !force {
			// Do not leave a key without its certificate behind.
			_ = os.Remove(keyPath)
		}
		return err
	}
	return nil
}

// Sign issues a node certificate for pub binding id, valid from now (minus a
// few minutes of clock-skew allowance) for validity, but never past the CA's
// own expiry. id is normalized (groups and subnets sorted, de-duplicated) and
// then validated (ErrBadIdentity).
func (ca *CA) Sign(pub crypto.PublicKey, id Identity, validity time.Duration) (*NodeCert, error) {
	return ca.signValidity(pub, id, validity, ca.Prefix6())
}

// signValidity is Sign with the mesh IPv6 prefix id.Addr6 must lie in.
func (ca *CA) signValidity(pub crypto.PublicKey, id Identity, validity time.Duration, prefix6 netip.Prefix) (*NodeCert, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("pki: certificate validity %v: must be positive", validity)
	}
	now := time.Now()
	if now.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("pki: the CA %q expired at %s; create a new CA", ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	return ca.signPrefix6(pub, id, now.Add(-backdate), notAfter, prefix6)
}

// sign is Sign with an explicit validity window (tests make expired and
// future certificates with it).
func (ca *CA) sign(pub crypto.PublicKey, id Identity, notBefore, notAfter time.Time) (*NodeCert, error) {
	return ca.signPrefix6(pub, id, notBefore, notAfter, ca.Prefix6())
}

// signPrefix6 is sign with the mesh IPv6 prefix id.Addr6 must lie in (zero:
// any address): the CA's own, or for a renewal across a CA rotation the
// prefix of the CA that issued the certificate being renewed.
func (ca *CA) signPrefix6(pub crypto.PublicKey, id Identity, notBefore, notAfter time.Time, prefix6 netip.Prefix) (*NodeCert, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("pki: sign: no CA")
	}
	if _, err := KeyTypeOf(pub); err != nil {
		return nil, err
	}
	id = id.Normalize()
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if err := checkAddr6(id, prefix6); err != nil {
		return nil, err
	}
	ext, err := marshalIdentity(id)
	if err != nil {
		return nil, fmt.Errorf("pki: encode identity: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.Name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		DNSNames:              []string{id.Name},
		IPAddresses:           id.ipAddresses(),
		ExtraExtensions:       []pkix.Extension{{Id: OIDIdentity, Critical: false, Value: ext}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: sign %q: %w", id.Name, err)
	}
	return ParseNodeCert(der)
}

// SignCSR checks the request's self-signature (ErrBadSignature) and that its
// CN equals id.Name (ErrBadIdentity), then signs the requested public key with
// id. An empty id.Name takes the name from the request.
func (ca *CA) SignCSR(csrPEM []byte, id Identity, validity time.Duration) (*NodeCert, error) {
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	cn := csr.Subject.CommonName
	switch {
	case id.Name == "":
		id.Name = cn
	case id.Name != cn:
		return nil, fmt.Errorf("%w: the request is for %q, not %q", ErrBadIdentity, cn, id.Name)
	}
	return ca.Sign(csr.PublicKey, id, validity)
}

// CreateCSR makes a PEM certificate request for name signed by key, so that
// the CA can sign the node's public key without the private key leaving the
// node.
func CreateCSR(key crypto.Signer, name string) ([]byte, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: name %q: want 1-63 of a-z 0-9 . - starting with a letter or digit", ErrBadIdentity, name)
	}
	if key == nil {
		return nil, fmt.Errorf("%w: nil key", ErrKeyType)
	}
	if _, err := KeyTypeOf(key.Public()); err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: name},
		DNSNames: []string{name},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), nil
}

// randomSerial returns a uniformly random, positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("pki: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// String describes the CA without its key.
func (ca CA) String() string {
	if ca.Cert == nil {
		return "pki.CA{}"
	}
	kt := "unknown"
	if t, err := KeyTypeOf(ca.Cert.PublicKey); err == nil {
		kt = t.String()
	}
	return fmt.Sprintf("pki.CA{%q %s %s}", ca.Cert.Subject.CommonName, kt, Fingerprint(ca.Cert.Raw))
}

// GoString keeps %#v from printing the key.
func (ca CA) GoString() string { return ca.String() }

// Format keeps every fmt verb (%v, %+v, %x, %d ...) from printing the key.
func (ca CA) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(ca.String())) }

// LogValue keeps slog from printing the key.
func (ca CA) LogValue() slog.Value { return slog.StringValue(ca.String()) }

// MarshalJSON keeps encoding/json from writing the key: a CA encodes as its
// description string.
func (ca CA) MarshalJSON() ([]byte, error) { return json.Marshal(ca.String()) }
