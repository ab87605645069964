package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/netip"
)

// The mesh's IPv6 overlay prefix.
//
// A CA made by "meshctl ca init" carries one RFC 4193 unique local /48 in an
// extension of its own certificate, so every node (and every operator who
// signs with that CA) agrees on it without any configuration. Node
// certificates get one address inside it (Identity.Addr6, with the prefix's
// length, as Addr has the IPv4 mesh prefix's). A CA certificate without the
// extension (made before IPv6, or with "--ip6-prefix none") is an IPv4-only
// mesh: its nodes get no IPv6 address unless the operator names one.

// OIDMeshPrefix6 is the CA certificate extension holding the mesh's IPv6
// overlay prefix: an OCTET STRING (SIZE (17)), the 16-byte network address
// followed by the prefix length (always 48). Non-critical: older meshd
// versions ignore it and treat the mesh as IPv4-only.
var OIDMeshPrefix6 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 7, 4}

// MeshPrefix6Bits is the length of a mesh IPv6 prefix (RFC 4193 §3.1: a
// global ID of 40 bits after fd00::/8).
const MeshPrefix6Bits = 48

// ula is fc00::/7, the unique local address range (RFC 4193).
var ula = netip.MustParsePrefix("fc00::/7")

// ErrBadPrefix6: a mesh IPv6 prefix is not a unique local /48, or a node's
// IPv6 address is not inside its CA's prefix. Wrapped with the details.
var ErrBadPrefix6 = errors.New("pki: bad mesh IPv6 prefix")

// ValidateMeshPrefix6 checks that p can be a mesh's IPv6 prefix: a unique
// local (fc00::/7) /48 without host bits. Errors wrap ErrBadPrefix6.
func ValidateMeshPrefix6(p netip.Prefix) error {
	switch {
	case !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().Zone() != "":
		return fmt.Errorf("%w: %v is not an IPv6 prefix", ErrBadPrefix6, p)
	case p.Bits() != MeshPrefix6Bits:
		return fmt.Errorf("%w: %v: want a /%d", ErrBadPrefix6, p, MeshPrefix6Bits)
	case !ula.Contains(p.Addr()):
		return fmt.Errorf("%w: %v is not a unique local prefix (fc00::/7, normally fdXX:XXXX:XXXX::/48)", ErrBadPrefix6, p)
	case p.Masked() != p:
		return fmt.Errorf("%w: %v has host bits set (did you mean %v?)", ErrBadPrefix6, p, p.Masked())
	}
	return nil
}

// RandomMeshPrefix6 returns a fresh RFC 4193 prefix: fd00::/8 followed by a
// 40-bit random global ID, as a /48.
func RandomMeshPrefix6() (netip.Prefix, error) {
	var a [16]byte
	a[0] = 0xfd
	if _, err := rand.Read(a[1:6]); err != nil {
		return netip.Prefix{}, fmt.Errorf("pki: random IPv6 prefix: %w", err)
	}
	return netip.PrefixFrom(netip.AddrFrom16(a), MeshPrefix6Bits), nil
}

// DeriveAddr6 is the IPv6 overlay address that goes with the IPv4 overlay
// address addr inside the mesh IPv6 prefix prefix6: the IPv4 host part (the
// bits after addr's prefix length) in the low 32 bits, with prefix6's
// length. 100.64.0.7/10 in fd12:3456:789a::/48 is fd12:3456:789a::7/48, and
// 100.64.1.2/10 is fd12:3456:789a::102/48. An all-zero host part (the IPv4
// network address) has no derived address.
func DeriveAddr6(prefix6, addr netip.Prefix) (netip.Prefix, error) {
	if err := ValidateMeshPrefix6(prefix6); err != nil {
		return netip.Prefix{}, err
	}
	if !addr.IsValid() || !addr.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%w: %v is not an IPv4 address with a prefix length", ErrBadIdentity, addr)
	}
	a4 := addr.Addr().As4()
	v := uint32(a4[0])<<24 | uint32(a4[1])<<16 | uint32(a4[2])<<8 | uint32(a4[3])
	if addr.Bits() >= 32 {
		v = 0
	} else {
		v &= 1<<(32-addr.Bits()) - 1
	}
	if v == 0 {
		return netip.Prefix{}, fmt.Errorf("%w: %v has no host part to derive an IPv6 address from", ErrBadIdentity, addr)
	}
	a6 := prefix6.Addr().As16()
	a6[12], a6[13], a6[14], a6[15] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	return netip.PrefixFrom(netip.AddrFrom16(a6), prefix6.Bits()), nil
}

// MeshPrefix6 reads the mesh IPv6 prefix from a CA certificate. A CA
// without the extension returns the zero prefix and no error (an IPv4-only
// mesh); a malformed or duplicated one is an error.
func MeshPrefix6(caCert *x509.Certificate) (netip.Prefix, error) {
	var (
		p     netip.Prefix
		found bool
	)
	for _, e := range caCert.Extensions {
		if !e.Id.Equal(OIDMeshPrefix6) {
			continue
		}
		if found {
			return netip.Prefix{}, errors.New("pki: duplicate mesh IPv6 prefix extension")
		}
		found = true
		var err error
		if p, err = parseMeshPrefix6(e.Value); err != nil {
			return netip.Prefix{}, err
		}
	}
	return p, nil
}

// parseMeshPrefix6 decodes and validates the extension value.
func parseMeshPrefix6(der []byte) (netip.Prefix, error) {
	var b []byte
	rest, err := asn1.Unmarshal(der, &b)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("pki: mesh IPv6 prefix extension: %w", err)
	}
	if len(rest) != 0 {
		return netip.Prefix{}, errors.New("pki: mesh IPv6 prefix extension: trailing data")
	}
	if len(b) != 17 {
		return netip.Prefix{}, fmt.Errorf("pki: mesh IPv6 prefix extension: %d bytes, want 17", len(b))
	}
	p, err := unmarshalPrefix(b)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("pki: mesh IPv6 prefix extension: %w", err)
	}
	if err := ValidateMeshPrefix6(p); err != nil {
		return netip.Prefix{}, fmt.Errorf("pki: mesh IPv6 prefix extension: %w", err)
	}
	return p, nil
}

// marshalMeshPrefix6 encodes the extension value. p must be valid.
func marshalMeshPrefix6(p netip.Prefix) ([]byte, error) {
	return asn1.Marshal(marshalPrefix(p))
}

// Prefix6 is the mesh IPv6 prefix the CA certificate carries, or the zero
// prefix for an IPv4-only mesh. LoadCA and NewCA have already checked it.
func (ca *CA) Prefix6() netip.Prefix {
	if ca == nil || ca.Cert == nil {
		return netip.Prefix{}
	}
	p, _ := MeshPrefix6(ca.Cert)
	return p
}

// checkAddr6 refuses a node IPv6 address outside the mesh prefix p6, with
// another prefix length, or the prefix's own network address: every node of
// a mesh must agree on where the overlay's IPv6 addresses live. A zero p6 (a
// CA without a prefix) accepts any address the identity rules allow.
func checkAddr6(id Identity, p6 netip.Prefix) error {
	if !p6.IsValid() || !id.Addr6.IsValid() {
		return nil
	}
	if id.Addr6.Bits() != p6.Bits() || !p6.Contains(id.Addr6.Addr()) || id.Addr6.Addr() == p6.Addr() {
		return fmt.Errorf("%w: overlay IPv6 %v is not a host address of the mesh prefix %v with its length /%d", ErrBadPrefix6, id.Addr6, p6, p6.Bits())
	}
	return nil
}
