package daemon

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// TestIPv6Overlay: three userspace daemons of a dual-stack CA, two with IPv6
// overlay addresses derived as meshctl cert sign derives them and one whose
// certificate has none (an IPv4-only node). The dual-stack pair pings and
// moves a TCP stream over IPv6 through its links, the firewall admits IPv6
// by CIDR, status/peers/ping show and accept the IPv6 addresses, and the
// IPv4-only node still talks IPv4 to everyone.
func TestIPv6Overlay(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	prefix6 := netip.MustParsePrefix("fd7a:115c:a1e0::/48")
	ca, err := pki.NewCAWithPrefix6("test-mesh", 48*time.Hour, pki.KeyECDSAP256, prefix6)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(filepath.Join(m.dir, "ca"), true); err != nil {
		t.Fatal(err)
	}
	m.ca = ca
	derive := func(n byte) netip.Prefix {
		p, err := pki.DeriveAddr6(prefix6, netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, n}), 10))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	na := m.node(t, "alpha", 1, nodeSpec{addr6: derive(1)})
	nb := m.node(t, "beta", 2, nodeSpec{addr6: derive(2)})
	nc := m.node(t, "gamma", 3, nodeSpec{}) // IPv4 only
	addrA6, addrB6 := derive(1).Addr(), derive(2).Addr()

	// beta admits ICMP from anyone, TCP 8000 only from the IPv6 mesh prefix,
	// UDP 7000 from anyone.
	fwB := `[[firewall.inbound]]
proto = "icmp"
peer = "any"
[[firewall.inbound]]
proto = "tcp"
port = "8000"
cidr = "fd7a:115c:a1e0::/48"
[[firewall.inbound]]
proto = "udp"
port = "7000"
peer = "any"
`
	fwA := "[[firewall.inbound]]\nproto = \"udp\"\nport = \"7000\"\npeer = \"any\"\n"
	a := startDaemon(t, na, m.config(t, na, confSpec{coordinator: true, extra: fwA}))
	b := startDaemon(t, nb, m.config(t, nb, confSpec{join: []string{a.sessionAddr()}, extra: fwB}))
	c := startDaemon(t, nc, m.config(t, nc, confSpec{join: []string{a.sessionAddr()}}))
	for _, d := range []*testDaemon{a, b, c} {
		waitReady(t, d)
	}
	testutil.WaitFor(t, 30*time.Second, "all three linked", func() bool {
		return online(a, "beta") && online(b, "alpha") && online(a, "gamma") && online(c, "alpha")
	})

	t.Run("status and peers", func(t *testing.T) {
		cl := control.NewClient(a.ctl.Socket())
		st, err := cl.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Address != netip.MustParseAddr("100.64.0.1") || st.Address6 != addrA6 {
			t.Errorf("status addresses %v, %v; want 100.64.0.1, %v", st.Address, st.Address6, addrA6)
		}
		if p := peerOf(t, a, "beta"); p.Address6 != addrB6 {
			t.Errorf("peer beta: address6 %v, want %v", p.Address6, addrB6)
		}
		if p := peerOf(t, a, "gamma"); p.Address6.IsValid() || p.Address != netip.MustParseAddr("100.64.0.3") {
			t.Errorf("peer gamma (IPv4 only): %v, %v", p.Address, p.Address6)
		}
	})

	t.Run("ICMPv6 echo", func(t *testing.T) {
		// Echo requests from alpha's netstack to beta's IPv6 address: beta's
		// firewall admits ICMP, its stack answers, and the replies come back
		// into alpha's overlay as return traffic of the tracked flow. The
		// replies are counted at the overlay, not read from the netstack's
		// ping socket: gVisor's ping socket wakes a reader only for packets
		// that arrive while it waits, so under load it misses replies that
		// did arrive (seen with -race -count=3 on a busy machine).
		pc, err := a.ov.Net().DialPingAddr(addrA6, addrB6)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		inA, outB := a.ov.Stats().PacketsIn, b.ov.Stats().PacketsOut
		dropsB := b.ov.Stats().Drops.Total()
		req := []byte{128, 0, 0, 0, 0, 1, 0, 1, 'm', 'e', 's', 'h'} // type 128; the stack sets the id
		testutil.WaitFor(t, 10*time.Second, "an ICMPv6 echo reply from beta back in alpha's overlay", func() bool {
			if _, err := pc.Write(req); err != nil {
				t.Errorf("echo request: %v", err)
			}
			return b.ov.Stats().PacketsOut > outB && a.ov.Stats().PacketsIn > inA
		})
		if d := b.ov.Stats().Drops.Total(); d != dropsB {
			t.Errorf("beta dropped %d packets of the echo exchange", d-dropsB)
		}
	})

	t.Run("TCP over IPv6", func(t *testing.T) {
		ln, err := b.ov.Net().ListenTCPAddrPort(netip.AddrPortFrom(addrB6, 8000))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		type result struct {
			n   int64
			sum [32]byte
			err error
		}
		res := make(chan result, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				res <- result{err: err}
				return
			}
			defer conn.Close()
			h := sha256.New()
			n, err := io.Copy(h, conn)
			var r result
			r.n, r.err = n, err
			copy(r.sum[:], h.Sum(nil))
			res <- r
		}()
		data := make([]byte, 1<<20)
		_, _ = rand.Read(data)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := a.ov.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(addrB6, 8000))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(data); err != nil {
			t.Fatal(err)
		}
		_ = conn.Close()
		select {
		case r := <-res:
			if r.err != nil || r.n != int64(len(data)) || r.sum != sha256.Sum256(data) {
				t.Fatalf("beta received %d bytes (%v), want %d with the sender's hash", r.n, r.err, len(data))
			}
		case <-ctx.Done():
			t.Fatal("the TCP transfer over IPv6 did not finish")
		}
	})

	t.Run("firewall CIDR", func(t *testing.T) {
		// TCP 8000 is admitted only from the IPv6 mesh prefix: over IPv4 the
		// SYN is dropped by beta's inbound firewall.
		before := b.ov.Stats().Drops.FirewallIn
		ln, err := b.ov.Net().ListenTCPAddrPort(netip.AddrPortFrom(netip.MustParseAddr("100.64.0.2"), 8000))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		if conn, err := a.ov.Net().DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("100.64.0.2:8000")); err == nil {
			conn.Close()
			t.Fatal("TCP to beta:8000 over IPv4 got through a rule for the IPv6 prefix only")
		}
		if b.ov.Stats().Drops.FirewallIn <= before {
			t.Error("beta counted no inbound firewall drop")
		}
	})

	t.Run("ping by address", func(t *testing.T) {
		for _, target := range []string{addrB6.String(), "100.64.0.2", "beta"} {
			// Up to five pings, stopping at the first direct reply: a link
			// may be moving from its relayed to its direct pair just now.
			var replies []control.PingReply
			err := a.Ping(context.Background(), target, 5, 20*time.Millisecond, true, func(r control.PingReply) { replies = append(replies, r) })
			want := addrB6
			if target != addrB6.String() {
				want = netip.MustParseAddr("100.64.0.2")
			}
			answered := slices.ContainsFunc(replies, func(r control.PingReply) bool { return r.Error == "" })
			if err != nil || !answered || slices.ContainsFunc(replies, func(r control.PingReply) bool { return r.Peer != "beta" || r.Address != want }) {
				t.Errorf("ping %s: %+v, %v", target, replies, err)
			}
		}
		for _, target := range []string{"fd7a:115c:a1e0::99", "100.64.0.99"} {
			if err := a.Ping(context.Background(), target, 1, time.Second, false, func(control.PingReply) {}); err == nil {
				t.Errorf("ping %s (nobody's address) succeeded", target)
			}
		}
	})

	t.Run("IPv4-only node", func(t *testing.T) {
		if !udpExchange(t, c, a, 7000) {
			t.Fatal("UDP gamma → alpha over IPv4 did not get through")
		}
		// alpha has no route to an IPv6 address gamma does not have.
		before := a.ov.Stats().Drops.NoRoute
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if conn, err := a.ov.Net().DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("[fd7a:115c:a1e0::3]:22")); err == nil {
			conn.Close()
			t.Fatal("TCP to gamma's would-be IPv6 address connected")
		}
		if a.ov.Stats().Drops.NoRoute <= before {
			t.Error("alpha counted no no-route drop for an IPv6 address nobody has")
		}
	})
}
