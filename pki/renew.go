package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Renewal: the node makes a new key and a request carrying the identity of
// its current certificate (CreateRenewalCSR); the CA signs the new key with
// that identity only if it is exactly the identity of the certificate being
// renewed (CA.Renew), so a request cannot widen its own identity.

// CreateRenewalCSR makes a PEM certificate request for id signed by key: the
// subject and DNS SAN are id.Name and the request asks for the meshd identity
// extension holding id (addresses, groups, subnets, role).
func CreateRenewalCSR(key crypto.Signer, id Identity) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: nil key", ErrKeyType)
	}
	if _, err := KeyTypeOf(key.Public()); err != nil {
		return nil, err
	}
	id = id.Normalize()
	if err := id.Validate(); err != nil {
		return nil, err
	}
	ext, err := marshalIdentity(id)
	if err != nil {
		return nil, fmt.Errorf("pki: encode identity: %w", err)
	}
	tmpl := &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: id.Name},
		DNSNames:        []string{id.Name},
		IPAddresses:     id.ipAddresses(),
		ExtraExtensions: []pkix.Extension{{Id: OIDIdentity, Value: ext}},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCSR, Bytes: der}), nil
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
	for _, issuer := range append([]*x509.Certificate{ca.Cert}, prevIssuers...) {
		if issuer != nil && prev.Cert.CheckSignatureFrom(issuer) == nil {
			issued = true
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
	if !id.Equal(prev.Identity) {
		return nil, fmt.Errorf("%w: the renewal request differs from the certificate it renews (serial %x): it asks for %s", ErrBadIdentity, prev.Cert.SerialNumber, identityDiff(prev.Identity, id))
	}
	return ca.Sign(csr.PublicKey, prev.Identity, validity)
}

// KeyBelongsTo reports whether key is the private key of cert.
func KeyBelongsTo(key crypto.Signer, cert *x509.Certificate) bool {
	return key != nil && cert != nil && publicKeysEqual(cert.PublicKey, key.Public())
}
