package pki

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strconv"
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
// nothing else. It trusts one or more CA certificates (several during a CA
// rotation) and keeps one CRL per CA. Safe for concurrent use; the CRLs are
// swapped atomically, so a handshake sees either the old or the new lists,
// never half of one.
type Verifier struct {
	// Immutable after NewVerifier.
	cas  []*x509.Certificate // trusted CAs, bundle order; no nils
	self *NodeCert

	// mu serializes UpdateCRL so that "is it newer?" and "install" are one
	// step; Verify and IsRevoked never take it, they load crls.
	mu   sync.Mutex
	crls atomic.Pointer[[]*crlState] // indexed like cas; nil entry = no CRL of that CA
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
	return NewVerifierCAs([]*x509.Certificate{ca}, self)
}

// NewVerifierCAs is NewVerifier trusting every CA in cas (nil entries are
// skipped; with none, every certificate is ErrUnknownCA). A certificate is
// accepted if any of them issued it, and is checked against that CA's window
// and CRL. Credentials.CAs is the bundle pki.ca holds.
func NewVerifierCAs(cas []*x509.Certificate, self *NodeCert) *Verifier {
	v := &Verifier{self: self}
	for _, ca := range cas {
		if ca != nil {
			v.cas = append(v.cas, ca)
		}
	}
	return v
}

// CAs returns the trusted CA certificates in the order given to the
// constructor. The slice is a copy; the certificates are shared.
func (v *Verifier) CAs() []*x509.Certificate { return slices.Clone(v.cas) }

// crlIssuer returns the index of the trusted CA that signed crl.
func (v *Verifier) crlIssuer(crl *CRL) (int, error) {
	if len(v.cas) == 0 {
		return -1, checkCRLSignature(crl, nil)
	}
	var first error
	for i, ca := range v.cas {
		err := checkCRLSignature(crl, ca)
		if err == nil {
			return i, nil
		}
		if first == nil || bytes.Equal(crl.List.RawIssuer, ca.RawSubject) {
			first = err // prefer the reason given by a CA of the right name
		}
	}
	return -1, first
}

// UpdateCRL installs crl if one of the trusted CAs signed it (ErrCRLSignature
// otherwise) and its number is higher than the installed CRL of that CA. A
// CRL that is not newer is ignored (false, nil): the Verifier never goes back
// to an older list. Each CA's list is kept separately: a CRL of one CA never
// replaces (or revokes the certificates of) another.
func (v *Verifier) UpdateCRL(crl *CRL) (installed bool, err error) {
	i, err := v.crlIssuer(crl)
	if err != nil {
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
	next := make([]*crlState, len(v.cas))
	if cur := v.crls.Load(); cur != nil {
		copy(next, *cur)
	}
	if cur := next[i]; cur != nil && st.number.Cmp(cur.number) <= 0 {
		return false, nil
	}
	next[i] = st
	v.crls.Store(&next)
	return true, nil
}

// NewerCRL reports whether crl's number is higher than that of the installed
// CRL of the CA named as its issuer, without checking its signature: a cheap
// pre-check before UpdateCRL (false means UpdateCRL would ignore it). A CRL
// naming no trusted CA is "newer" so that UpdateCRL reports why it is refused.
func (v *Verifier) NewerCRL(crl *CRL) bool {
	if crl == nil || crl.List == nil {
		return false
	}
	cur := v.crls.Load()
	matched := false
	for i, ca := range v.cas {
		if !bytes.Equal(crl.List.RawIssuer, ca.RawSubject) || !keyIDMatches(crl.List.AuthorityKeyId, ca) {
			continue
		}
		matched = true
		if cur == nil || (*cur)[i] == nil || crl.Number().Cmp((*cur)[i].number) > 0 {
			return true
		}
	}
	return !matched
}

// CRL returns the installed CRL of the primary CA, or nil. The primary CA is
// the one that issued this node's certificate (self) if it is trusted, else
// the first CA. With a single CA that is the only CRL; with several, use CRLs.
func (v *Verifier) CRL() *CRL {
	cur := v.crls.Load()
	if cur == nil {
		return nil
	}
	if st := (*cur)[v.primary()]; st != nil {
		return st.crl
	}
	return nil
}

// CRLs returns the installed CRLs, at most one per trusted CA, in the CAs'
// order.
func (v *Verifier) CRLs() []*CRL {
	cur := v.crls.Load()
	if cur == nil {
		return nil
	}
	var out []*CRL
	for _, st := range *cur {
		if st != nil {
			out = append(out, st.crl)
		}
	}
	return out
}

// primary returns the index of the CA CRL reports on.
func (v *Verifier) primary() int {
	if v.self != nil {
		for i, ca := range v.cas {
			if issuedBy(v.self.Cert, ca) {
				return i
			}
		}
	}
	return 0
}

// IsRevoked reports whether serial is on an installed CRL, of any trusted CA
// (serials are random 128-bit numbers, so two CAs do not share one by
// accident). IsRevokedCert asks only the certificate's own CA.
func (v *Verifier) IsRevoked(serial *big.Int) bool {
	cur := v.crls.Load()
	if cur == nil || serial == nil {
		return false
	}
	key := serial.String()
	for _, st := range *cur {
		if st == nil {
			continue
		}
		if _, ok := st.revoked[key]; ok {
			return true
		}
	}
	return false
}

// IsRevokedCert reports whether cert is on the installed CRL of the CA that
// issued it (matched by issuer name and key identifier, not by signature:
// pass a certificate Verify accepted).
func (v *Verifier) IsRevokedCert(cert *x509.Certificate) bool {
	cur := v.crls.Load()
	if cur == nil || cert == nil || cert.SerialNumber == nil {
		return false
	}
	for i, ca := range v.cas {
		if st := (*cur)[i]; st != nil && issuedBy(cert, ca) {
			if _, ok := st.revoked[cert.SerialNumber.String()]; ok {
				return true
			}
		}
	}
	return false
}

// issuedBy reports whether cert names ca as its issuer: same distinguished
// name and, when both carry one, the same key identifier. It does not check
// the signature.
func issuedBy(cert, ca *x509.Certificate) bool {
	return bytes.Equal(cert.RawIssuer, ca.RawSubject) && keyIDMatches(cert.AuthorityKeyId, ca)
}

// keyIDMatches reports whether an authority key identifier is ca's subject
// key identifier; a missing one on either side matches.
func keyIDMatches(aki []byte, ca *x509.Certificate) bool {
	return len(aki) == 0 || len(ca.SubjectKeyId) == 0 || bytes.Equal(aki, ca.SubjectKeyId)
}

// issuer returns the trusted CA whose signature on cert verifies, or the
// refusal.
func (v *Verifier) issuer(cert *x509.Certificate, subject string) (*x509.Certificate, *VerifyError) {
	if len(v.cas) == 0 {
		return nil, reject(ErrUnknownCA, subject, "the verifier has no CA")
	}
	var named *x509.Certificate
	var sigErr error
	for _, ca := range v.cas {
		if !bytes.Equal(cert.RawIssuer, ca.RawSubject) {
			continue
		}
		named = ca
		// Key identifiers only order the attempts; the signature decides.
		err := cert.CheckSignatureFrom(ca)
		if err == nil {
			return ca, nil
		}
		if sigErr == nil || keyIDMatches(cert.AuthorityKeyId, ca) {
			sigErr = err
		}
	}
	if named == nil {
		return nil, reject(ErrUnknownCA, subject, "issued by %q, the mesh %s %s", cert.Issuer.String(), caNoun(len(v.cas)), caNames(v.cas))
	}
	if len(v.cas) == 1 {
		return nil, reject(ErrUnknownCA, subject, "signature does not verify with the mesh CA %q: %v", named.Subject.String(), sigErr)
	}
	return nil, reject(ErrUnknownCA, subject, "signature does not verify with any mesh CA named %q: %v", named.Subject.String(), sigErr)
}

func caNoun(n int) string {
	if n == 1 {
		return "CA is"
	}
	return "CAs are"
}

func caNames(cas []*x509.Certificate) string {
	names := make([]string, 0, len(cas))
	for _, ca := range cas {
		names = append(names, strconv.Quote(ca.Subject.String()))
	}
	return strings.Join(names, ", ")
}

// Verify checks the peer's leaf certificate rawCerts[0] (further certificates
// are ignored: the CA signs leaves directly) against the mesh policy and the
// expected peer, and returns the accepted certificate. Checks run in this
// order and the first failure is returned as a *VerifyError: no certificate,
// malformed, chain to a trusted CA (incl. tampered signature), CA not yet valid, CA
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

	ca, rej := v.issuer(cert, subject)
	if rej != nil {
		return nil, rej
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
	if now.Before(ca.NotBefore) {
		return nil, reject(ErrCANotYetValid, subject, "the mesh CA %q is not valid before %s, now %s", ca.Subject.CommonName, rfc3339(ca.NotBefore), rfc3339(now))
	}
	if now.After(ca.NotAfter) {
		return nil, reject(ErrCAExpired, subject, "the mesh CA %q expired at %s, now %s", ca.Subject.CommonName, rfc3339(ca.NotAfter), rfc3339(now))
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
	if oids := unhandledCritical(ca); len(oids) > 0 {
		return nil, reject(ErrCriticalExtension, subject, "the mesh CA %q carries critical extensions meshd does not handle: %s", ca.Subject.CommonName, oids)
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

	if cur := v.crls.Load(); cur != nil {
		for i, c := range v.cas {
			if c != ca {
				continue
			}
			if st := (*cur)[i]; st != nil {
				if _, ok := st.revoked[cert.SerialNumber.String()]; ok {
					return nil, reject(ErrRevoked, subject, "serial %x is on CRL number %s of the CA %q", cert.SerialNumber, st.number, ca.Subject.CommonName)
				}
			}
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
