package pki

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
)

// Credentials are a node's own certificate and key plus the CAs it trusts.
// They print (fmt, slog) without key material.
type Credentials struct {
	// CA is the first CA certificate of the bundle (pki.ca): with one CA,
	// the CA.
	CA *x509.Certificate
	// CAs is every CA certificate of the bundle, in file order (CAs[0] ==
	// CA); several during a CA rotation. Nil means just CA.
	CAs  []*x509.Certificate
	Cert *NodeCert
	Key  crypto.Signer
}

// maxCABundle bounds the CA certificates one pki.ca file may hold.
const maxCABundle = 16

// LoadCredentials reads the CA bundle (one or more CA certificates in one PEM
// file), the node certificate and the node's private key (PEM files). The key
// must belong to the certificate (ErrKeyMismatch) and the certificate must be
// signed by one of the CAs (ErrUnknownCA). Validity is not checked here: a
// daemon with an expired certificate should start and say so rather than
// refuse to load.
func LoadCredentials(caFile, certFile, keyFile string) (*Credentials, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load credentials: %w", err)
	}
	cas, err := ParseCAsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA certificate %s: %w", caFile, err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load credentials: %w", err)
	}
	cert, err := ParseNodeCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load node certificate %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load credentials: %w", err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load node key %s: %w", keyFile, err)
	}
	if !publicKeysEqual(cert.Cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("pki: %s and %s: %w", keyFile, certFile, ErrKeyMismatch)
	}
	var sigErr error
	for _, ca := range cas {
		if sigErr = cert.Cert.CheckSignatureFrom(ca); sigErr == nil {
			break
		}
	}
	if sigErr != nil {
		what := "the CA"
		if len(cas) > 1 {
			what = fmt.Sprintf("any of the %d CAs", len(cas))
		}
		return nil, fmt.Errorf("pki: %s was not issued by %s in %s: %w (%v)", certFile, what, caFile, ErrUnknownCA, sigErr)
	}
	return &Credentials{CA: cas[0], CAs: cas, Cert: cert, Key: key}, nil
}

// ParseCAsPEM parses every CERTIFICATE block of data as a CA certificate (a
// CA bundle; other block types are skipped). It refuses an empty bundle, a
// certificate that is not a CA, a duplicate and more than 16 certificates.
func ParseCAsPEM(data []byte) ([]*x509.Certificate, error) {
	var cas []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCert {
			continue
		}
		if len(cas) == maxCABundle {
			return nil, fmt.Errorf("%w: more than %d CA certificates", ErrMalformed, maxCABundle)
		}
		ca, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrMalformed, len(cas)+1, err)
		}
		if !ca.IsCA || !ca.BasicConstraintsValid {
			return nil, fmt.Errorf("certificate %d (%q) is not a CA certificate", len(cas)+1, ca.Subject.CommonName)
		}
		for _, prev := range cas {
			if bytes.Equal(prev.Raw, ca.Raw) {
				return nil, fmt.Errorf("certificate %d (%q) is listed twice", len(cas)+1, ca.Subject.CommonName)
			}
		}
		cas = append(cas, ca)
	}
	if len(cas) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block in PEM data", ErrMalformed)
	}
	return cas, nil
}

// TrustedCAs returns CAs, or just CA when CAs is nil.
func (c *Credentials) TrustedCAs() []*x509.Certificate {
	if len(c.CAs) > 0 {
		return c.CAs
	}
	return []*x509.Certificate{c.CA}
}

// Verifier returns a new Verifier trusting every CA of the credentials, with
// the node's own certificate as self.
func (c *Credentials) Verifier() *Verifier { return NewVerifierCAs(c.TrustedCAs(), c.Cert) }

// TLSCertificate returns the node certificate and key in the form crypto/tls
// and pion/dtls take. The chain is the leaf alone: peers hold the CA.
func (c *Credentials) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{c.Cert.Cert.Raw},
		PrivateKey:  c.Key,
		Leaf:        c.Cert.Cert,
	}
}

// String describes the credentials without the key.
func (c Credentials) String() string {
	name, fp := "", ""
	if c.Cert != nil {
		name, fp = c.Cert.Identity.Name, c.Cert.Fingerprint
	}
	return fmt.Sprintf("pki.Credentials{%q %s}", name, fp)
}

// GoString keeps %#v from printing the key.
func (c Credentials) GoString() string { return c.String() }

// Format keeps every fmt verb from printing the key.
func (c Credentials) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// LogValue keeps slog from printing the key.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON keeps encoding/json from writing the key: credentials encode as
// their description string.
func (c Credentials) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }
