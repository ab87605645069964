// Package pki owns the mesh's identities: the certificate authority, node keys,
// node certificates (which bind a name, overlay addresses, groups and routable
// subnets in a meshd X.509 extension), certificate requests, the CA-signed
// revocation list, node-key message signatures, and the one verification
// policy (Verifier) that every handshake uses, DTLS links and coordinator TLS
// sessions alike.
//
// Trust is a CA that signs node certificates directly (MaxPathLen 0, no
// intermediates); during a CA rotation a node trusts a bundle of CAs, each
// with its own CRL. A certificate is a node's or, with the coordinator role,
// a coordinator's. Verifier.Verify does the whole check itself: chain, the
// CA's and the certificate's validity, unhandled critical extensions, usage,
// revocation, self-connection, the role and the expected peer. It is
// meant to be plugged into crypto/tls and pion/dtls as VerifyPeerCertificate
// with InsecureSkipVerify (client) or RequireAnyClientCert (server), so the
// library's own chain checks, which know nothing about the mesh, are off.
//
// Supported key types are ECDSA P-256 (default) and Ed25519: both are accepted
// by pion/dtls v3 for mutual authentication with the ECDHE_ECDSA AEAD suites
// (dtls_test.go proves the handshake) and by crypto/tls.
//
// The CA directory keeps an index of what it issued (index.json), so a
// certificate can be revoked by serial or name without its file, and renewed
// (CA.Renew) only with its own identity and with the consent of its key.
//
// Private keys are written 0600 and never overwritten without force; the types
// that hold keys (CA, Credentials) print without key material.
//
// The certificate extension and CRL formats are documented in docs/pki.md.
package pki
