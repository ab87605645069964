package peerpolicy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

var (
	ownAddrs = []netip.Addr{
		netip.MustParseAddr("203.0.113.10"),
		netip.MustParseAddr("192.168.1.10"),
		netip.MustParseAddr("2001:db8:10::10"),
	}
	isOwn    = func(a netip.Addr) bool { return slices.Contains(ownAddrs, a) }
	openPort = func(p uint16) bool { return p >= 49152 || p == 51830 }
)

func pfx(s ...string) []netip.Prefix {
	var l []netip.Prefix
	for _, p := range s {
		l = append(l, netip.MustParsePrefix(p))
	}
	return l
}

// TestCheckSend is the decision table of the default policy: every reason,
// Allowed over Denied over the defaults, a relay on a private address, and
// translated addresses judged by the IPv4 address they reach.
func TestCheckSend(t *testing.T) {
	public := Policy{IsOwn: isOwn, OpenPort: openPort}
	private := public
	private.AllowPrivate = true
	lists := public
	lists.Allowed = pfx("10.20.0.0/16", "64:ff9b::a00:1/128")
	lists.Denied = pfx("198.51.100.0/24", "10.0.0.0/8")
	bare := Policy{IsOwn: isOwn} // no open ports
	for _, tc := range []struct {
		name string
		p    Policy
		peer string
		want Reason
	}{
		{"public", public, "198.51.100.7:3478", Allowed},
		{"test ranges are public", public, "198.18.0.1:9", Allowed},
		{"rfc1918", public, "192.168.1.20:22", Private},
		{"cgnat", public, "100.64.0.1:9", Private},
		{"ula", public, "[fd7a:115c:a1e0::1]:9", Private},
		{"loopback", public, "127.0.0.1:51830", Special},
		{"v4-mapped loopback", public, "[::ffff:127.0.0.1]:9", Special},
		{"reserved", public, "240.0.0.1:9", Special},
		{"discard prefix", public, "[100::1]:9", Special},
		{"v4-compatible", public, "[::a00:1]:9", Special},
		{"invalid", public, "", Special},
		{"nat64 private", public, "[64:ff9b::10.0.0.1]:9", Private},
		{"nat64 loopback", public, "[64:ff9b::127.0.0.1]:9", Special},
		{"6to4 private", public, "[2002:a00:1::1]:9", Private},
		{"6to4 public", public, "[2002:c633:6407::1]:9", Allowed},
		{"own service", public, "203.0.113.10:22", OwnService},
		{"own relay port", public, "203.0.113.10:50000", Allowed},
		{"own mesh port", public, "203.0.113.10:51830", Allowed},
		{"own private address, mesh port", public, "192.168.1.10:51830", Allowed},
		{"own private address, service", public, "192.168.1.10:53", OwnService},
		{"nat64 own service", public, "[64:ff9b::203.0.113.10]:22", OwnService},
		{"own v6 service", public, "[2001:db8:10::10]:22", OwnService},
		{"no open ports: own address refused", bare, "203.0.113.10:50000", OwnService},
		{"private relay: private peer", private, "10.1.1.1:9", Allowed},
		{"private relay: nat64 private", private, "[64:ff9b::10.0.0.1]:9", Allowed},
		{"private relay: loopback still", private, "127.0.0.1:9", Special},
		{"private relay: own service still", private, "192.168.1.10:53", OwnService},
		{"denied", lists, "198.51.100.7:3478", Configured},
		{"allowed over denied", lists, "10.20.0.1:9", Allowed},
		{"denied private", lists, "10.1.0.1:9", Configured},
		{"allowed nat64 address itself", lists, "[64:ff9b::10.0.0.1]:9", Allowed},
		{"nat64 to denied", lists, "[64:ff9b::198.51.100.7]:9", Configured},
		{"allowed keeps own services", lists, "203.0.113.10:22", OwnService},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ap netip.AddrPort
			if tc.peer != "" {
				ap = netip.MustParseAddrPort(tc.peer)
			}
			if got := tc.p.CheckSend(ap); got != tc.want {
				t.Fatalf("CheckSend(%s) = %v, want %v", tc.peer, got, tc.want)
			}
			if got := tc.p.Check(ap.Addr()); (got == Allowed) != (tc.want == Allowed || tc.want == OwnService) {
				t.Fatalf("Check(%s) = %v, inconsistent with %v", tc.peer, got, tc.want)
			}
		})
	}
}

func TestAllowPrivateFor(t *testing.T) {
	for _, tc := range []struct {
		addrs []string
		want  bool
	}{
		{[]string{"203.0.113.7"}, false},
		{[]string{"192.168.1.10"}, true},
		{[]string{"::ffff:10.0.0.1"}, true},
		{[]string{"203.0.113.7", "fd00::1"}, true},
		{[]string{"2001:db8::1"}, false},
		{nil, false},
	} {
		var as []netip.Addr
		for _, s := range tc.addrs {
			as = append(as, netip.MustParseAddr(s))
		}
		if got := AllowPrivateFor(append(as, netip.Addr{})...); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.addrs, got, tc.want)
		}
	}
	// The first three are RFC 1918, which discovery relies on.
	if got := PrivatePrefixes()[:3]; !slices.Equal(got, pfx("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")) {
		t.Fatalf("PrivatePrefixes()[:3] = %v", got)
	}
}

// model is the default policy written from the documentation, byte by
// byte, independently of netip's classifiers and the prefix lists.
func model(ap netip.AddrPort, allowPrivate bool) Reason {
	b := ap.Addr().As16()
	if !ap.Addr().IsValid() {
		return Special
	}
	v4 := func(b0, b1 byte) Reason {
		switch {
		case b0 == 0, b0 == 127, b0 == 169 && b1 == 254, b0 >= 224:
			return Special
		case !allowPrivate && (b0 == 10 || b0 == 172 && b1&0xf0 == 16 || b0 == 192 && b1 == 168 || b0 == 100 && b1&0xc0 == 64):
			return Private
		}
		return Allowed
	}
	zero := func(s []byte) bool { return !slices.ContainsFunc(s, func(c byte) bool { return c != 0 }) }
	var r Reason
	var embedded []byte
	switch {
	case ap.Addr().Is4():
		r = v4(b[12], b[13])
		embedded = b[12:16]
	case zero(b[:10]) && b[10] == 0xff && b[11] == 0xff: // v4-mapped
		r = v4(b[12], b[13])
		embedded = b[12:16]
	case zero(b[:12]), b[0] == 0xff, b[0] == 0xfe && b[1]&0xc0 == 0x80, b[0] == 1 && zero(b[1:8]):
		r = Special
	case b[0]&0xfe == 0xfc, b[0] == 0xfe && b[1]&0xc0 == 0xc0, b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1:
		if !allowPrivate {
			r = Private
		}
	case b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && zero(b[4:12]):
		r = v4(b[12], b[13])
		embedded = b[12:16]
	case b[0] == 0x20 && b[1] == 0x02:
		r = v4(b[2], b[3])
		embedded = b[2:6]
	}
	if r != Allowed {
		return r
	}
	hosts := []netip.Addr{ap.Addr().Unmap()}
	if len(embedded) == 4 {
		hosts = append(hosts, netip.AddrFrom4([4]byte(embedded)))
	}
	for _, a := range hosts {
		if ownAddrModel(a) && !openPort(ap.Port()) {
			return OwnService
		}
	}
	return Allowed
}

// ownAddrModel: the model's own addresses are public ones only (a private
// own address is exempt from Private in Check; the model does not cover it).
func ownAddrModel(a netip.Addr) bool {
	return a == netip.MustParseAddr("203.0.113.10") || a == netip.MustParseAddr("2001:db8:10::10")
}

func randomAddr(rng *rand.Rand) netip.Addr {
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	lead := [][]byte{{}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0},
		{0, 0x64, 0xff, 0x9b, 0, 1}, {0x20, 0x02}, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {1, 0, 0, 0, 0, 0, 0, 0},
		{0xfe}, {0xfc}, {0xff}, {0x20, 0x01, 0x0d, 0xb8, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}}
	l := lead[rng.IntN(len(lead))]
	copy(b[:], l)
	// IPv4 first octets the policy names, wherever an IPv4 address sits.
	firsts := []byte{0, 10, 100, 127, 169, 172, 192, 198, 203, 224, 240, 255}
	if rng.IntN(2) == 0 {
		b[12] = firsts[rng.IntN(len(firsts))]
		b[2] = firsts[rng.IntN(len(firsts))]
	}
	if rng.IntN(8) == 0 {
		b[12], b[13], b[14], b[15] = 203, 0, 113, 10
	}
	a := netip.AddrFrom16(b)
	if rng.IntN(3) == 0 {
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	return a
}

// TestCheckMatchesModel compares the policy with the byte-level model for
// random addresses, public and private relay.
func TestCheckMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	ports := []uint16{22, 53, 51830, 49151, 49152, 65535}
	for _, allowPrivate := range []bool{false, true} {
		p := Policy{AllowPrivate: allowPrivate, IsOwn: ownAddrModel, OpenPort: openPort}
		for range 50000 {
			ap := netip.AddrPortFrom(randomAddr(rng), ports[rng.IntN(len(ports))])
			if got, want := p.CheckSend(ap), model(ap, allowPrivate); got != want {
				t.Fatalf("allowPrivate=%v: CheckSend(%s) = %v, model %v", allowPrivate, ap, got, want)
			}
		}
	}
}

// FuzzCheck checks the policy's invariants on any address: it matches the
// model; an IPv4-mapped address is judged as its IPv4 address; a relay on
// a private address is never stricter; and a refused permission is a
// refused datagram on every port.
func FuzzCheck(f *testing.F) {
	f.Add([]byte{192, 168, 1, 20}, uint16(22))
	f.Add(netip.MustParseAddr("64:ff9b::7f00:1").AsSlice(), uint16(9))
	f.Add(netip.MustParseAddr("2002:c0a8:114::1").AsSlice(), uint16(9))
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		ap := netip.AddrPortFrom(a, port)
		pub := Policy{IsOwn: ownAddrModel, OpenPort: openPort}
		priv := pub
		priv.AllowPrivate = true
		got := pub.CheckSend(ap)
		if want := model(ap, false); got != want {
			t.Fatalf("CheckSend(%s) = %v, model %v", ap, got, want)
		}
		if a.Is4() {
			if m := pub.CheckSend(netip.AddrPortFrom(netip.AddrFrom16(a.As16()), port)); m != got {
				t.Fatalf("%s: %v, mapped %v", a, got, m)
			}
		}
		if got == Allowed && priv.CheckSend(ap) != Allowed {
			t.Fatalf("%s: private relay stricter", ap)
		}
		if pub.Check(a) != Allowed && got == Allowed {
			t.Fatalf("%s: permission refused but datagram relayed", ap)
		}
	})
}
