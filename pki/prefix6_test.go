package pki

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestValidateMeshPrefix6(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"fd12:3456:789a::/48", true},
		{"fc00:1:2::/48", true},
		{"fd12:3456:789a::/64", false}, // not a /48
		{"fd12:3456::/32", false},
		{"2001:db8:1::/48", false},      // global, not unique local
		{"fd12:3456:789a::1/48", false}, // host bits
		{"100.64.0.0/10", false},
		{"::ffff:100.64.0.0/120", false},
	} {
		err := ValidateMeshPrefix6(netip.MustParsePrefix(tc.in))
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadPrefix6)) {
			t.Errorf("ValidateMeshPrefix6(%s) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
	if err := ValidateMeshPrefix6(netip.Prefix{}); err == nil {
		t.Error("the zero prefix validated")
	}
}

func TestRandomMeshPrefix6(t *testing.T) {
	seen := map[netip.Prefix]bool{}
	for range 8 {
		p, err := RandomMeshPrefix6()
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidateMeshPrefix6(p); err != nil || p.Addr().As16()[0] != 0xfd {
			t.Fatalf("RandomMeshPrefix6() = %v: %v", p, err)
		}
		seen[p] = true
	}
	if len(seen) < 2 {
		t.Fatal("eight random prefixes were all the same")
	}
}

func TestDeriveAddr6(t *testing.T) {
	p6 := netip.MustParsePrefix("fd12:3456:789a::/48")
	for _, tc := range []struct {
		addr, want string // want "" = error
	}{
		{"100.64.0.7/10", "fd12:3456:789a::7/48"},
		{"100.64.1.2/10", "fd12:3456:789a::102/48"},
		{"100.127.255.254/10", "fd12:3456:789a::3f:fffe/48"},
		{"10.1.2.3/8", "fd12:3456:789a::1:203/48"},
		{"192.168.5.9/24", "fd12:3456:789a::9/48"},
		{"100.64.0.0/10", ""}, // the network address has no host part
		{"100.64.0.7/32", ""}, // nor a /32
		{"fd00::1/64", ""},    // not IPv4
	} {
		got, err := DeriveAddr6(p6, netip.MustParsePrefix(tc.addr))
		if tc.want == "" {
			if err == nil {
				t.Errorf("DeriveAddr6(%s) = %v, want an error", tc.addr, got)
			}
			continue
		}
		if err != nil || got != netip.MustParsePrefix(tc.want) {
			t.Errorf("DeriveAddr6(%s) = %v, %v; want %s", tc.addr, got, err, tc.want)
		}
	}
	// Distinct IPv4 addresses of one mesh derive distinct IPv6 addresses.
	a, _ := DeriveAddr6(p6, netip.MustParsePrefix("100.64.0.1/10"))
	b, _ := DeriveAddr6(p6, netip.MustParsePrefix("100.64.0.2/10"))
	if a == b {
		t.Fatal("two nodes derived the same IPv6 address")
	}
	if _, err := DeriveAddr6(netip.MustParsePrefix("2001:db8::/48"), netip.MustParsePrefix("100.64.0.1/10")); !errors.Is(err, ErrBadPrefix6) {
		t.Fatalf("a global prefix derived: %v", err)
	}
}

// TestCAPrefix6 is the CA's side: the prefix survives Save/LoadCA, nodes are
// signed only inside it, and a CA without one (every CA made before IPv6)
// keeps signing IPv4-only and explicit IPv6 certificates as before.
func TestCAPrefix6(t *testing.T) {
	p6 := netip.MustParsePrefix("fd12:3456:789a::/48")
	ca, err := NewCAWithPrefix6("dual", 24*time.Hour, KeyECDSAP256, p6)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Prefix6() != p6 {
		t.Fatalf("Prefix6() = %v, want %v", ca.Prefix6(), p6)
	}
	dir := t.TempDir()
	if err := ca.Save(dir, false); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Prefix6() != p6 {
		t.Fatalf("loaded Prefix6() = %v, want %v", loaded.Prefix6(), p6)
	}

	v4 := netip.MustParsePrefix("100.64.0.7/10")
	for _, tc := range []struct {
		name  string
		addr6 string // "" = none
		ok    bool
	}{
		{"inside", "fd12:3456:789a::7/48", true},
		{"none (IPv4-only node)", "", true},
		{"other prefix", "fd7a:115c::7/48", false},
		{"other length", "fd12:3456:789a::7/64", false},
		{"the prefix itself", "fd12:3456:789a::/48", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := Identity{Name: "nas", Addr: v4}
			if tc.addr6 != "" {
				id.Addr6 = netip.MustParsePrefix(tc.addr6)
			}
			key, _ := GenerateKey(KeyECDSAP256)
			nc, err := loaded.Sign(key.Public(), id, time.Hour)
			if !tc.ok {
				if !errors.Is(err, ErrBadPrefix6) {
					t.Fatalf("Sign = %v, want ErrBadPrefix6", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if nc.Identity.Addr6 != id.Addr6 {
				t.Fatalf("certificate Addr6 %v, want %v", nc.Identity.Addr6, id.Addr6)
			}
			// The node verifies against the CA like any other.
			v := NewVerifier(loaded.Cert, nil)
			if _, err := v.Verify([][]byte{nc.Cert.Raw}, Expect{}); err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}

	old := mustCA(t, "v4-only", KeyECDSAP256)
	if old.Prefix6().IsValid() {
		t.Fatalf("NewCA carries a prefix %v", old.Prefix6())
	}
	id := Identity{Name: "nas", Addr: v4, Addr6: netip.MustParsePrefix("fd7a:115c::7/48")}
	key, _ := GenerateKey(KeyECDSAP256)
	if _, err := old.Sign(key.Public(), id, time.Hour); err != nil {
		t.Fatalf("a CA without a prefix refused an explicit IPv6 address: %v", err)
	}
	if _, err := NewCAWithPrefix6("bad", time.Hour, KeyECDSAP256, netip.MustParsePrefix("2001:db8::/48")); !errors.Is(err, ErrBadPrefix6) {
		t.Fatalf("NewCAWithPrefix6 with a global prefix: %v", err)
	}
}

func TestParseMeshPrefix6(t *testing.T) {
	good, _ := marshalMeshPrefix6(netip.MustParsePrefix("fd12:3456:789a::/48"))
	for _, tc := range []struct {
		name string
		der  []byte
		ok   bool
	}{
		{"good", good, true},
		{"trailing", append(append([]byte{}, good...), 0), false},
		{"short", []byte{0x04, 0x05, 100, 64, 0, 0, 10}, false},
		{"global", mustDER(t, "2001:db8:1::/48"), false},
		{"length 64", mustDER(t, "fd12:3456:789a::/64"), false},
		{"length 200", append([]byte{0x04, 17}, append(make([]byte, 16), 200)...), false},
		{"not an octet string", []byte{0x02, 0x01, 0x01}, false},
	} {
		p, err := parseMeshPrefix6(tc.der)
		if (err == nil) != tc.ok {
			t.Errorf("%s: parseMeshPrefix6 = %v, %v; want ok=%v", tc.name, p, err, tc.ok)
		}
	}
}

func mustDER(t *testing.T, p string) []byte {
	t.Helper()
	b, err := marshalMeshPrefix6(netip.MustParsePrefix(p))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzMeshPrefix6Extension: the CA extension decoder never panics, and what
// it accepts is a valid mesh prefix that encodes back to the same bytes.
func FuzzMeshPrefix6Extension(f *testing.F) {
	good, _ := marshalMeshPrefix6(netip.MustParsePrefix("fd12:3456:789a::/48"))
	f.Add(good)
	f.Add([]byte{0x04, 0x00})
	f.Add(append([]byte{0x04, 17}, append(make([]byte, 16), 48)...))
	f.Fuzz(func(t *testing.T, der []byte) {
		p, err := parseMeshPrefix6(der)
		if err != nil {
			return
		}
		if ValidateMeshPrefix6(p) != nil {
			t.Fatalf("accepted invalid prefix %v", p)
		}
		back, err := marshalMeshPrefix6(p)
		if err != nil || string(back) != string(der) {
			t.Fatalf("%v re-encodes as % x, not % x", p, back, der)
		}
	})
}

// TestRenewKeepsAddr6AcrossRotation: a renewal keeps the node's IPv6
// address. Across a CA rotation whose new CA has another prefix, the address
// may stay in the previous CA's prefix (the node would otherwise be stranded
// between the two CAs), while a fresh certificate from the new CA still has
// to use the new prefix.
func TestRenewKeepsAddr6AcrossRotation(t *testing.T) {
	p1, p2 := netip.MustParsePrefix("fd11:1111:1111::/48"), netip.MustParsePrefix("fd22:2222:2222::/48")
	oldCA, err := NewCAWithPrefix6("m", 24*time.Hour, KeyECDSAP256, p1)
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := NewCAWithPrefix6("m", 24*time.Hour, KeyECDSAP256, p2)
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{Name: "nas", Addr: netip.MustParsePrefix("100.64.0.7/10"), Addr6: netip.MustParsePrefix("fd11:1111:1111::7/48")}
	prev := mustNode(t, oldCA, KeyECDSAP256, id, time.Time{}, time.Time{})
	key, _ := GenerateKey(KeyECDSAP256)
	csr, err := CreateRenewalCSR(key, prev.cert.Identity, prev.cert, prev.key)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := newCA.Renew(csr, prev.cert, time.Hour, oldCA.Cert)
	if err != nil {
		t.Fatalf("renewal across the rotation: %v", err)
	}
	if nc.Identity.Addr6 != id.Addr6 {
		t.Fatalf("renewed Addr6 %v, want %v", nc.Identity.Addr6, id.Addr6)
	}
	if _, err := newCA.Sign(key.Public(), id, time.Hour); !errors.Is(err, ErrBadPrefix6) {
		t.Fatalf("a fresh certificate of the new CA in the old prefix: %v, want ErrBadPrefix6", err)
	}
}
