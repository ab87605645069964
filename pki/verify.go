package pki

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Expect says which peer the caller means to reach. Zero fields mean "any".
type Expect struct {
	Name string
	// Coordinator requires the coordinator role (ErrNotCoordinator without
	// it): set by a node dialling a coordinator and by a coordinator
	// accepting a peer coordinator.
	Coordinator bool
	Addr        netip.Addr     // must equal the cert's overlay v4 or v6 address
	Subnets     []netip.Prefix // each must be inside a subnet the cert allows
	Now         time.Time      // zero = time.Now()
}

// Verifier is THE verification policy every handshake uses: DTLS links and
// coordinator TLS sessions call Verify (through VerifyPeerCertificate) and
// nothing else. Safe for concurrent use; the CRL is swapped atomically, so a
// handshake sees either the old or the new list, never half of one.
type Verifier struct {
	// Immutable after NewVerifier.
	ca   *x509.Certificate
	self *NodeCert

	// mu serializes UpdateCRL so that "is it newer?" and "install" are one
	// step; Verify and IsRevoked never take it, they load crl.
	mu  sync.Mutex
	crl atomic.Pointer[crlState]
}

// crlState is an installed CRL with its serials indexed for lookup.
type crlState struct {
	crl     *CRL
	number  *big.Int
	revoked map[string]struct{} // serial.String()
}

// NewVerifier returns a Verifier trusting ca (which must not be nil; with a
// nil CA every certificate is ErrUnknownCA). self is this node's own
// certificate, used to refuse connections to itself; nil (coordinators,
// tools) skips that check.
func NewVerifier(ca *x509.Certificate, self *NodeCert) *Verifier {
	return &Verifier{ca: ca, self: self}
}

// UpdateCRL installs crl if the CA signed it (ErrCRLSignature otherwise) and
// its number is higher than the installed one. A CRL that is not newer is
// ignored (false, nil): the Verifier never goes back to an older list.
func (v *Verifier) UpdateCRL(crl *CRL) (installed bool, err error) {
	if err := checkCRLSignature(crl, v.ca); err != nil {
		return false, err
	}
	if crl.List.Number == nil || crl.List.Number.Sign() <= 0 {
		return false, fmt.Errorf("%w: the CRL has no positive number", ErrCRLSignature)
	}
	st := &crlState{crl: crl, number: crl.Number(), revoked: make(map[string]struct{}, len(crl.List.RevokedCertificateEntries))}
	for _, e := range crl.List.RevokedCertificateEntries {
		if e.SerialNumber != nil {
			st.revoked[e.SerialNumber.String()] = struct{}{}
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur := v.crl.Load(); cur != nil && st.number.Cmp(cur.number) <= 0 {
		return false, nil
	}
	v.crl.Store(st)
	return true, nil
}

// CRL returns the installed CRL, or nil.
func (v *Verifier) CRL() *CRL {
	if st := v.crl.Load(); st != nil {
		return st.crl
	}
	return nil
}

// IsRevoked reports whether serial is on the installed CRL.
func (v *Verifier) IsRevoked(serial *big.Int) bool {
	st := v.crl.Load()
	if st == nil || serial == nil {
		return false
	}
	_, ok := st.revoked[serial.String()]
	return ok
}

// Verify checks the peer's leaf certificate rawCerts[0] (further certificates
// are ignored: the CA signs leaves directly) against the mesh policy and the
// expected peer, and returns the accepted certificate. Checks run in this
// order and the first failure is returned as a *VerifyError: no certificate,
// malformed, chain to the CA (incl. tampered signature), CA not yet valid, CA
// expired, not yet valid, expired, unhandled critical extensions (CA's, then
// the certificate's), key usage (CA flag, EKU client+server,
// digitalSignature, key type, meshd identity), revoked, self, coordinator
// role, name, address, subnets.
func (v *Verifier) Verify(rawCerts [][]byte, want Expect) (*NodeCert, error) {
	if len(rawCerts) == 0 || len(rawCerts[0]) == 0 {
		return nil, reject(ErrNoCertificate, "", "the peer sent none")
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, reject(ErrMalformed, "", "%v", err)
	}
	subject := cert.Subject.CommonName

	if v.ca == nil {
		return nil, reject(ErrUnknownCA, subject, "the verifier has no CA")
	}
	if !bytes.Equal(cert.RawIssuer, v.ca.RawSubject) {
		return nil, reject(ErrUnknownCA, subject, "issued by %q, the mesh CA is %q", cert.Issuer.String(), v.ca.Subject.String())
	}
	if err := cert.CheckSignatureFrom(v.ca); err != nil {
		return nil, reject(ErrUnknownCA, subject, "signature does not verify with the mesh CA %q: %v", v.ca.Subject.String(), err)
	}

	now := want.Now
	if now.IsZero() {
		now = time.Now()
	}
	// The chain is only as valid as its CA: crypto/x509 checks every
	// certificate's window, and so must this verifier, which replaces it.
	// Checked before the leaf's own window because it is the cause: Sign
	// never issues past the CA's NotAfter, so an expired CA usually comes
	// with expired leaves.
	if now.Before(v.ca.NotBefore) {
		return nil, reject(ErrCANotYetValid, subject, "the mesh CA %q is not valid before %s, now %s", v.ca.Subject.CommonName, rfc3339(v.ca.NotBefore), rfc3339(now))
	}
	if now.After(v.ca.NotAfter) {
		return nil, reject(ErrCAExpired, subject, "the mesh CA %q expired at %s, now %s", v.ca.Subject.CommonName, rfc3339(v.ca.NotAfter), rfc3339(now))
	}
	if now.Before(cert.NotBefore) {
		return nil, reject(ErrNotYetValid, subject, "not before %s, now %s", rfc3339(cert.NotBefore), rfc3339(now))
	}
	if now.After(cert.NotAfter) {
		return nil, reject(ErrExpired, subject, "not after %s, now %s", rfc3339(cert.NotAfter), rfc3339(now))
	}

	// crypto/x509 parses the extensions it knows and lists the critical
	// ones it does not; its Verify refuses those, and this verifier, which
	// replaces it, must too (RFC 5280 section 4.2). meshd's own identity
	// extension is handled below even if a signer marked it critical.
	if oids := unhandledCritical(v.ca); len(oids) > 0 {
		return nil, reject(ErrCriticalExtension, subject, "the mesh CA %q carries critical extensions meshd does not handle: %s", v.ca.Subject.CommonName, oids)
	}
	if oids := unhandledCritical(cert); len(oids) > 0 {
		return nil, reject(ErrCriticalExtension, subject, "critical extensions meshd does not handle: %s", oids)
	}

	if cert.IsCA {
		return nil, reject(ErrKeyUsage, subject, "a CA certificate cannot be a peer")
	}
	if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, reject(ErrKeyUsage, subject, "key usage lacks digitalSignature")
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) || !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return nil, reject(ErrKeyUsage, subject, "extended key usage must include both client and server auth")
	}
	if _, err := KeyTypeOf(cert.PublicKey); err != nil {
		return nil, reject(ErrKeyUsage, subject, "%v", err)
	}
	id, err := identityFromCert(cert)
	if err != nil {
		return nil, reject(ErrKeyUsage, subject, "%v", err)
	}
	nc := &NodeCert{Cert: cert, Identity: id, Fingerprint: Fingerprint(cert.Raw)}

	if st := v.crl.Load(); st != nil {
		if _, ok := st.revoked[cert.SerialNumber.String()]; ok {
			return nil, reject(ErrRevoked, subject, "serial %x is on CRL number %s", cert.SerialNumber, st.number)
		}
	}

	if v.self != nil {
		if nc.Fingerprint == v.self.Fingerprint {
			return nil, reject(ErrSelf, subject, "the peer presented this node's own certificate")
		}
		if id.Name == v.self.Identity.Name {
			return nil, reject(ErrSelf, subject, "the peer has this node's name")
		}
	}

	if want.Coordinator && !id.Coordinator {
		return nil, reject(ErrNotCoordinator, subject, "it is a %s certificate; sign coordinators with 'meshctl cert sign --coordinator'", id.Role())
	}
	if want.Name != "" && id.Name != want.Name {
		return nil, reject(ErrNameMismatch, subject, "expected %q", want.Name)
	}
	if want.Addr.IsValid() {
		a := want.Addr.Unmap()
		if a != id.Addr.Addr() && (!id.Addr6.IsValid() || a != id.Addr6.Addr()) {
			return nil, reject(ErrAddressMismatch, subject, "expected %s, the certificate has %s", a, addrList(id))
		}
	}
	for _, s := range want.Subnets {
		if !subnetAllowed(s, id.Subnets) {
			return nil, reject(ErrSubnetNotAllowed, subject, "%s is not inside %v", s, id.Subnets)
		}
	}
	return nc, nil
}

// VerifyPeerCertificate adapts Verify to tls.Config and dtls (use it with
// InsecureSkipVerify on clients and RequireAnyClientCert on servers, since
// Verify does the chain check itself). On success it stores the accepted peer
// in got when got is not nil. The returned error is Verify's *VerifyError.
func (v *Verifier) VerifyPeerCertificate(want Expect, got *atomic.Pointer[NodeCert]) func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
	return func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		nc, err := v.Verify(rawCerts, want)
		if err != nil {
			return err
		}
		if got != nil {
			got.Store(nc)
		}
		return nil
	}
}

// subnetAllowed reports whether want lies entirely inside one of allowed.
func subnetAllowed(want netip.Prefix, allowed []netip.Prefix) bool {
	if !want.IsValid() {
		return false
	}
	if want.Addr().Is4In6() {
		if want.Bits() < 96 {
			return false
		}
		want = netip.PrefixFrom(want.Addr().Unmap(), want.Bits()-96)
	}
	want = want.Masked()
	for _, p := range allowed {
		if p.Addr().BitLen() == want.Addr().BitLen() && p.Bits() <= want.Bits() && p.Contains(want.Addr()) {
			return true
		}
	}
	return false
}

func addrList(id Identity) string {
	if id.Addr6.IsValid() {
		return id.Addr.Addr().String() + " and " + id.Addr6.Addr().String()
	}
	return id.Addr.Addr().String()
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// unhandledCritical returns the critical extensions of cert that neither
// crypto/x509 nor this package understands, as dotted OIDs, or "".
func unhandledCritical(cert *x509.Certificate) string {
	var oids []string
	for _, oid := range cert.UnhandledCriticalExtensions {
		if !oid.Equal(OIDIdentity) {
			oids = append(oids, oid.String())
		}
	}
	return strings.Join(oids, ", ")
}
