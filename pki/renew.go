package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"
)

// Renewal: the node makes a new key and a request carrying the identity of
// its current certificate (CreateRenewalCSR); the CA signs the new key with
// that identity only if it is exactly the identity of the certificate being
// renewed (CA.Renew), so a request cannot widen its own identity.

// OIDRenewalProof is the certificate request extension in which the key of
// the certificate being renewed consents to the new key:
//
//	RenewalProof ::= SEQUENCE {
//	    serial     INTEGER,      -- of the certificate being renewed
//	    signature  OCTET STRING  -- by its key over renewalContext ||
//	}                            --   the request's SubjectPublicKeyInfo || serial (big-endian)
var OIDRenewalProof = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7, 3}

type renewalProof struct {
	Serial    *big.Int
	Signature []byte
}

func renewalMessage(spki []byte, serial *big.Int) []byte {
	return append(append([]byte(nil), spki...), serial.Bytes()...)
}

// CreateRenewalCSR makes a PEM certificate request for id signed by the new
// key: the subject and DNS SAN are id.Name, the request asks for the meshd
// identity extension holding id (addresses, groups, subnets, role), and
// prevKey, the key of prev (the certificate being renewed), signs a proof
// that it consents to the new key. id is normally prev.Identity; CA.Renew
// refuses anything else.
func CreateRenewalCSR(newKey crypto.Signer, id Identity, prev *NodeCert, prevKey crypto.Signer) ([]byte, error) {
	if newKey == nil {
		return nil, fmt.Errorf("%w: nil key", ErrKeyType)
	}
	if _, err := KeyTypeOf(newKey.Public()); err != nil {
		return nil, err
	}
	if prev == nil || !KeyBelongsTo(prevKey, prev.Cert) {
		return nil, fmt.Errorf("pki: renewal: %w", ErrKeyMismatch)
	}
	id = id.Normalize()
	if err := id.Validate(); err != nil {
		return nil, err
	}
	ext, err := marshalIdentity(id)
	if err != nil {
		return nil, fmt.Errorf("pki: encode identity: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(newKey.Public())
	if err != nil {
		return nil, fmt.Errorf("pki: renewal: %w", err)
	}
	sig, err := signContext(prevKey, renewalContext, renewalMessage(spki, prev.Cert.SerialNumber))
	if err != nil {
		return nil, err
	}
	proof, err := asn1.Marshal(renewalProof{Serial: prev.Cert.SerialNumber, Signature: sig})
	if err != nil {
		return nil, fmt.Errorf("pki: renewal: %w", err)
	}
	tmpl := &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: id.Name},
		DNSNames:    []string{id.Name},
		IPAddresses: id.ipAddresses(),
		ExtraExtensions: []pkix.Extension{
			{Id: OIDIdentity, Value: ext},
			{Id: OIDRenewalProof, Value: proof},
		},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, newKey)
	if err != nil {
		return nil, fmt.Errorf("pki: create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), nil
}

// checkRenewalProof verifies that prev's key signed the request's key.
func checkRenewalProof(csr *x509.CertificateRequest, prev *NodeCert) error {
	var raw []byte
	n := 0
	for _, e := range csr.Extensions {
		if e.Id.Equal(OIDRenewalProof) {
			raw, n = e.Value, n+1
		}
	}
	if n != 1 {
		return fmt.Errorf("%w: the renewal request carries %d proofs by the current key, want 1 (make it with 'meshctl cert renew')", ErrBadSignature, n)
	}
	var p renewalProof
	if rest, err := asn1.Unmarshal(raw, &p); err != nil || len(rest) != 0 || p.Serial == nil {
		return fmt.Errorf("%w: malformed renewal proof", ErrBadSignature)
	}
	if p.Serial.Cmp(prev.Cert.SerialNumber) != 0 {
		return fmt.Errorf("%w: the request renews serial %x, not the latest certificate of %q (serial %x)", ErrBadSignature, p.Serial, prev.Identity.Name, prev.Cert.SerialNumber)
	}
	if err := verifyContext(prev.Cert, renewalContext, renewalMessage(csr.RawSubjectPublicKeyInfo, p.Serial), p.Signature); err != nil {
		return fmt.Errorf("%w: the renewal request is not signed by the key of the certificate it renews", ErrBadSignature)
	}
	return nil
}

// ParseCSR parses the first CERTIFICATE REQUEST block of csrPEM and checks
// its self-signature (ErrBadSignature).
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	der, ok := firstPEM(csrPEM, pemCSR)
	if !ok {
		if der, ok = firstPEM(csrPEM, "NEW "+pemCSR); !ok {
			return nil, errors.New("pki: no CERTIFICATE REQUEST block in PEM data")
		}
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: certificate request: %v", ErrBadSignature, err)
	}
	return csr, nil
}

// CSRIdentity returns the identity a request asks for (CreateRenewalCSR):
// its meshd identity extension with the subject CN as the name. ok is false
// for a request without the extension (cert request makes those; the CA
// supplies the identity).
func CSRIdentity(csr *x509.CertificateRequest) (id Identity, ok bool, err error) {
	var ext []byte
	for _, e := range csr.Extensions {
		if e.Id.Equal(OIDIdentity) {
			if ok {
				return Identity{}, false, errors.New("pki: certificate request: duplicate meshd identity extension")
			}
			ext, ok = e.Value, true
		}
	}
	if !ok {
		return Identity{}, false, nil
	}
	if id, err = unmarshalIdentity(ext); err != nil {
		return Identity{}, false, fmt.Errorf("pki: certificate request: %w", err)
	}
	id.Name = csr.Subject.CommonName
	if len(id.Groups) == 0 {
		id.Groups = nil
	}
	if err := id.Validate(); err != nil {
		return Identity{}, false, fmt.Errorf("pki: certificate request: %w", err)
	}
	return id, true, nil
}

// Equal reports whether id and o bind the same name, addresses, groups,
// subnets and role (after Normalize).
func (id Identity) Equal(o Identity) bool {
	a, b := id.Normalize(), o.Normalize()
	return a.Name == b.Name && a.Addr == b.Addr && a.Addr6 == b.Addr6 && a.Coordinator == b.Coordinator &&
		slices.Equal(a.Groups, b.Groups) && slices.Equal(a.Subnets, b.Subnets)
}

// identityDiff lists how want differs from have, for an error message.
func identityDiff(have, want Identity) string {
	have, want = have.Normalize(), want.Normalize()
	var d []string
	if have.Name != want.Name {
		d = append(d, fmt.Sprintf("name %q, not %q", want.Name, have.Name))
	}
	if have.Addr != want.Addr || have.Addr6 != want.Addr6 {
		d = append(d, fmt.Sprintf("addresses %v %v, not %v %v", want.Addr, want.Addr6, have.Addr, have.Addr6))
	}
	if !slices.Equal(have.Groups, want.Groups) {
		d = append(d, fmt.Sprintf("groups %v, not %v", want.Groups, have.Groups))
	}
	if !slices.Equal(have.Subnets, want.Subnets) {
		d = append(d, fmt.Sprintf("subnets %v, not %v", want.Subnets, have.Subnets))
	}
	if have.Coordinator != want.Coordinator {
		d = append(d, fmt.Sprintf("role %s, not %s", want.Role(), have.Role()))
	}
	return strings.Join(d, "; ")
}

// Renew signs the request's new key with the identity of prev, the
// certificate being renewed. prev must have been issued by this CA or by one
// of prevIssuers (the old CA, when a CA rotation re-signs nodes with the new
// one) (ErrUnknownCA), and the request must carry an identity
// (CreateRenewalCSR) equal to prev's (ErrBadIdentity otherwise: a renewal
// never changes what a certificate allows; sign a new certificate for that).
func (ca *CA) Renew(csrPEM []byte, prev *NodeCert, validity time.Duration, prevIssuers ...*x509.Certificate) (*NodeCert, error) {
	if ca == nil || ca.Cert == nil || prev == nil || prev.Cert == nil {
		return nil, errors.New("pki: renew: no CA or no previous certificate")
	}
	issued := false
	var issuer *x509.Certificate
	for _, c := range append([]*x509.Certificate{ca.Cert}, prevIssuers...) {
		if c != nil && prev.Cert.CheckSignatureFrom(c) == nil {
			issued, issuer = true, c
			break
		}
	}
	if !issued {
		return nil, fmt.Errorf("%w: the certificate being renewed (%q, serial %x) was not issued by the CA %q", ErrUnknownCA, prev.Identity.Name, prev.Cert.SerialNumber, ca.Cert.Subject.CommonName)
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	id, ok, err := CSRIdentity(csr)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: the request carries no identity (make it with 'meshctl cert renew')", ErrBadIdentity)
	}
	if err := checkRenewalProof(csr, prev); err != nil {
		return nil, err
	}
	if !id.Equal(prev.Identity) {
		return nil, fmt.Errorf("%w: the renewal request differs from the certificate it renews (serial %x): it asks for %s", ErrBadIdentity, prev.Cert.SerialNumber, identityDiff(prev.Identity, id))
	}
	// A renewal keeps the IPv6 address: across a CA rotation it may lie in
	// the previous CA's prefix rather than this one's (docs/pki.md, "Rotate
	// the CA", says to keep the prefix; a rotation that did not must still
	// renew its nodes, or they are stranded between two CAs).
	prefix6 := ca.Prefix6()
	if p, err := MeshPrefix6(issuer); err == nil && p.IsValid() && checkAddr6(prev.Identity, p) == nil {
		prefix6 = p
	}
	return ca.signValidity(csr.PublicKey, prev.Identity, validity, prefix6)
}

// KeyBelongsTo reports whether key is the private key of cert.
func KeyBelongsTo(key crypto.Signer, cert *x509.Certificate) bool {
	return key != nil && cert != nil && publicKeysEqual(cert.PublicKey, key.Public())
}
