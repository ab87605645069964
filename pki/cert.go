package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
)

// NodeCert is a parsed node certificate and the identity it binds.
type NodeCert struct {
	Cert        *x509.Certificate
	Identity    Identity
	Fingerprint string // lowercase hex SHA-256 of the DER certificate
}

// Fingerprint returns the lowercase hex SHA-256 of a DER certificate.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ParseNodeCert parses a DER node certificate and decodes its identity. It
// checks the certificate's internal consistency (extension, subject and SANs
// agree) but not whom it is signed by or when it is valid: that is Verify's
// job. Errors wrap ErrMalformed.
func ParseNodeCert(der []byte) (*NodeCert, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nodeCertFrom(cert)
}

func nodeCertFrom(cert *x509.Certificate) (*NodeCert, error) {
	id, err := identityFromCert(cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not a meshd node certificate: %v", ErrMalformed, cert.Subject.CommonName, err)
	}
	return &NodeCert{Cert: cert, Identity: id, Fingerprint: Fingerprint(cert.Raw)}, nil
}

// ParseNodeCertPEM parses the first CERTIFICATE block of data as a node
// certificate. Errors wrap ErrMalformed.
func ParseNodeCertPEM(data []byte) (*NodeCert, error) {
	der, ok := firstPEM(data, pemCert)
	if !ok {
		return nil, fmt.Errorf("%w: no CERTIFICATE block in PEM data", ErrMalformed)
	}
	return ParseNodeCert(der)
}

// ParseCertPEM parses the first CERTIFICATE block of data (CA certificates,
// or any certificate when the caller does not need the identity). Errors
// wrap ErrMalformed.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	der, ok := firstPEM(data, pemCert)
	if !ok {
		return nil, fmt.Errorf("%w: no CERTIFICATE block in PEM data", ErrMalformed)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return cert, nil
}

// PEM encodes the certificate as a CERTIFICATE block.
func (c *NodeCert) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: c.Cert.Raw})
}

// firstPEM returns the bytes of the first block of the given type, skipping
// others (a bundle may start with a key or a comment block).
func firstPEM(data []byte, typ string) ([]byte, bool) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, false
		}
		if block.Type == typ {
			return block.Bytes, true
		}
	}
}
