package dns

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// BenchmarkAnswer is the query handler alone: parse-free, one A query.
func BenchmarkAnswer(b *testing.B) {
	table := NewTable("mesh.internal", []netip.Prefix{meshV4}, testHosts())
	req := new(mdns.Msg)
	req.SetQuestion("nas.mesh.internal.", mdns.TypeA)
	b.ReportAllocs()
	for b.Loop() {
		if m, _ := answer(table, req); len(m.Answer) != 1 {
			b.Fatal("no answer")
		}
	}
}

// BenchmarkUDP is the resolver end to end over loopback UDP: clients send
// A queries from parallel sockets and wait for each answer, as stub
// resolvers do. docs/performance.md records the figure (queries/s).
func BenchmarkUDP(b *testing.B) {
	table := NewTable("mesh.internal", []netip.Prefix{meshV4}, testHosts())
	s, err := New(Options{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}}, table)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	addr := s.Addrs()[0].(*net.UDPAddr)
	req := new(mdns.Msg)
	req.SetQuestion("nas.mesh.internal.", mdns.TypeA)
	wire, err := req.Pack()
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.DialUDP("udp", nil, addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		buf := make([]byte, 512)
		for pb.Next() {
			if _, err := c.Write(wire); err != nil {
				b.Error(err)
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := c.Read(buf)
			if err != nil || n < 12 {
				b.Errorf("read: %v", err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "queries/s")
}
