package main

// The IPv6 overlay address "meshctl cert sign" assigns: derived from the
// IPv4 address inside the CA's mesh IPv6 prefix, named with --ip6, or none.

import (
	"net/netip"

	"github.com/meshd/meshd/pki"
)

// Special values of cert sign --ip6 (and ca init --ip6-prefix).
const (
	ip6Auto = "auto"
	ip6None = "none"
)

// parseAddr6 reads an explicit --ip6: an IPv6 address, with or without a
// prefix length (without one, assignAddr6 takes the CA prefix's).
func parseAddr6(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Is6() && !a.Is4In6() && a.Zone() == "" {
		return netip.PrefixFrom(a, 0), nil // length filled in by assignAddr6
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() == 0 {
		return netip.Prefix{}, pkiUsage(`--ip6 %q: want "auto", "none" or an IPv6 address such as fd7a:115c:a1e0::7 (or fd7a:115c:a1e0::7/48)`, s)
	}
	return p, nil
}

// assignAddr6 settles id.Addr6 for a CA whose mesh IPv6 prefix is prefix6
// (zero for an IPv4-only CA). auto derives it from the IPv4 host part when
// the CA has a prefix; an explicit address must lie inside the CA's prefix
// (with its length). Subnets must not overlap the IPv6 mesh prefix either.
func (a certSignArgs) assignAddr6(id pki.Identity, prefix6 netip.Prefix) (pki.Identity, error) {
	switch a.ip6 {
	case ip6None:
		id.Addr6 = netip.Prefix{}
	case "", ip6Auto:
		if !prefix6.IsValid() {
			break // an IPv4-only mesh
		}
		d, err := pki.DeriveAddr6(prefix6, id.Addr)
		if err != nil {
			return id, pkiUsage("--ip6 auto: %v; give --ip6 ADDR inside %v", err, prefix6)
		}
		id.Addr6 = d
	default:
		p6, err := parseAddr6(a.ip6)
		if err != nil {
			return id, err
		}
		id.Addr6 = p6
		if p6.Bits() == 0 {
			if !prefix6.IsValid() {
				return id, pkiUsage("--ip6 %s: the CA has no IPv6 prefix, so give the prefix length too (e.g. %s/48)", a.ip6, a.ip6)
			}
			id.Addr6 = netip.PrefixFrom(id.Addr6.Addr(), prefix6.Bits())
		}
		if prefix6.IsValid() && (id.Addr6.Bits() != prefix6.Bits() || !prefix6.Contains(id.Addr6.Addr()) || id.Addr6.Addr() == prefix6.Addr()) {
			return id, pkiUsage("--ip6 %s: not a host address of the CA's IPv6 prefix %v (want ADDR/%d inside it)", a.ip6, prefix6, prefix6.Bits())
		}
	}
	if id.Addr6.IsValid() {
		for _, s := range id.Subnets {
			if s.Bits() > 0 && s.Overlaps(id.Addr6.Masked()) {
				return id, pkiUsage("--subnets: %v overlaps the mesh prefix %v: a node routes subnets outside the overlay", s, id.Addr6.Masked())
			}
		}
	}
	return id, nil
}

// pkiPrefix6 shows a CA's mesh IPv6 prefix.
func pkiPrefix6(p netip.Prefix) string {
	if !p.IsValid() {
		return "(none: an IPv4-only mesh)"
	}
	return p.String()
}
