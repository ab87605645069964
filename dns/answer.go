package dns

import (
	"net/netip"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"
)

// The query handler, as a pure function of the current table and one
// request, so that tests, the fuzz target and the benchmark drive exactly
// what the listeners serve:
//
//	request → checks (opcode, one question, class IN) → zone:
//	  <node>.<domain>          A/AAAA (or NODATA), NXDOMAIN if no such node
//	  <domain>                 SOA (NODATA for other types)
//	  reverse name in the mesh PTR, NXDOMAIN if no node has the address
//	  anything else            forwarded if configured, else REFUSED
//
// The answer never depends on anything but the table and the request: no
// lookup leaves the process for a name in the mesh domain.

// zone says which part of the name space a question falls in.
type zone int

const (
	zoneOther   zone = iota // not ours: forward or refuse
	zoneMesh                // inside the mesh domain
	zoneReverse             // a reverse name of an address in a mesh prefix
)

// answer builds the reply to req from t. It returns the reply and the
// zone of the question; for zoneOther the reply is REFUSED and the caller
// may forward instead. req must not be nil.
func answer(t *Table, req *mdns.Msg) (*mdns.Msg, zone) {
	m := new(mdns.Msg)
	if req.Opcode != mdns.OpcodeQuery {
		m.SetRcode(req, mdns.RcodeNotImplemented)
		return m, zoneMesh
	}
	if len(req.Question) != 1 {
		m.SetRcodeFormatError(req)
		return m, zoneMesh
	}
	m.SetReply(req)
	q := req.Question[0]
	name := mdns.CanonicalName(q.Name)
	z := t.zoneOf(name)
	if z == zoneOther || (q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY) {
		m.Rcode = mdns.RcodeRefused
		return m, zoneOther
	}
	m.Authoritative = true
	m.RecursionAvailable = true
	switch z {
	case zoneMesh:
		t.answerMesh(m, q, name)
	case zoneReverse:
		t.answerReverse(m, q, name)
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(maxUDPSize, false)
	}
	return m, z
}

// maxUDPSize is the EDNS0 payload size meshd offers: the DNS flag day 2020
// value, which fits an IPv6 minimum-MTU packet.
const maxUDPSize = 1232

func (t *Table) zoneOf(name string) zone {
	if name == t.domain || strings.HasSuffix(name, "."+t.domain) {
		return zoneMesh
	}
	if a, ok := parseReverse(name); ok {
		for _, p := range t.mesh {
			if p.Contains(a) {
				return zoneReverse
			}
		}
	}
	return zoneOther
}

func (t *Table) answerMesh(m *mdns.Msg, q mdns.Question, name string) {
	if name == t.domain {
		if q.Qtype == mdns.TypeSOA || q.Qtype == mdns.TypeANY {
			m.Answer = append(m.Answer, t.soa)
		} else {
			m.Ns = append(m.Ns, t.soa)
		}
		return
	}
	i, ok := t.byName[name]
	if !ok {
		m.Rcode = mdns.RcodeNameError
		m.Ns = append(m.Ns, t.soa)
		return
	}
	hdr := mdns.RR_Header{Name: q.Name, Class: mdns.ClassINET, Ttl: TTL}
	for _, a := range t.hosts[i].Addrs {
		switch {
		case a.Is4() && (q.Qtype == mdns.TypeA || q.Qtype == mdns.TypeANY):
			hdr.Rrtype = mdns.TypeA
			b := a.As4()
			m.Answer = append(m.Answer, &mdns.A{Hdr: hdr, A: b[:]})
		case a.Is6() && (q.Qtype == mdns.TypeAAAA || q.Qtype == mdns.TypeANY):
			hdr.Rrtype = mdns.TypeAAAA
			b := a.As16()
			m.Answer = append(m.Answer, &mdns.AAAA{Hdr: hdr, AAAA: b[:]})
		}
	}
	if len(m.Answer) == 0 {
		m.Ns = append(m.Ns, t.soa) // NODATA
	}
}

func (t *Table) answerReverse(m *mdns.Msg, q mdns.Question, name string) {
	a, _ := parseReverse(name)
	fqdn, ok := t.byAddr[a]
	if !ok {
		m.Rcode = mdns.RcodeNameError
		m.Ns = append(m.Ns, t.soa)
		return
	}
	if q.Qtype != mdns.TypePTR && q.Qtype != mdns.TypeANY {
		m.Ns = append(m.Ns, t.soa)
		return
	}
	m.Answer = append(m.Answer, &mdns.PTR{
		Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: TTL},
		Ptr: fqdn,
	})
}

// parseReverse parses a complete reverse name (canonical form): four
// labels under in-addr.arpa. or 32 nibbles under ip6.arpa.
func parseReverse(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		var b [4]byte
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		for i, l := range labels {
			if l == "" || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		if len(rest) != 63 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := 0; i < 32; i++ {
			c := rest[2*i]
			if i < 31 && rest[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			var v byte
			switch {
			case c >= '0' && c <= '9':
				v = c - '0'
			case c >= 'a' && c <= 'f':
				v = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			// Nibble i counts from the least significant end.
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= v << 4
			} else {
				b[pos/2] |= v
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
