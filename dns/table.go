package dns

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"
)

// TTL is the time to live, in seconds, of every answer and of negative
// answers (the SOA minimum): names follow the registry within a second, so
// a cache in front of meshd (systemd-resolved's) may not keep them longer.
const TTL = 1

// maxNodeNameLen bounds the node label(s) of a served name; certificate
// names are at most 63 bytes (pki).
const maxNodeNameLen = 63

// Host is one served name: a node and its overlay addresses.
type Host struct {
	// Name is the node name (its certificate's CN), without the domain.
	Name string
	// Addrs are its overlay addresses (IPv4 first).
	Addrs []netip.Addr
}

// Table is one immutable snapshot of the names the resolver serves. The
// daemon builds a new one whenever the registry changes and swaps it in
// with [Server.SetTable]; queries read whichever table is current.
type Table struct {
	domain string // canonical FQDN: lower case, trailing dot
	mesh   []netip.Prefix
	hosts  []Host                // sorted by name
	byName map[string]int        // FQDN → index into hosts
	byAddr map[netip.Addr]string // overlay address → FQDN
	soa    *mdns.SOA
}

// NewTable returns the table for domain ("mesh.internal", with or without
// the trailing dot) serving hosts, and PTR records inside the mesh
// prefixes. Hosts with an invalid name or no address are skipped; when two
// hosts claim a name or an address the first one in name order keeps it.
// domain must be a valid mesh domain (see pki.ValidMeshDomain: the CA
// certificate names it, and pki checks it there).
func NewTable(domain string, mesh []netip.Prefix, hosts []Host) *Table {
	t := &Table{
		domain: mdns.CanonicalName(domain),
		byName: make(map[string]int, len(hosts)),
		byAddr: make(map[netip.Addr]string, len(hosts)),
	}
	for _, p := range mesh {
		if p.IsValid() {
			t.mesh = append(t.mesh, p.Masked())
		}
	}
	sorted := slices.Clone(hosts)
	slices.SortFunc(sorted, func(a, b Host) int { return cmp.Compare(a.Name, b.Name) })
	for _, h := range sorted {
		name := strings.ToLower(h.Name)
		if !validNodeName(name) || len(h.Addrs) == 0 {
			continue
		}
		fqdn := name + "." + t.domain
		if _, dup := t.byName[fqdn]; dup {
			continue
		}
		served := Host{Name: name}
		for _, a := range sortedAddrs(h.Addrs) {
			a = a.Unmap()
			if _, taken := t.byAddr[a]; taken || !a.IsValid() {
				continue
			}
			t.byAddr[a] = fqdn
			served.Addrs = append(served.Addrs, a)
		}
		if len(served.Addrs) == 0 {
			continue
		}
		t.byName[fqdn] = len(t.hosts)
		t.hosts = append(t.hosts, served)
	}
	t.soa = &mdns.SOA{
		Hdr:     mdns.RR_Header{Name: t.domain, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: TTL},
		Ns:      "ns." + t.domain,
		Mbox:    "hostmaster." + t.domain,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  TTL,
	}
	return t
}

// sortedAddrs returns addrs with IPv4 first, otherwise in their order.
func sortedAddrs(addrs []netip.Addr) []netip.Addr {
	out := slices.Clone(addrs)
	slices.SortStableFunc(out, func(a, b netip.Addr) int {
		a4, b4 := a.Unmap().Is4(), b.Unmap().Is4()
		switch {
		case a4 == b4:
			return 0
		case a4:
			return -1
		default:
			return 1
		}
	})
	return out
}

// Domain returns the table's domain without the trailing dot.
func (t *Table) Domain() string { return strings.TrimSuffix(t.domain, ".") }

// Hosts returns the served hosts sorted by name. The caller must not modify
// them.
func (t *Table) Hosts() []Host { return t.hosts }

// FQDN returns the name a node is served under, without the trailing dot.
func (t *Table) FQDN(node string) string { return strings.ToLower(node) + "." + t.Domain() }

// Lookup returns the host a name stands for: a node name ("nas"), its
// FQDN with or without the trailing dot ("nas.mesh.internal"), or one of
// its overlay addresses.
func (t *Table) Lookup(name string) (Host, bool) {
	if a, err := netip.ParseAddr(name); err == nil {
		fqdn, ok := t.byAddr[a.Unmap()]
		if !ok {
			return Host{}, false
		}
		return t.hosts[t.byName[fqdn]], true
	}
	n := mdns.CanonicalName(name)
	if i, ok := t.byName[n]; ok {
		return t.hosts[i], true
	}
	if i, ok := t.byName[n+t.domain]; ok {
		return t.hosts[i], true
	}
	return Host{}, false
}

// validNodeName accepts the certificate name syntax (pki): 1-63 bytes of
// [a-z0-9.-] starting with a letter or digit, and no empty label.
func validNodeName(s string) bool {
	if s == "" || len(s) > maxNodeNameLen || s[0] == '-' || s[0] == '.' || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			return false
		}
	}
	return true
}
