package main

// The files cert renew and cert install read: node certificates, the keys
// that must belong to them, and CA bundles. Each error names the file.

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
	"os"

	"github.com/meshd/meshd/pki"
)

// pkiReadNodeCert reads the node certificate at path (pkiStdio reads
// stdin) and returns it with its PEM.
func pkiReadNodeCert(path string, stdin io.Reader) (*pki.NodeCert, []byte, error) {
	data, err := pkiReadInput(path, stdin)
	if err != nil {
		return nil, nil, err
	}
	nc, err := pki.ParseNodeCertPEM(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return nc, data, nil
}

// pkiReadKeyFor reads the private key at path and fails with
// pki.ErrKeyMismatch unless it is the key of nc, read from certPath.
func pkiReadKeyFor(path string, nc *pki.NodeCert, certPath string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := pki.ParseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !pki.KeyBelongsTo(key, nc.Cert) {
		return nil, fmt.Errorf("%s does not belong to %s: %w", path, certPath, pki.ErrKeyMismatch)
	}
	return key, nil
}

// pkiReadCAs reads the CA bundle at path.
func pkiReadCAs(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cas, err := pki.ParseCAsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cas, nil
}
