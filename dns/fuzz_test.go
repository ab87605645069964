package dns

import (
	"net/netip"
	"testing"

	mdns "github.com/miekg/dns"
)

// FuzzAnswer feeds arbitrary wire messages to the query handler: it must
// never panic, and every reply must pack.
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{
		{"nas.mesh.internal.", mdns.TypeA}, {"7.0.64.100.in-addr.arpa.", mdns.TypePTR},
		{"example.com.", mdns.TypeAAAA}, {"mesh.internal.", mdns.TypeANY},
		{"7.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.6.3.7.5.6.d.6.a.7.d.f.ip6.arpa.", mdns.TypePTR},
	} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(4096, true)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	table := NewTable("mesh.internal", []netip.Prefix{meshV4, meshV6}, testHosts())
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(mdns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		m, _ := answer(table, req)
		if m.Id != req.Id {
			t.Fatalf("reply id %d, request %d", m.Id, req.Id)
		}
		if _, err := m.Pack(); err != nil {
			t.Fatalf("reply does not pack: %v\n%v", err, m)
		}
		if len(req.Question) == 1 {
			if a, ok := parseReverse(mdns.CanonicalName(req.Question[0].Name)); ok {
				// A parsed reverse name round-trips.
				if r, err := mdns.ReverseAddr(a.String()); err != nil || r != mdns.CanonicalName(req.Question[0].Name) {
					t.Fatalf("parseReverse(%q) = %v, which reverses to %q", req.Question[0].Name, a, r)
				}
			}
		}
	})
}
