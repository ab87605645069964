package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// The mesh domain is the DNS domain under which meshd serves its nodes'
// names (<node>.<domain>). It is chosen at `meshctl ca init --domain` and
// stored in the CA certificate, in a non-critical extension, so that every
// node holding the CA agrees on it and no configuration can disagree. A CA
// without the extension (made before domains existed) has
// DefaultMeshDomain.

// OIDMeshDomain is the CA certificate extension holding the mesh domain, an
// ASN.1 IA5String without the trailing dot ("mesh.internal").
var OIDMeshDomain = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7, 5}

// DefaultMeshDomain is the mesh domain of a CA that names none: under
// .internal, the top-level name ICANN reserved for private use.
const DefaultMeshDomain = "mesh.internal"

// maxMeshDomainLen bounds the domain so that a 63-byte node name and the
// dot fit under DNS's 253-byte name limit.
const maxMeshDomainLen = 189

// ValidMeshDomain reports whether s can be a mesh domain: two or more
// labels of [a-z0-9-] (1-63 bytes each, not starting or ending with '-'),
// lower case, no trailing dot, at most 189 bytes, and not an IP address.
func ValidMeshDomain(s string) bool {
	if s == "" || len(s) > maxMeshDomainLen || !strings.Contains(s, ".") {
		return false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

// NewCAWithDomain is NewCAWithPrefix6 for a mesh whose names live under
// domain (see ValidMeshDomain); "" means DefaultMeshDomain, which is then
// written into the certificate too.
func NewCAWithDomain(name string, validity time.Duration, kt KeyType, prefix6 netip.Prefix, domain string) (*CA, error) {
	if domain == "" {
		domain = DefaultMeshDomain
	}
	if !ValidMeshDomain(domain) {
		return nil, fmt.Errorf("%w: mesh domain %q: want a lower-case DNS name of two or more labels, e.g. %q", ErrBadIdentity, domain, DefaultMeshDomain)
	}
	v, err := asn1.MarshalWithParams(domain, "ia5")
	if err != nil {
		return nil, fmt.Errorf("pki: encode mesh domain: %w", err)
	}
	ext := pkix.Extension{Id: OIDMeshDomain, Value: v}
	if prefix6 == (netip.Prefix{}) {
		return newCA(name, validity, kt, []pkix.Extension{ext})
	}
	if err := ValidateMeshPrefix6(prefix6); err != nil {
		return nil, err
	}
	p6, err := marshalMeshPrefix6(prefix6)
	if err != nil {
		return nil, fmt.Errorf("pki: encode IPv6 prefix: %w", err)
	}
	return newCA(name, validity, kt, []pkix.Extension{{Id: OIDMeshPrefix6, Value: p6}, ext})
}

// MeshDomain returns the mesh domain a CA certificate names, or
// DefaultMeshDomain when it names none or its extension is malformed.
func MeshDomain(ca *x509.Certificate) string {
	if ca == nil {
		return DefaultMeshDomain
	}
	for _, e := range ca.Extensions {
		if !e.Id.Equal(OIDMeshDomain) {
			continue
		}
		var s string
		if rest, err := asn1.UnmarshalWithParams(e.Value, &s, "ia5"); err != nil || len(rest) != 0 || !ValidMeshDomain(s) {
			return DefaultMeshDomain
		}
		return s
	}
	return DefaultMeshDomain
}

// MeshDomain returns the mesh domain of the CA that signed this node's
// certificate (the first CA of the bundle if none did).
func (c *Credentials) MeshDomain() string {
	for _, ca := range c.TrustedCAs() {
		if c.Cert != nil && c.Cert.Cert != nil && c.Cert.Cert.CheckSignatureFrom(ca) == nil {
			return MeshDomain(ca)
		}
	}
	return MeshDomain(c.CA)
}
