package overlay_test

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/overlay/overlaytest"
)

// BenchmarkPath measures the whole overlay path in one process: TUN double
// (A) → parse, route, outbound firewall → PeerConn double (direct call, one
// copy as a link's decrypt would make) → B: parse, anti-spoofing, inbound
// firewall with conntrack → TUN double (B), which counts. One op is one
// packet; allocs/op is allocations per packet in steady state (flows are
// established during warm-up). No crypto and no syscalls: this is the
// overlay's own cost per packet on top of what the TUN and the link spend.
func BenchmarkPath(b *testing.B) {
	for _, bc := range []struct {
		name  string
		proto uint8
		size  int // IP packet size
		flows int
		batch int
	}{
		{"udp-1400B-1flow-batch128", overlaytest.ProtoUDP, 1400, 1, 128},
		{"udp-1400B-64flows-batch128", overlaytest.ProtoUDP, 1400, 64, 128},
		{"tcp-1400B-1flow-batch128", overlaytest.ProtoTCP, 1400, 1, 128},
		{"tcp-1400B-1flow-batch1", overlaytest.ProtoTCP, 1400, 1, 1},
		{"udp-64B-1flow-batch128", overlaytest.ProtoUDP, 64, 1, 128},
	} {
		b.Run(bc.name, func(b *testing.B) { benchPath(b, bc.proto, bc.size, bc.flows, bc.batch) })
	}
}

func benchPath(b *testing.B, proto uint8, size, flows, batch int) {
	var received atomic.Int64
	var target atomic.Int64
	done := make(chan struct{}, 1)
	ta := overlaytest.NewTUN(overlaytest.TUNOptions{BatchSize: batch})
	tb := overlaytest.NewTUN(overlaytest.TUNOptions{BatchSize: batch, OnWrite: func(bufs [][]byte, _ int) {
		if n := received.Add(int64(len(bufs))); n == target.Load() {
			done <- struct{}{}
		}
	}})
	a, err := overlay.New(overlay.Options{Device: ta})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	bn, err := overlay.New(overlay.Options{Device: tb})
	if err != nil {
		b.Fatal(err)
	}
	defer bn.Close()
	ab, ba := overlaytest.Pipe(overlaytest.PipeOptions{MaxBatch: batch, BufSize: overlay.HeaderRoom + 2048})
	defer ab.Close()
	defer ba.Close()
	if err := a.Reconfig(overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrA)},
		Peers:     []overlay.PeerConfig{{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB)}, Conn: ab}},
	}); err != nil {
		b.Fatal(err)
	}
	if err := bn.Reconfig(overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrB)},
		Peers:     []overlay.PeerConfig{{Name: "a", Groups: []string{"bench"}, AllowedPrefixes: []netip.Prefix{host(addrA)}, Conn: ba}},
		Firewall: overlay.FirewallConfig{Inbound: []overlay.Rule{
			{Groups: []string{"admin"}, Proto: overlay.ProtoTCP, Ports: []overlay.PortRange{{22, 22}}},
			{Groups: []string{"bench"}, Proto: overlay.Proto(proto), Ports: []overlay.PortRange{{5201, 5201}}},
		}},
	}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if err := bn.Start(ctx); err != nil {
		b.Fatal(err)
	}

	hdr := 28
	if proto == overlaytest.ProtoTCP {
		hdr = 40
	}
	pkts := make([][]byte, batch)
	for i := range pkts {
		pkts[i] = overlaytest.Packet{Src: addrA, Dst: addrB, Proto: proto, SrcPort: uint16(40000 + i%flows), DstPort: 5201,
			TCPFlags: overlaytest.ACK, Payload: make([]byte, size-hdr)}.Marshal()
	}
	run := func(n int) {
		received.Store(0)
		target.Store(int64(n))
		for sent := 0; sent < n; {
			k := min(batch, n-sent)
			if err := ta.Inject(pkts[:k]...); err != nil {
				b.Fatal(err)
			}
			sent += k
		}
		<-done
	}
	// B counts a batch after its TUN write returns, so wait for its
	// counters to catch up before reading them.
	settled := func(want uint64) overlay.Stats {
		var s overlay.Stats
		testutil.WaitFor(b, waitTimeout, "B's counters", func() bool { s = bn.Stats(); return s.PacketsIn >= want })
		return s
	}
	warm := max(batch, flows) * 4
	run(warm) // establish flows, grow maps
	before := settled(uint64(warm))

	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	run(b.N)
	b.StopTimer()

	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/secs, "packets/s")
	b.ReportMetric(float64(b.N)*float64(size)*8/secs/1e6, "Mbit/s")
	if after := settled(before.PacketsIn + uint64(b.N)); after.Drops != before.Drops || after.PacketsIn-before.PacketsIn != uint64(b.N) {
		b.Fatalf("packets lost: before %+v after %+v", before, after)
	}
}
