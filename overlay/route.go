package overlay

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// routeTable maps destination addresses to peers by longest-prefix match. It
// is built once per Reconfig and never changed afterwards, so the data path
// reads it through the state pointer without any lock.
//
// Layout: one hash map per prefix length present, longest first. A lookup
// masks the address with each length in turn and probes that map; the first
// hit is the longest match. A mesh has a handful of distinct lengths (/32 for
// overlay addresses, a few subnet sizes), so this is a few map probes with
// integer keys: no allocation, no pointer chasing through a trie.
type routeTable struct {
	v4 []routeLevel4
	v6 []routeLevel6
}

type routeLevel4 struct {
	bits int
	mask uint32
	m    map[uint32]*peerState
}

type routeLevel6 struct {
	bits   int
	mh, ml uint64
	m      map[[2]uint64]*peerState
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addr6(a netip.Addr) (uint64, uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

func mask4(bits int) uint32 {
	if bits == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

func mask6(bits int) (uint64, uint64) {
	switch {
	case bits == 0:
		return 0, 0
	case bits <= 64:
		return ^uint64(0) << (64 - bits), 0
	default:
		return ^uint64(0), ^uint64(0) << (128 - bits)
	}
}

// insert adds pfx → p. Conflicts (the same prefix for two peers) are
// rejected by validation before a table is built; insert overwrites.
func (t *routeTable) insert(pfx netip.Prefix, p *peerState) {
	pfx = pfx.Masked()
	bits := pfx.Bits()
	if pfx.Addr().Is4() {
		i := slices.IndexFunc(t.v4, func(l routeLevel4) bool { return l.bits == bits })
		if i < 0 {
			t.v4 = append(t.v4, routeLevel4{bits: bits, mask: mask4(bits), m: map[uint32]*peerState{}})
			slices.SortFunc(t.v4, func(a, b routeLevel4) int { return b.bits - a.bits })
			i = slices.IndexFunc(t.v4, func(l routeLevel4) bool { return l.bits == bits })
		}
		t.v4[i].m[addr4(pfx.Addr())] = p
		return
	}
	i := slices.IndexFunc(t.v6, func(l routeLevel6) bool { return l.bits == bits })
	if i < 0 {
		mh, ml := mask6(bits)
		t.v6 = append(t.v6, routeLevel6{bits: bits, mh: mh, ml: ml, m: map[[2]uint64]*peerState{}})
		slices.SortFunc(t.v6, func(a, b routeLevel6) int { return b.bits - a.bits })
		i = slices.IndexFunc(t.v6, func(l routeLevel6) bool { return l.bits == bits })
	}
	h, l := addr6(pfx.Addr())
	t.v6[i].m[[2]uint64{h, l}] = p
}

// lookup returns the peer whose route is the longest prefix containing dst,
// and that prefix's length, or nil. It allocates nothing.
func (t *routeTable) lookup(dst netip.Addr) (*peerState, int) {
	if dst.Is4() {
		a := addr4(dst)
		for i := range t.v4 {
			l := &t.v4[i]
			if p, ok := l.m[a&l.mask]; ok {
				return p, l.bits
			}
		}
		return nil, 0
	}
	if !dst.Is6() {
		return nil, 0
	}
	h, lo := addr6(dst)
	for i := range t.v6 {
		l := &t.v6[i]
		if p, ok := l.m[[2]uint64{h & l.mh, lo & l.ml}]; ok {
			return p, l.bits
		}
	}
	return nil, 0
}
