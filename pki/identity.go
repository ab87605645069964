package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"unicode/utf8"
)

// Identity is what a node certificate binds.
type Identity struct {
	Name    string         // node name = certificate CN (and a DNS SAN); [a-z0-9][a-z0-9.-]{0,62}
	Addr    netip.Prefix   // overlay IPv4 with the mesh prefix length, e.g. 100.64.0.1/10 (required)
	Addr6   netip.Prefix   // optional overlay IPv6 (zero if none)
	Groups  []string       // sorted, unique
	Subnets []netip.Prefix // subnets this node may route for (home-lab LANs), masked
	// Coordinator is the coordinator role: the holder may serve coordinator
	// sessions and gossip with other coordinators. Certificates issued before
	// roles existed carry none and read as a plain node (false).
	Coordinator bool
}

// Role names as the CLI and docs print them.
const (
	RoleNode        = "node"
	RoleCoordinator = "coordinator"
)

// Role is "coordinator" for a certificate with the coordinator role and
// "node" otherwise.
func (id Identity) Role() string {
	if id.Coordinator {
		return RoleCoordinator
	}
	return RoleNode
}

// Limits that keep a certificate (and so a DTLS flight) small.
const (
	maxGroups  = 64
	maxSubnets = 256
)

// Object identifiers of meshd's X.509 extensions (see docs/pki.md).
//
// The arc is provisional: it sits under the RFC 5612 documentation enterprise
// number until the project registers its own IANA Private Enterprise Number.
// Changing it invalidates every issued certificate, so do it before a release.
var (
	// OIDIdentity is the node certificate extension holding the MeshdIdentity
	// structure (version, overlay prefixes, groups, subnets). Non-critical, so
	// generic tools (openssl, browsers) can still display the certificate;
	// meshd's Verifier refuses certificates without it.
	OIDIdentity = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7, 1}
	// OIDRevocationComment is a CRL entry extension holding the operator's
	// free-text revocation reason as a UTF8String.
	OIDRevocationComment = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7, 2}
)

// identityVersion is the only MeshdIdentity version this code reads or writes.
const identityVersion = 1

// identityASN1 is the DER shape of the extension:
//
//	MeshdIdentity ::= SEQUENCE {
//	    version  INTEGER (1),
//	    addr     OCTET STRING (SIZE (5)),       -- IPv4 address || prefix length
//	    addr6    OCTET STRING (SIZE (0 | 17)),  -- empty, or IPv6 address || prefix length
//	    groups   SEQUENCE OF UTF8String,
//	    subnets  SEQUENCE OF OCTET STRING (SIZE (5 | 17)), -- address || prefix length
//	    role     [0] EXPLICIT INTEGER { node(0), coordinator(1) } DEFAULT node
//	}
//
// role was added after version 1 shipped; it stays version 1 because the
// field is optional and at the end: DER omits it for a node (so a node
// certificate encodes exactly as before), and older readers ignore trailing
// SEQUENCE elements (encoding/asn1 allows them), so they read a coordinator
// certificate as a node one. Any role value but 0 and 1 is refused.
type identityASN1 struct {
	Version int
	Addr    []byte
	Addr6   []byte
	Groups  []asn1.RawValue
	Subnets [][]byte
	Role    int `asn1:"optional,explicit,tag:0,default:0"`
}

// DER values of the role field.
const (
	roleNode        = 0
	roleCoordinator = 1
)

// ValidName reports whether s is a valid node (or mesh) name:
// [a-z0-9][a-z0-9.-]{0,62}.
func ValidName(s string) bool { return validLabel(s, false) }

// validGroup is ValidName plus '_' (groups are labels people choose freely).
func validGroup(s string) bool { return validLabel(s, true) }

func validLabel(s string, underscore bool) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '-' || (underscore && c == '_')):
		default:
			return false
		}
	}
	return true
}

// Normalize returns a copy of id with groups sorted and de-duplicated and
// subnets sorted and de-duplicated. It does not fix invalid values; Validate
// reports those.
func (id Identity) Normalize() Identity {
	out := id
	out.Groups = slices.Clone(id.Groups)
	slices.Sort(out.Groups)
	out.Groups = slices.Compact(out.Groups)
	out.Subnets = slices.Clone(id.Subnets)
	slices.SortFunc(out.Subnets, comparePrefix)
	out.Subnets = slices.Compact(out.Subnets)
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// Validate checks id against the rules a certificate must satisfy, including
// the canonical order of groups and subnets (Normalize first when building an
// Identity from user input). Errors wrap ErrBadIdentity.
func (id Identity) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadIdentity, fmt.Sprintf(format, args...))
	}
	if !ValidName(id.Name) {
		return bad("name %q: want 1-63 of a-z 0-9 . - starting with a letter or digit", id.Name)
	}
	if !id.Addr.IsValid() {
		return bad("an overlay IPv4 address with prefix length is required (e.g. 100.64.0.1/10)")
	}
	if !id.Addr.Addr().Is4() || id.Addr.Bits() < 1 {
		return bad("overlay address %s: want an IPv4 address with a prefix length of 1-32", id.Addr)
	}
	if id.Addr6.IsValid() {
		a := id.Addr6.Addr()
		if !a.Is6() || a.Is4In6() || a.Zone() != "" || id.Addr6.Bits() < 1 {
			return bad("overlay IPv6 %s: want an IPv6 address with a prefix length of 1-128", id.Addr6)
		}
	} else if id.Addr6 != (netip.Prefix{}) {
		return bad("overlay IPv6 prefix is invalid")
	}
	if len(id.Groups) > maxGroups {
		return bad("%d groups, at most %d", len(id.Groups), maxGroups)
	}
	for i, g := range id.Groups {
		if !validGroup(g) {
			return bad("group %q: want 1-63 of a-z 0-9 . - _ starting with a letter or digit", g)
		}
		if i > 0 && id.Groups[i-1] >= g {
			return bad("groups are not sorted and unique")
		}
	}
	if len(id.Subnets) > maxSubnets {
		return bad("%d subnets, at most %d", len(id.Subnets), maxSubnets)
	}
	for i, s := range id.Subnets {
		if !s.IsValid() || s.Addr().Zone() != "" || s.Addr().Is4In6() {
			return bad("subnet %s is not a valid prefix", s)
		}
		if s.Masked() != s {
			return bad("subnet %s has host bits set (did you mean %s?)", s, s.Masked())
		}
		if i > 0 && comparePrefix(id.Subnets[i-1], s) >= 0 {
			return bad("subnets are not sorted and unique")
		}
	}
	return nil
}

// ipAddresses are the certificate's IP SANs: the overlay addresses, IPv4 first.
func (id Identity) ipAddresses() []net.IP {
	ips := []net.IP{net.IP(id.Addr.Addr().AsSlice())}
	if id.Addr6.IsValid() {
		ips = append(ips, net.IP(id.Addr6.Addr().AsSlice()))
	}
	return ips
}

func marshalPrefix(p netip.Prefix) []byte {
	return append(p.Addr().AsSlice(), byte(p.Bits()))
}

func unmarshalPrefix(b []byte) (netip.Prefix, error) {
	if len(b) != 5 && len(b) != 17 {
		return netip.Prefix{}, fmt.Errorf("prefix of %d bytes, want 5 or 17", len(b))
	}
	a, _ := netip.AddrFromSlice(b[:len(b)-1])
	bits := int(b[len(b)-1])
	if bits > a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix length %d out of range for %s", bits, a)
	}
	return netip.PrefixFrom(a, bits), nil
}

// marshalIdentity encodes the extension value. id must be valid.
func marshalIdentity(id Identity) ([]byte, error) {
	v := identityASN1{
		Version: identityVersion,
		Addr:    marshalPrefix(id.Addr),
		Addr6:   []byte{},
		Groups:  make([]asn1.RawValue, 0, len(id.Groups)),
		Subnets: make([][]byte, 0, len(id.Subnets)),
	}
	if id.Addr6.IsValid() {
		v.Addr6 = marshalPrefix(id.Addr6)
	}
	for _, g := range id.Groups {
		v.Groups = append(v.Groups, asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte(g)})
	}
	for _, s := range id.Subnets {
		v.Subnets = append(v.Subnets, marshalPrefix(s))
	}
	if id.Coordinator {
		v.Role = roleCoordinator
	}
	return asn1.Marshal(v)
}

// unmarshalIdentity decodes and validates an extension value. Only the
// name is not set; it comes from the certificate subject.
func unmarshalIdentity(der []byte) (Identity, error) {
	var v identityASN1
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil {
		return Identity{}, fmt.Errorf("meshd identity extension: %w", err)
	}
	if len(rest) != 0 {
		return Identity{}, errors.New("meshd identity extension: trailing data")
	}
	if v.Version != identityVersion {
		return Identity{}, fmt.Errorf("meshd identity extension: unsupported version %d", v.Version)
	}
	if len(v.Groups) > maxGroups || len(v.Subnets) > maxSubnets {
		return Identity{}, errors.New("meshd identity extension: too many groups or subnets")
	}
	var id Identity
	switch v.Role {
	case roleNode:
	case roleCoordinator:
		id.Coordinator = true
	default:
		return Identity{}, fmt.Errorf("meshd identity extension: unknown role %d", v.Role)
	}
	if id.Addr, err = unmarshalPrefix(v.Addr); err != nil {
		return Identity{}, fmt.Errorf("meshd identity extension: addr: %w", err)
	}
	if len(v.Addr6) != 0 {
		if id.Addr6, err = unmarshalPrefix(v.Addr6); err != nil {
			return Identity{}, fmt.Errorf("meshd identity extension: addr6: %w", err)
		}
	}
	for _, g := range v.Groups {
		if g.Class != asn1.ClassUniversal || g.Tag != asn1.TagUTF8String || g.IsCompound || !utf8.Valid(g.Bytes) {
			return Identity{}, errors.New("meshd identity extension: group is not a UTF8String")
		}
		id.Groups = append(id.Groups, string(g.Bytes))
	}
	for _, s := range v.Subnets {
		p, err := unmarshalPrefix(s)
		if err != nil {
			return Identity{}, fmt.Errorf("meshd identity extension: subnet: %w", err)
		}
		id.Subnets = append(id.Subnets, p)
	}
	return id, nil
}

// identityFromCert reads the identity a certificate binds and checks that its
// subject, DNS SAN and IP SANs agree with the extension.
func identityFromCert(cert *x509.Certificate) (Identity, error) {
	var ext []byte
	found := false
	for _, e := range cert.Extensions {
		if e.Id.Equal(OIDIdentity) {
			if found {
				return Identity{}, errors.New("duplicate meshd identity extension")
			}
			ext, found = e.Value, true
		}
	}
	if !found {
		return Identity{}, errors.New("no meshd identity extension")
	}
	id, err := unmarshalIdentity(ext)
	if err != nil {
		return Identity{}, err
	}
	id.Name = cert.Subject.CommonName
	if len(id.Groups) == 0 {
		id.Groups = nil
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("meshd identity extension: %w", err)
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] != id.Name {
		return Identity{}, fmt.Errorf("DNS SANs %q do not equal the name %q", cert.DNSNames, id.Name)
	}
	want := id.ipAddresses()
	if len(cert.IPAddresses) != len(want) {
		return Identity{}, fmt.Errorf("IP SANs %v do not equal the overlay addresses", cert.IPAddresses)
	}
	for i, ip := range cert.IPAddresses {
		if !ip.Equal(want[i]) {
			return Identity{}, fmt.Errorf("IP SANs %v do not equal the overlay addresses", cert.IPAddresses)
		}
	}
	return id, nil
}
