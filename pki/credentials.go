package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
)

// Credentials are a node's own certificate and key plus the CA it trusts.
// They print (fmt, slog) without key material.
type Credentials struct {
	CA   *x509.Certificate
	Cert *NodeCert
	Key  crypto.Signer
}

// LoadCredentials reads the CA certificate, the node certificate and the
// node's private key (PEM files). The key must belong to the certificate
// (ErrKeyMismatch) and the certificate must be signed by the CA
// (ErrUnknownCA). Validity is not checked here: a daemon with an expired
// certificate should start and say so rather than refuse to load.
func LoadCredentials(caFile, certFile, keyFile string) (*Credentials, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pki: load credentials: %w", err)
	}
	ca, err := ParseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA certificate %s: %w", caFile, err)
	}
	if !ca.IsCA || !ca.BasicConstraintsValid {
		return nil, fmt.Errorf("pki: load credentials: %s is not a CA certificate", caFile)
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
	if err := cert.Cert.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("pki: %s was not issued by the CA in %s: %w (%v)", certFile, caFile, ErrUnknownCA, err)
	}
	return &Credentials{CA: ca, Cert: cert, Key: key}, nil
}

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
