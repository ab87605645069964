package stunwire

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// message builds a STUN message of type typ with transaction ID 1…12 and
// attrs, each a type and a value, padded to 4 bytes.
func message(typ uint16, attrs ...attr) []byte {
	p := binary.BigEndian.AppendUint16(nil, typ)
	p = append(p, 0, 0)
	p = binary.BigEndian.AppendUint32(p, MagicCookie)
	p = append(p, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
	for _, a := range attrs {
		p = binary.BigEndian.AppendUint16(p, a.typ)
		p = binary.BigEndian.AppendUint16(p, uint16(len(a.v)))
		p = append(p, a.v...)
		for len(p)%4 != 0 {
			p = append(p, 0)
		}
	}
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)-HeaderLen))
	return p
}

type attr struct {
	typ uint16
	v   []byte
}

// pionXORAddr encodes ap as attribute typ of a message with pion/stun, an
// implementation independent of this package, and returns the message
// and the attribute's value.
func pionXORAddr(t testing.TB, txid [12]byte, ap netip.AddrPort, typ uint16) (p, v []byte) {
	m := stun.New()
	m.TransactionID = txid
	m.SetType(stun.MessageType{Method: stun.MethodChannelBind, Class: stun.ClassRequest})
	m.WriteHeader()
	ip := net.IP(ap.Addr().AsSlice())
	if err := (stun.XORMappedAddress{IP: ip, Port: int(ap.Port())}).AddToAs(m, stun.AttrType(typ)); err != nil {
		t.Fatal(err)
	}
	m.Encode()
	return m.Raw, m.Raw[HeaderLen+4:]
}

func TestType(t *testing.T) {
	ok := message(TypeChannelBindRequest, attr{AttrChannelNumber, []byte{0x40, 0, 0, 0}})
	for _, tc := range []struct {
		name string
		p    []byte
		typ  uint16
		ok   bool
	}{
		{"message", ok, TypeChannelBindRequest, true},
		{"trailing bytes", append(bytes.Clone(ok), 9, 9, 9), TypeChannelBindRequest, true},
		{"header only", message(TypeAllocateSuccess), TypeAllocateSuccess, true},
		{"short header", ok[:HeaderLen-1], 0, false},
		{"empty", nil, 0, false},
		{"wrong cookie", func() []byte { p := bytes.Clone(ok); p[4] ^= 1; return p }(), 0, false},
		{"length past the end", ok[:len(ok)-4], 0, false},
		{"length not a multiple of 4", func() []byte { p := bytes.Clone(ok); p[3]--; return p }(), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			typ, ok := Type(tc.p)
			if typ != tc.typ || ok != tc.ok {
				t.Errorf("Type = %#04x, %v; want %#04x, %v", typ, ok, tc.typ, tc.ok)
			}
		})
	}
}

func TestWalkAttrs(t *testing.T) {
	many := make([]attr, MaxAttrs+1)
	for i := range many {
		many[i] = attr{uint16(i), []byte{byte(i)}}
	}
	overrun := message(0x0001, attr{1, []byte{1, 2, 3, 4}}, attr{2, []byte{5, 6, 7, 8}})
	binary.BigEndian.PutUint16(overrun[HeaderLen+8+2:], 9) // the second claims 9 bytes, 4 remain
	for _, tc := range []struct {
		name string
		p    []byte
		want []attr
	}{
		{"padded values in order", message(0x0001, attr{1, []byte{1}}, attr{2, nil}, attr{3, []byte{1, 2, 3, 4, 5}}),
			[]attr{{1, []byte{1}}, {2, []byte{}}, {3, []byte{1, 2, 3, 4, 5}}}},
		{"stops at an overrun", overrun, []attr{{1, []byte{1, 2, 3, 4}}}},
		{"at most MaxAttrs", message(0x0001, many...), many[:MaxAttrs]},
		{"not a message", []byte{0, 1, 0, 0}, nil},
		{"stops at the length field", func() []byte {
			p := message(0x0001, attr{1, []byte{1, 2, 3, 4}}, attr{2, []byte{5, 6, 7, 8}})
			binary.BigEndian.PutUint16(p[2:4], 8) // the second lies past the length
			return p
		}(), []attr{{1, []byte{1, 2, 3, 4}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []attr
			WalkAttrs(tc.p, func(typ uint16, v []byte) { got = append(got, attr{typ, bytes.Clone(v)}) })
			if len(got) != len(tc.want) {
				t.Fatalf("got %d attributes %v, want %d %v", len(got), got, len(tc.want), tc.want)
			}
			for i := range got {
				if got[i].typ != tc.want[i].typ || !bytes.Equal(got[i].v, tc.want[i].v) {
					t.Errorf("attribute %d = %v, want %v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestXORAddr(t *testing.T) {
	txid := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	for _, s := range []string{"198.51.100.7:3478", "0.0.0.0:0", "[2001:db8::1]:49152", "[fe80::1234:5678]:65535"} {
		ap := netip.MustParseAddrPort(s)
		p, v := pionXORAddr(t, txid, ap, AttrXORPeerAddress)
		if got, ok := XORAddr(p, v); !ok || got != ap {
			t.Errorf("%s: XORAddr = %v, %v", s, got, ok)
		}
	}

	p, v4 := pionXORAddr(t, txid, netip.MustParseAddrPort("198.51.100.7:3478"), AttrXORPeerAddress)
	_, v6 := pionXORAddr(t, txid, netip.MustParseAddrPort("[2001:db8::1]:3478"), AttrXORPeerAddress)
	// An IPv4-mapped IPv6 address, which pion encodes as IPv4: its bytes
	// XORed with the cookie and the transaction ID by hand.
	mapped := []byte{0, FamilyIPv6, 0x0d ^ 0x21, 0x96 ^ 0x12}
	for i, b := range netip.MustParseAddr("::ffff:198.51.100.7").As16() {
		mapped = append(mapped, b^p[4+i])
	}
	if got, ok := XORAddr(p, mapped); !ok || got != netip.MustParseAddrPort("198.51.100.7:3478") {
		t.Errorf("IPv4-mapped: XORAddr = %v, %v; want it as IPv4", got, ok)
	}
	for _, tc := range []struct {
		name string
		p, v []byte
	}{
		{"IPv4 value short", p, v4[:7]},
		{"IPv6 value short", p, v6[:19]},
		{"no family", p, v4[:3]},
		{"unknown family", p, append([]byte{0, 3}, v4[2:]...)},
		{"message shorter than a header", p[:HeaderLen-1], v4},
	} {
		if got, ok := XORAddr(tc.p, tc.v); ok {
			t.Errorf("%s: XORAddr = %v, true; want false", tc.name, got)
		}
	}
}

// TestDecodeAllocs: the fast paths learn from control datagrams without
// allocating; a walk whose callback decodes an address is what they do.
func TestDecodeAllocs(t *testing.T) {
	p, _ := pionXORAddr(t, [12]byte{7}, netip.MustParseAddrPort("[2001:db8::1]:3478"), AttrXORRelayedAddress)
	var got netip.AddrPort
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := Type(p); !ok {
			t.Fatal("not a message")
		}
		WalkAttrs(p, func(typ uint16, v []byte) {
			if typ == AttrXORRelayedAddress {
				got, _ = XORAddr(p, v)
			}
		})
	})
	if allocs != 0 || !got.IsValid() {
		t.Errorf("%.1f allocations, decoded %v; want 0 and an address", allocs, got)
	}
}

// FuzzDecode: any bytes at all are walked and decoded without a panic,
// every value handed out lies inside the message its header bounds, and
// no more than MaxAttrs are visited.
func FuzzDecode(f *testing.F) {
	f.Add(message(TypeChannelBindRequest, attr{AttrChannelNumber, []byte{0x40, 0, 0, 0}},
		attr{AttrXORPeerAddress, []byte{0, 1, 0xa1, 0x47, 0x5e, 0x12, 0xa4, 0x43}}))
	f.Add(message(TypeAllocateSuccess, attr{AttrXORRelayedAddress, make([]byte, 20)}))
	f.Add(message(TypeAllocateSuccess, attr{AttrXORRelayedAddress, []byte{0, 2, 0, 0}}))
	f.Add([]byte{0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		_, isMsg := Type(p)
		n := 0
		WalkAttrs(p, func(typ uint16, v []byte) {
			n++
			if !isMsg {
				t.Fatal("walked a message Type rejects")
			}
			end := HeaderLen + int(binary.BigEndian.Uint16(p[2:4]))
			if len(v) > end-HeaderLen-4 {
				t.Fatalf("value of %d bytes in a body of %d", len(v), end-HeaderLen)
			}
			if ap, ok := XORAddr(p, v); ok && (!ap.IsValid() || ap.Addr().Is4In6()) {
				t.Fatalf("XORAddr = %v", ap)
			}
		})
		if n > MaxAttrs {
			t.Fatalf("%d attributes visited", n)
		}
		if len(p) >= 4 {
			XORAddr(p, p[:min(len(p), 20)]) // a value that is the message itself
		}
	})
}

// FuzzXORAddrRoundTrip: an address pion/stun encodes decodes to itself.
func FuzzXORAddrRoundTrip(f *testing.F) {
	f.Add([]byte{198, 51, 100, 7}, uint16(3478), []byte("0123456789ab"))
	f.Add(netip.MustParseAddr("2001:db8::1").AsSlice(), uint16(0), []byte("transactioni"))
	f.Fuzz(func(t *testing.T, ip []byte, port uint16, id []byte) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || a.Is4In6() {
			return
		}
		var txid [12]byte
		copy(txid[:], id)
		ap := netip.AddrPortFrom(a, port)
		p, v := pionXORAddr(t, txid, ap, AttrXORPeerAddress)
		if got, ok := XORAddr(p, v); !ok || got != ap {
			t.Fatalf("XORAddr = %v, %v; want %v", got, ok, ap)
		}
	})
}
