package overlay_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/overlay/overlaytest"
)

func TestMalformedDropped(t *testing.T) {
	testutil.LeakCheck(t)
	a, b, ab, _ := twoNodes(t, overlay.FirewallConfig{}, allowAll)
	good := udp(addrA, addrB, 1, 2, "good")
	trunc := good[:len(good)-1]                     // length field beyond the packet
	badVersion := append([]byte{0x75}, good[1:]...) // version 7
	badIHL := append([]byte{0x43}, good[1:]...)     // IHL 12 bytes
	tiny := good[:12]                               // truncated header
	shortLen := append([]byte(nil), good...)        // total length below the header
	binary.BigEndian.PutUint16(shortLen[2:], 8)
	v6trunc := udp(addrA6, addrB6, 1, 2, "x")[:30]
	bad := [][]byte{trunc, badVersion, badIHL, tiny, shortLen, v6trunc}

	// From the TUN: all in one batch with a good packet in the middle.
	batch := append(append(append([][]byte{}, bad[:3]...), good), bad[3:]...)
	inject(t, a.tun, batch...)
	if got := recvPacket(t, b.tun); !bytes.Equal(got, good) {
		t.Fatalf("B got % x", got)
	}
	waitStats(t, a.ifc, "malformed counted on send", func(s overlay.Stats) bool {
		return s.Drops.Malformed == uint64(len(bad)) && s.PacketsOut == 1
	})

	// From a peer.
	ab.Deliver(append(bad, udp(addrB, addrA, 2, 1, "reply"))...)
	if got := recvPacket(t, a.tun); !bytes.Equal(got[28:], []byte("reply")) {
		t.Fatalf("A got % x", got)
	}
	s := a.ifc.Stats()
	if s.Drops.Malformed != uint64(2*len(bad)) || s.PacketsIn != 1 {
		t.Fatalf("stats after malformed receive: %+v", s)
	}
	// A link that breaks the header-room contract: the whole batch is dropped.
	rx := ab.Receiver()
	raw := udp(addrB, addrA, 2, 1, "no room")
	rx([][]byte{raw}, 0)
	if s := a.ifc.Stats(); s.Drops.Malformed != uint64(2*len(bad))+1 || s.PacketsIn != 1 {
		t.Fatalf("stats after offset 0: %+v", s)
	}
	// Buffers shorter than the offset.
	rx([][]byte{make([]byte, 10), nil}, overlay.HeaderRoom)
	if s := a.ifc.Stats(); s.Drops.Malformed != uint64(2*len(bad))+3 {
		t.Fatalf("stats after short buffers: %+v", s)
	}
	noPacket(t, a.tun)
	noPacket(t, b.tun)
}

func TestLinkDownAndLazyLink(t *testing.T) {
	testutil.LeakCheck(t)
	var mu sync.Mutex
	var needed []string
	a := newTNode(t, overlaytest.TUNOptions{}, func(o *overlay.Options) {
		o.OnLinkNeeded = func(peer string) {
			mu.Lock()
			needed = append(needed, peer)
			mu.Unlock()
		}
	})
	ab, _ := pipe(t, false)
	cfg := overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrA)},
		Peers: []overlay.PeerConfig{
			{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB)}, Conn: ab},
			{Name: "c", AllowedPrefixes: []netip.Prefix{host(addrC)}}, // no link yet
		},
	}
	reconfig(t, a.ifc, cfg)

	ab.SetDown(true)
	inject(t, a.tun, udp(addrA, addrB, 1, 2, "1"), udp(addrA, addrB, 1, 2, "2"))
	waitStats(t, a.ifc, "link down counted", func(s overlay.Stats) bool { return s.Drops.LinkDown == 2 })
	ab.SetDown(false)
	inject(t, a.tun, udp(addrA, addrB, 1, 2, "3"))
	waitStats(t, a.ifc, "sent after link up", func(s overlay.Stats) bool { return s.PacketsOut == 1 })

	// Packets to c: dropped, and the daemon is told once.
	for range 3 {
		inject(t, a.tun, udp(addrA, addrC, 1, 2, "c"))
	}
	waitStats(t, a.ifc, "no-link drops counted", func(s overlay.Stats) bool { return s.Drops.LinkDown == 5 })
	testutil.WaitFor(t, waitTimeout, "OnLinkNeeded(c)", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(needed) == 1 && needed[0] == "c"
	})
	// Once c has a link, its packets flow and nobody is told again.
	ac, ca := pipe(t, false)
	var got atomic.Int64
	ca.SetReceiver(func(bufs [][]byte, offset int) { got.Add(int64(len(bufs))) })
	cfg.Peers[1].Conn = ac
	reconfig(t, a.ifc, cfg)
	inject(t, a.tun, udp(addrA, addrC, 1, 2, "c"))
	testutil.WaitFor(t, waitTimeout, "packet reached c", func() bool { return got.Load() == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(needed) != 1 {
		t.Fatalf("OnLinkNeeded calls: %v", needed)
	}
}

func TestTooBig(t *testing.T) {
	testutil.LeakCheck(t)
	a := newTNode(t, overlaytest.TUNOptions{MTU: 1300}, nil)
	ab, _ := pipe(t, false)
	reconfig(t, a.ifc, overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrA), meshAddr(addrA6)},
		Peers:     []overlay.PeerConfig{{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB), host(addrB6)}, Conn: ab}},
	})
	if a.ifc.MTU() != 1300 {
		t.Fatalf("MTU %d, want the device's 1300", a.ifc.MTU())
	}
	big := overlaytest.Packet{Src: addrA, Dst: addrB, Proto: overlaytest.ProtoUDP, DF: true, Payload: make([]byte, 1300)}.Marshal()
	inject(t, a.tun, big)
	icmp := recvPacket(t, a.tun)
	if icmp[9] != overlaytest.ProtoICMP || icmp[20] != 3 || icmp[21] != 4 || binary.BigEndian.Uint16(icmp[26:]) != 1300 {
		t.Fatalf("no fragmentation-needed with MTU 1300: % x", icmp[:28])
	}
	big6 := overlaytest.Packet{Src: addrA6, Dst: addrB6, Proto: overlaytest.ProtoUDP, Payload: make([]byte, 1300)}.Marshal()
	inject(t, a.tun, big6)
	icmp6 := recvPacket(t, a.tun)
	if icmp6[40] != 2 || binary.BigEndian.Uint32(icmp6[44:]) != 1300 {
		t.Fatalf("no packet-too-big with MTU 1300: % x", icmp6[:48])
	}
	// Without DF an IPv4 packet is dropped silently.
	inject(t, a.tun, overlaytest.Packet{Src: addrA, Dst: addrB, Proto: overlaytest.ProtoUDP, Payload: make([]byte, 1300)}.Marshal())
	s := waitStats(t, a.ifc, "too big counted", func(s overlay.Stats) bool { return s.Drops.TooBig == 3 })
	if s.ICMPSent != 2 || s.PacketsOut != 0 {
		t.Fatalf("stats %+v", s)
	}
	// Exactly the MTU passes.
	fits := overlaytest.Packet{Src: addrA, Dst: addrB, Proto: overlaytest.ProtoUDP, Payload: make([]byte, 1300-28)}.Marshal()
	inject(t, a.tun, fits)
	waitStats(t, a.ifc, "MTU-sized packet sent", func(s overlay.Stats) bool { return s.PacketsOut == 1 })
}

func TestReconfigSwapsRoutes(t *testing.T) {
	testutil.LeakCheck(t)
	a := newTNode(t, overlaytest.TUNOptions{}, nil)
	ab, ba := pipe(t, false)
	ac, ca := pipe(t, false)
	var toB, toC atomic.Int64
	ba.SetReceiver(func(bufs [][]byte, _ int) { toB.Add(int64(len(bufs))) })
	ca.SetReceiver(func(bufs [][]byte, _ int) { toC.Add(int64(len(bufs))) })
	subnet := pfx("10.5.0.0/24")
	cfg := overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrA)},
		Peers: []overlay.PeerConfig{
			{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB), subnet}, Conn: ab},
			{Name: "c", AllowedPrefixes: []netip.Prefix{host(addrC), subnet}, Routes: []netip.Prefix{host(addrC)}, Conn: ac},
		},
	}
	reconfig(t, a.ifc, cfg)
	if err := a.ifc.Reconfig(cfg); !errors.Is(err, overlay.ErrNoChanges) {
		t.Fatalf("same config: %v, want ErrNoChanges", err)
	}
	dst := netip.MustParseAddr("10.5.0.9")
	inject(t, a.tun, udp(addrA, dst, 1, 2, "x"))
	testutil.WaitFor(t, waitTimeout, "subnet packet at b", func() bool { return toB.Load() == 1 })

	// Move the subnet route from b to c (b keeps being allowed to send from
	// it, e.g. during a failover).
	cfg2 := a.ifc.Config()
	cfg2.Peers[0].Routes = []netip.Prefix{host(addrB)}
	cfg2.Peers[1].Routes = []netip.Prefix{host(addrC), subnet}
	reconfig(t, a.ifc, cfg2)
	inject(t, a.tun, udp(addrA, dst, 1, 2, "y"))
	testutil.WaitFor(t, waitTimeout, "subnet packet at c", func() bool { return toC.Load() == 1 })
	if toB.Load() != 1 {
		t.Fatalf("b got %d packets after the swap", toB.Load())
	}
	// Links were kept, not re-adopted: still attached.
	if !ab.HasReceiver() || !ac.HasReceiver() {
		t.Fatal("links lost their receivers across Reconfig")
	}

	// A rejected config changes nothing.
	bad := a.ifc.Config()
	bad.Peers[0].Routes = []netip.Prefix{subnet} // also c's route: conflict
	err := a.ifc.Reconfig(bad)
	var ce *overlay.ConfigError
	if !errors.As(err, &ce) || !errors.Is(err, overlay.ErrInvalidConfig) {
		t.Fatalf("conflicting routes: %v", err)
	}
	if p, _ := a.ifc.RouteTo(dst); p != "c" {
		t.Fatalf("route after rejected config goes to %q", p)
	}
	// Remove c: its link is released and its route gone.
	cfg3 := a.ifc.Config()
	cfg3.Peers = cfg3.Peers[:1]
	reconfig(t, a.ifc, cfg3)
	if ac.HasReceiver() {
		t.Fatal("c's link still has the overlay's receiver")
	}
	inject(t, a.tun, udp(addrA, dst, 1, 2, "z"))
	waitStats(t, a.ifc, "no route after removal", func(s overlay.Stats) bool { return s.Drops.NoRoute == 1 })
}

func TestFirewallThroughPipeline(t *testing.T) {
	testutil.LeakCheck(t)
	var clock atomic.Int64
	clock.Store(int64(time.Hour))
	now := func() int64 { return clock.Load() }
	a := newTNode(t, overlaytest.TUNOptions{}, nil)
	b := newTNode(t, overlaytest.TUNOptions{}, nil, func(i *overlay.Interface) { overlay.SetClock(i, now) })
	ab, ba := pipe(t, false)
	reconfig(t, a.ifc, overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrA)},
		Peers:     []overlay.PeerConfig{{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB)}, Conn: ab}},
		Firewall:  allowAll,
	})
	bcfg := overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrB)},
		Peers:     []overlay.PeerConfig{{Name: "a", Groups: []string{"ops", "dev"}, AllowedPrefixes: []netip.Prefix{host(addrA)}, Conn: ba}},
		Firewall: overlay.FirewallConfig{
			Inbound:    []overlay.Rule{{Groups: []string{"ops"}, Proto: overlay.ProtoTCP, Ports: []overlay.PortRange{{22, 22}}}},
			Outbound:   []overlay.Rule{{Proto: overlay.ProtoUDP, Ports: []overlay.PortRange{{53, 53}}}},
			UDPTimeout: time.Minute,
		},
	}
	reconfig(t, b.ifc, bcfg)

	// Allowed: SSH from a (group ops).
	inject(t, a.tun, tcp(addrA, addrB, 40000, 22, overlaytest.SYN))
	recvPacket(t, b.tun)
	// Denied: telnet.
	inject(t, a.tun, tcp(addrA, addrB, 40001, 23, overlaytest.SYN))
	waitStats(t, b.ifc, "telnet denied", func(s overlay.Stats) bool { return s.Drops.FirewallIn == 1 })
	noPacket(t, b.tun)
	// B's SSH reply passes its restrictive outbound rules (tracked flow)...
	inject(t, b.tun, tcp(addrB, addrA, 22, 40000, overlaytest.SYN|overlaytest.ACK))
	recvPacket(t, a.tun)
	// ...but a new outbound TCP flow does not.
	inject(t, b.tun, tcp(addrB, addrA, 5000, 80, overlaytest.SYN))
	waitStats(t, b.ifc, "outbound denied", func(s overlay.Stats) bool { return s.Drops.FirewallOut == 1 })
	// B asks a DNS question (allowed out); the answer is let in while the
	// flow is fresh and not after it expired.
	inject(t, b.tun, udp(addrB, addrA, 5353, 53, "q"))
	recvPacket(t, a.tun)
	inject(t, a.tun, udp(addrA, addrB, 53, 5353, "a1"))
	recvPacket(t, b.tun)
	clock.Add(int64(2 * time.Minute))
	inject(t, a.tun, udp(addrA, addrB, 53, 5353, "a2"))
	waitStats(t, b.ifc, "expired flow denied", func(s overlay.Stats) bool { return s.Drops.FirewallIn == 2 })
	noPacket(t, b.tun)

	// SetFirewall: drop a from ops-only SSH by requiring group admin. The
	// established SSH flow is cut.
	fw := bcfg.Firewall
	fw.Inbound = []overlay.Rule{{Groups: []string{"admin"}, Proto: overlay.ProtoTCP, Ports: []overlay.PortRange{{22, 22}}}}
	if err := b.ifc.SetFirewall(fw); err != nil {
		t.Fatal(err)
	}
	if err := b.ifc.SetFirewall(fw); !errors.Is(err, overlay.ErrNoChanges) {
		t.Fatalf("same firewall again: %v", err)
	}
	inject(t, a.tun, tcp(addrA, addrB, 40000, 22, overlaytest.ACK))
	waitStats(t, b.ifc, "cut flow denied", func(s overlay.Stats) bool { return s.Drops.FirewallIn == 3 })
	noPacket(t, b.tun)
}

func TestReconfigValidation(t *testing.T) {
	testutil.LeakCheck(t)
	a := newTNode(t, overlaytest.TUNOptions{}, nil)
	c1, _ := pipe(t, false)
	good := func() overlay.Config {
		return overlay.Config{
			Addresses: []netip.Prefix{meshAddr(addrA)},
			Peers:     []overlay.PeerConfig{{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB), pfx("10.1.0.0/24")}, Conn: c1}},
		}
	}
	reconfig(t, a.ifc, good())
	tests := []struct {
		name  string
		mod   func(*overlay.Config)
		field string
	}{
		{"invalid address", func(c *overlay.Config) { c.Addresses = append(c.Addresses, netip.Prefix{}) }, "Addresses[1]"},
		{"duplicate address", func(c *overlay.Config) { c.Addresses = append(c.Addresses, pfx("100.64.0.1/32")) }, "Addresses[1]"},
		{"multicast address", func(c *overlay.Config) { c.Addresses = []netip.Prefix{pfx("224.0.0.1/32")} }, "Addresses[0]"},
		{"empty peer name", func(c *overlay.Config) { c.Peers[0].Name = "" }, "Peers[0].Name"},
		{"duplicate peer", func(c *overlay.Config) {
			c.Peers = append(c.Peers, overlay.PeerConfig{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrC)}})
		}, "Peers[1].Name"},
		{"no allowed prefixes", func(c *overlay.Config) { c.Peers[0].AllowedPrefixes = nil }, "Peers[0].AllowedPrefixes"},
		{"host bits in allowed prefix", func(c *overlay.Config) { c.Peers[0].AllowedPrefixes = []netip.Prefix{pfx("100.64.0.2/10")} }, "Peers[0].AllowedPrefixes[0]"},
		{"route outside allowed", func(c *overlay.Config) { c.Peers[0].Routes = []netip.Prefix{pfx("10.2.0.0/24")} }, "Peers[0].Routes[0]"},
		{"route wider than allowed", func(c *overlay.Config) { c.Peers[0].Routes = []netip.Prefix{pfx("10.0.0.0/8")} }, "Peers[0].Routes[0]"},
		{"default route", func(c *overlay.Config) {
			c.Peers[0].AllowedPrefixes = []netip.Prefix{pfx("0.0.0.0/0")}
		}, "Peers[0].Routes[0]"},
		{"route conflict", func(c *overlay.Config) {
			c.Peers = append(c.Peers, overlay.PeerConfig{Name: "c", AllowedPrefixes: []netip.Prefix{host(addrC), pfx("10.1.0.0/24")}})
		}, "Peers[1].Routes[1]"},
		{"non-comparable conn", func(c *overlay.Config) { c.Peers[0].Conn = funcConn{} }, "Peers[0].Conn"},
		{"local subnet host bits", func(c *overlay.Config) { c.LocalSubnets = []netip.Prefix{pfx("192.168.1.1/24")} }, "LocalSubnets[0]"},
		{"bad port range", func(c *overlay.Config) {
			c.Firewall.Inbound = []overlay.Rule{{Ports: []overlay.PortRange{{2, 1}}}}
		}, "Firewall.Inbound[0].Ports[0]"},
		{"ports with icmp", func(c *overlay.Config) {
			c.Firewall.Outbound = []overlay.Rule{{Proto: overlay.ProtoICMP, Ports: []overlay.PortRange{{1, 1}}}}
		}, "Firewall.Outbound[0].Ports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.mod(&cfg)
			err := a.ifc.Reconfig(cfg)
			var ce *overlay.ConfigError
			if !errors.As(err, &ce) || !errors.Is(err, overlay.ErrInvalidConfig) {
				t.Fatalf("Reconfig: %v, want a ConfigError", err)
			}
			if ce.Field != tt.field {
				t.Fatalf("field %q, want %q (%v)", ce.Field, tt.field, err)
			}
			// Nothing changed.
			if err := a.ifc.Reconfig(good()); !errors.Is(err, overlay.ErrNoChanges) {
				t.Fatalf("config changed by a rejected Reconfig: %v", err)
			}
		})
	}
}

// funcConn is a PeerConn that is not comparable.
type funcConn struct{ fn func() }

func (funcConn) WriteBatch([][]byte, int) (int, error) { return 0, nil }
func (funcConn) SetReceiver(overlay.ReceiveFunc)       {}

func TestLifecycle(t *testing.T) {
	testutil.LeakCheck(t)
	t.Run("close without start", func(t *testing.T) {
		ifc, err := overlay.New(overlay.Options{Device: overlaytest.NewTUN(overlaytest.TUNOptions{})})
		if err != nil {
			t.Fatal(err)
		}
		if err := ifc.Close(); err != nil {
			t.Fatal(err)
		}
		if err := ifc.Start(context.Background()); !errors.Is(err, overlay.ErrClosed) {
			t.Fatalf("Start after Close: %v", err)
		}
		if err := ifc.Reconfig(overlay.Config{}); !errors.Is(err, overlay.ErrClosed) {
			t.Fatalf("Reconfig after Close: %v", err)
		}
		if err := ifc.Wait(); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	})
	t.Run("start twice, close twice, concurrently", func(t *testing.T) {
		ifc, err := overlay.New(overlay.Options{Device: overlaytest.NewTUN(overlaytest.TUNOptions{})})
		if err != nil {
			t.Fatal(err)
		}
		if err := ifc.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := ifc.Start(context.Background()); !errors.Is(err, overlay.ErrAlreadyStarted) {
			t.Fatalf("second Start: %v", err)
		}
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() { defer wg.Done(); ifc.Close() }()
		}
		wg.Wait()
		select {
		case <-ifc.Done():
		default:
			t.Fatal("Done not closed after Close")
		}
	})
	t.Run("context cancel closes", func(t *testing.T) {
		ab, _ := pipe(t, false)
		tn := overlaytest.NewTUN(overlaytest.TUNOptions{})
		ifc, err := overlay.New(overlay.Options{Device: tn})
		if err != nil {
			t.Fatal(err)
		}
		reconfig(t, ifc, overlay.Config{Peers: []overlay.PeerConfig{{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB)}, Conn: ab}}})
		ctx, cancel := context.WithCancel(context.Background())
		if err := ifc.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := ifc.Wait(); err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if ab.HasReceiver() {
			t.Fatal("link still attached after close")
		}
		if err := tn.Inject(udp(addrA, addrB, 1, 2, "x")); err == nil {
			t.Fatal("device not closed")
		}
	})
	t.Run("bad options", func(t *testing.T) {
		for _, o := range []overlay.Options{
			{Device: overlaytest.NewTUN(overlaytest.TUNOptions{}), MTU: 100},
			{Mode: overlay.ModeUserspace},
			{Mode: overlay.Mode(9)},
			{Device: overlaytest.NewTUN(overlaytest.TUNOptions{}), MaxFlows: -1},
		} {
			if _, err := overlay.New(o); !errors.Is(err, overlay.ErrInvalidConfig) {
				t.Errorf("New(%+v): %v, want ErrInvalidConfig", o, err)
			}
		}
	})
}

// TestConcurrentLinksAndReconfig runs traffic in both directions on several
// links while the configuration keeps changing; -race checks the data path's
// sharing (snapshot swap, per-link scratch, TUN write lock, conntrack shards).
func TestConcurrentLinksAndReconfig(t *testing.T) {
	testutil.LeakCheck(t)
	a := newTNode(t, overlaytest.TUNOptions{WriteQueue: 1 << 16}, nil)
	const n = 4
	var peers []overlay.PeerConfig
	var far []*overlaytest.Conn
	var got atomic.Int64
	for k := range n {
		near, other := pipe(t, false)
		other.SetReceiver(func(bufs [][]byte, _ int) { got.Add(int64(len(bufs))) })
		far = append(far, other)
		peers = append(peers, overlay.PeerConfig{
			Name:            string(rune('b' + k)),
			AllowedPrefixes: []netip.Prefix{host(netip.AddrFrom4([4]byte{100, 64, 1, byte(k)}))},
			Conn:            near,
		})
	}
	cfg := overlay.Config{Addresses: []netip.Prefix{meshAddr(addrA)}, Peers: peers, Firewall: allowAll}
	reconfig(t, a.ifc, cfg)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	const rounds = 200
	for k, c := range far {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := netip.AddrFrom4([4]byte{100, 64, 1, byte(k)})
			for i := range rounds {
				pkt := udp(src, addrA, uint16(1000+i), 53, "in")
				if _, err := c.WriteBatch([][]byte{append(make([]byte, overlay.HeaderRoom), pkt...)}, overlay.HeaderRoom); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range rounds {
			k := i % n
			dst := netip.AddrFrom4([4]byte{100, 64, 1, byte(k)})
			if err := a.tun.Inject(udp(addrA, dst, 53, uint16(1000+i), "out")); err != nil {
				t.Errorf("inject: %v", err)
				return
			}
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			c := cfg
			c.Firewall.UDPTimeout = time.Duration(i%5+1) * time.Minute
			if err := a.ifc.Reconfig(c); err != nil && !errors.Is(err, overlay.ErrNoChanges) {
				t.Errorf("Reconfig: %v", err)
				return
			}
		}
	}()
	testutil.WaitFor(t, waitTimeout, "all packets through", func() bool {
		s := a.ifc.Stats()
		return s.PacketsIn == n*rounds && got.Load() == rounds
	})
	cancel()
	wg.Wait()
	if s := a.ifc.Stats(); s.Drops.Total() != 0 {
		t.Fatalf("drops under concurrent reconfig: %+v", s.Drops)
	}
}

// failingTUN is a device whose reads always fail.
type failingTUN struct {
	*overlaytest.TUN
	reads atomic.Int64
}

var errDevice = errors.New("device on fire")

func (f *failingTUN) Read([][]byte, []int, int) (int, error) {
	f.reads.Add(1)
	return 0, errDevice
}

func TestFatalReadErrorStops(t *testing.T) {
	testutil.LeakCheck(t)
	dev := &failingTUN{TUN: overlaytest.NewTUN(overlaytest.TUNOptions{})}
	ifc, err := overlay.New(overlay.Options{Device: dev, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ifc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ifc.Done():
	case <-time.After(waitTimeout):
		t.Fatal("Interface did not stop after persistent read errors")
	}
	if err := ifc.Wait(); !errors.Is(err, errDevice) {
		t.Fatalf("Wait: %v, want the device error", err)
	}
	if s := ifc.Stats(); s.TUNReadErrors == 0 {
		t.Fatalf("read errors not counted: %+v", s)
	}
	if err := ifc.Close(); err != nil {
		t.Fatalf("Close after fatal: %v", err)
	}
	if err := ifc.Reconfig(overlay.Config{}); !errors.Is(err, overlay.ErrClosed) {
		t.Fatalf("Reconfig after fatal: %v", err)
	}
}
