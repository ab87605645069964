package dns

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/meshd/meshd/internal/testutil"
)

var (
	meshV4 = netip.MustParsePrefix("100.64.0.0/10")
	meshV6 = netip.MustParsePrefix("fd7a:6d65:7368::/48")
)

func testHosts() []Host {
	return []Host{
		{Name: "nas", Addrs: []netip.Addr{netip.MustParseAddr("fd7a:6d65:7368::7"), netip.MustParseAddr("100.64.0.7")}},
		{Name: "web.eu", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.9")}},
	}
}

// startServer serves table on a random loopback port, UDP and TCP.
func startServer(t *testing.T, opts Options, table *Table) (*Server, string) {
	t.Helper()
	opts.Listen = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}
	s, err := New(opts, table)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, s.Addrs()[0].String()
}

func query(t testing.TB, network, addr, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	c := &mdns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, mdns.TypeToString[qtype], err)
	}
	return r
}

// answers renders the answer section as "A 100.64.0.7" lines.
func answers(r *mdns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *mdns.A:
			out = append(out, "A "+v.A.String())
		case *mdns.AAAA:
			out = append(out, "AAAA "+v.AAAA.String())
		case *mdns.PTR:
			out = append(out, "PTR "+v.Ptr)
		case *mdns.SOA:
			out = append(out, "SOA "+v.Ns)
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

func TestResolve(t *testing.T) {
	testutil.LeakCheck(t)
	_, addr := startServer(t, Options{}, NewTable("mesh.internal", []netip.Prefix{meshV4, meshV6}, testHosts()))
	tests := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
		want  []string
		auth  bool // a SOA in the authority section (negative answer)
	}{
		{"A", "nas.mesh.internal.", mdns.TypeA, mdns.RcodeSuccess, []string{"A 100.64.0.7"}, false},
		{"AAAA", "nas.mesh.internal.", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"AAAA fd7a:6d65:7368::7"}, false},
		{"case does not matter", "NAS.Mesh.Internal.", mdns.TypeA, mdns.RcodeSuccess, []string{"A 100.64.0.7"}, false},
		{"dotted node name", "web.eu.mesh.internal.", mdns.TypeA, mdns.RcodeSuccess, []string{"A 100.64.0.9"}, false},
		{"no IPv6 address is NODATA", "web.eu.mesh.internal.", mdns.TypeAAAA, mdns.RcodeSuccess, nil, true},
		{"other type is NODATA", "nas.mesh.internal.", mdns.TypeMX, mdns.RcodeSuccess, nil, true},
		{"not a node", "printer.mesh.internal.", mdns.TypeA, mdns.RcodeNameError, nil, true},
		{"the domain's SOA", "mesh.internal.", mdns.TypeSOA, mdns.RcodeSuccess, []string{"SOA ns.mesh.internal."}, false},
		{"PTR IPv4", "7.0.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{"PTR nas.mesh.internal."}, false},
		{"PTR IPv6", mustReverse(t, "fd7a:6d65:7368::7"), mdns.TypePTR, mdns.RcodeSuccess, []string{"PTR nas.mesh.internal."}, false},
		{"PTR of an unused mesh address", "8.0.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeNameError, nil, true},
		{"other domain refused", "example.com.", mdns.TypeA, mdns.RcodeRefused, nil, false},
		{"a suffix that is not a label boundary", "xmesh.internal.", mdns.TypeA, mdns.RcodeRefused, nil, false},
		{"PTR outside the mesh refused", "1.2.0.192.in-addr.arpa.", mdns.TypePTR, mdns.RcodeRefused, nil, false},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				r := query(t, network, addr, tt.qname, tt.qtype)
				if r.Rcode != tt.rcode {
					t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tt.rcode])
				}
				got := answers(r)
				if len(got) != len(tt.want) {
					t.Fatalf("answers %q, want %q", got, tt.want)
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Fatalf("answers %q, want %q", got, tt.want)
					}
				}
				if gotAuth := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == mdns.TypeSOA; gotAuth != tt.auth {
					t.Errorf("authority %v, want a SOA: %v", r.Ns, tt.auth)
				}
				if tt.rcode != mdns.RcodeRefused && !r.Authoritative {
					t.Error("an answer for the mesh is not authoritative")
				}
				for _, rr := range r.Answer {
					if rr.Header().Ttl != TTL {
						t.Errorf("TTL %d, want %d", rr.Header().Ttl, TTL)
					}
				}
			})
		}
	}
}

func mustReverse(t *testing.T, a string) string {
	t.Helper()
	r, err := mdns.ReverseAddr(a)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestNamesFollowTheTable: a node that leaves the table (revoked, removed)
// stops resolving with the next query, and a new one resolves.
func TestNamesFollowTheTable(t *testing.T) {
	testutil.LeakCheck(t)
	s, addr := startServer(t, Options{}, NewTable("mesh.internal", []netip.Prefix{meshV4}, testHosts()))
	if r := query(t, "udp", addr, "nas.mesh.internal.", mdns.TypeA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("before: %v", r)
	}
	s.SetTable(NewTable("mesh.internal", []netip.Prefix{meshV4}, []Host{{Name: "new", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.7")}}}))
	if r := query(t, "udp", addr, "nas.mesh.internal.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Errorf("removed node: rcode %s, want NXDOMAIN", mdns.RcodeToString[r.Rcode])
	}
	if r := query(t, "udp", addr, "7.0.64.100.in-addr.arpa.", mdns.TypePTR); len(r.Answer) != 1 || r.Answer[0].(*mdns.PTR).Ptr != "new.mesh.internal." {
		t.Errorf("PTR after the change: %v", r.Answer)
	}
}

// TestForwarding: names outside the mesh go upstream only when forwarding
// is configured; a non-node name inside the mesh never does.
func TestForwarding(t *testing.T) {
	testutil.LeakCheck(t)
	var upstreamQueries atomic.Int64
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upSrv := &mdns.Server{PacketConn: up, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		upstreamQueries.Add(1)
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)})
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	upSrv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); _ = upSrv.ActivateAndServe() }()
	t.Cleanup(func() { _ = upSrv.Shutdown(); <-done })
	<-started
	upstream := netip.MustParseAddrPort(up.LocalAddr().String())
	table := NewTable("mesh.internal", []netip.Prefix{meshV4}, testHosts())

	_, off := startServer(t, Options{}, table)
	if r := query(t, "udp", off, "example.com.", mdns.TypeA); r.Rcode != mdns.RcodeRefused {
		t.Errorf("forwarding off: rcode %s, want REFUSED", mdns.RcodeToString[r.Rcode])
	}
	s, on := startServer(t, Options{Forward: []netip.AddrPort{upstream}}, table)
	if r := query(t, "udp", on, "example.com.", mdns.TypeA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("forwarding on: %v", r)
	}
	if r := query(t, "udp", on, "printer.mesh.internal.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Errorf("mesh name with forwarding on: rcode %s, want NXDOMAIN", mdns.RcodeToString[r.Rcode])
	}
	if n := upstreamQueries.Load(); n != 1 {
		t.Errorf("upstream saw %d queries, want 1 (example.com only)", n)
	}
	if st := s.Stats(); st.Forwarded != 1 || st.NXDomain != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestLookup(t *testing.T) {
	table := NewTable("mesh.internal.", []netip.Prefix{meshV4}, append(testHosts(),
		Host{Name: "Bad_Name", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}},
		Host{Name: "zdup", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.7")}}, // nas has it
	))
	for _, in := range []string{"nas", "nas.mesh.internal", "NAS.mesh.internal.", "100.64.0.7", "fd7a:6d65:7368::7"} {
		if h, ok := table.Lookup(in); !ok || h.Name != "nas" {
			t.Errorf("Lookup(%q) = %v, %v", in, h, ok)
		}
	}
	for _, in := range []string{"printer", "100.64.0.1", "bad_name", "zdup", "nas.other.internal"} {
		if h, ok := table.Lookup(in); ok {
			t.Errorf("Lookup(%q) = %v, want none", in, h)
		}
	}
	if got := len(table.Hosts()); got != 2 {
		t.Errorf("%d hosts, want 2 (invalid name and taken address skipped)", got)
	}
}
