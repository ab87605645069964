package pki

import (
	"errors"
	"fmt"
	"strings"
)

// Reasons a peer certificate is rejected. Verify returns them inside a
// *VerifyError; test with errors.Is. Each rejection matches exactly one.
var (
	// ErrNoCertificate: the peer presented no certificate at all.
	ErrNoCertificate = errors.New("pki: no certificate")
	// ErrMalformed: the certificate (or a PEM/DER input) does not parse.
	ErrMalformed = errors.New("pki: malformed certificate")
	// ErrUnknownCA: the certificate was not signed by the mesh CA, or its
	// signature was tampered with.
	ErrUnknownCA = errors.New("pki: unknown certificate authority")
	// ErrCANotYetValid: now is before the mesh CA certificate's NotBefore,
	// so nothing it signed is valid yet (a CA made on a host whose clock
	// runs ahead, or this host's clock is behind).
	ErrCANotYetValid = errors.New("pki: CA certificate not yet valid")
	// ErrCAExpired: now is after the mesh CA certificate's NotAfter, so
	// nothing it signed is valid any more, whatever the certificate's own
	// window says.
	ErrCAExpired = errors.New("pki: CA certificate expired")
	// ErrNotYetValid: now is before the certificate's NotBefore.
	ErrNotYetValid = errors.New("pki: not yet valid")
	// ErrExpired: now is after the certificate's NotAfter.
	ErrExpired = errors.New("pki: expired")
	// ErrCriticalExtension: the certificate, or the mesh CA certificate,
	// carries an extension marked critical that meshd does not understand.
	// RFC 5280 section 4.2 requires refusing it: a critical extension
	// restricts the certificate in a way a verifier that ignores it would
	// not honour.
	ErrCriticalExtension = errors.New("pki: unhandled critical extension")
	// ErrKeyUsage: the certificate is not a meshd node certificate: it is a
	// CA, lacks client+server auth or digitalSignature, has an unsupported key,
	// or carries no (or a broken) meshd identity extension.
	ErrKeyUsage = errors.New("pki: wrong key usage")
	// ErrRevoked: the certificate's serial is on the installed CRL.
	ErrRevoked = errors.New("pki: revoked")
	// ErrSelf: the peer is this node (same certificate or same name).
	ErrSelf = errors.New("pki: self-connection")
	// ErrNotCoordinator: the caller expected a coordinator (Expect.Coordinator)
	// and the certificate lacks the coordinator role.
	ErrNotCoordinator = errors.New("pki: certificate lacks the coordinator role")
	// ErrNameMismatch: the certificate names another node than the expected one.
	ErrNameMismatch = errors.New("pki: name mismatch")
	// ErrAddressMismatch: the expected overlay address is not the certificate's.
	ErrAddressMismatch = errors.New("pki: address mismatch")
	// ErrSubnetNotAllowed: an expected subnet is not inside any subnet the
	// certificate allows.
	ErrSubnetNotAllowed = errors.New("pki: subnet not allowed")
)

// Other conditions callers branch on.
var (
	// ErrExists: a file is already there and force was not given. Returned
	// inside an *fs.PathError that names the file.
	ErrExists = errors.New("pki: file exists")
	// ErrKeyMismatch: a private key does not belong to the certificate.
	ErrKeyMismatch = errors.New("pki: key does not match certificate")
	// ErrCRLSignature: a CRL was not signed by the mesh CA (or was tampered with).
	ErrCRLSignature = errors.New("pki: CRL not signed by the mesh CA")
	// ErrBadSignature: a message or CSR signature does not verify.
	ErrBadSignature = errors.New("pki: bad signature")
	// ErrBadIdentity: a name, address, group or subnet is invalid for signing.
	ErrBadIdentity = errors.New("pki: invalid identity")
	// ErrNoIndex: the CA directory has no index of issued certificates
	// (index.json): it predates the index, or never signed anything.
	ErrNoIndex = errors.New("pki: the CA directory has no index of issued certificates")
	// ErrKeyType: a key is not one of the supported types (ECDSA P-256, Ed25519).
	ErrKeyType = errors.New("pki: unsupported key type")
)

// verifyReasons lists every sentinel Verify may return, in check order.
var verifyReasons = []error{
	ErrNoCertificate, ErrMalformed, ErrUnknownCA, ErrCANotYetValid, ErrCAExpired,
	ErrNotYetValid, ErrExpired, ErrCriticalExtension, ErrKeyUsage, ErrRevoked,
	ErrSelf, ErrNotCoordinator, ErrNameMismatch, ErrAddressMismatch, ErrSubnetNotAllowed,
}

// VerifyError says why Verify rejected a certificate. Reason is one of the
// Err* sentinels above; errors.Is(err, Reason) holds and no other sentinel
// matches.
type VerifyError struct {
	Reason  error  // the sentinel
	Subject string // the certificate's CN, "" when it could not be read
	Detail  string // what exactly failed, for people
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	b.WriteString("pki: certificate ")
	if e.Subject != "" {
		fmt.Fprintf(&b, "%q ", e.Subject)
	}
	b.WriteString("rejected: ")
	reason := "unknown"
	if e.Reason != nil {
		reason = strings.TrimPrefix(e.Reason.Error(), "pki: ")
	}
	b.WriteString(reason)
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Is matches the one sentinel the error carries.
func (e *VerifyError) Is(target error) bool { return target != nil && target == e.Reason }

func reject(reason error, subject, format string, args ...any) *VerifyError {
	return &VerifyError{Reason: reason, Subject: subject, Detail: fmt.Sprintf(format, args...)}
}
