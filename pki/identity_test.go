package pki

import (
	"encoding/asn1"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, s := range []string{"a", "node-1", "db.lab", "0", strings.Repeat("a", 63)} {
		if !ValidName(s) {
			t.Errorf("ValidName(%q) = false", s)
		}
	}
	for _, s := range []string{"", "-a", ".a", "Node", "a_b", "a b", "ä", strings.Repeat("a", 64), "a/b"} {
		if ValidName(s) {
			t.Errorf("ValidName(%q) = true", s)
		}
	}
}

func TestIdentityValidate(t *testing.T) {
	base := testIdentity("node-a", 1)
	p := netip.MustParsePrefix
	tests := []struct {
		name string
		edit func(*Identity)
		ok   bool
	}{
		{"valid", func(*Identity) {}, true},
		{"no IPv6", func(id *Identity) { id.Addr6 = netip.Prefix{} }, true},
		{"no groups or subnets", func(id *Identity) { id.Groups, id.Subnets = nil, nil }, true},
		{"IPv6 subnet", func(id *Identity) { id.Subnets = []netip.Prefix{p("10.1.0.0/24"), p("fd00::/64")} }, true},
		{"group with underscore", func(id *Identity) { id.Groups = []string{"db_admins"} }, true},
		{"bad name", func(id *Identity) { id.Name = "Node A" }, false},
		{"no address", func(id *Identity) { id.Addr = netip.Prefix{} }, false},
		{"IPv6 as IPv4 address", func(id *Identity) { id.Addr = p("fd00::1/64") }, false},
		{"zero prefix length", func(id *Identity) { id.Addr = p("100.64.0.1/0") }, false},
		{"IPv4 as IPv6 address", func(id *Identity) { id.Addr6 = p("100.64.0.1/10") }, false},
		{"mapped IPv6 address", func(id *Identity) { id.Addr6 = p("::ffff:100.64.0.1/104") }, false},
		{"bad group", func(id *Identity) { id.Groups = []string{"Admins"} }, false},
		{"unsorted groups", func(id *Identity) { id.Groups = []string{"b", "a"} }, false},
		{"duplicate groups", func(id *Identity) { id.Groups = []string{"a", "a"} }, false},
		{"unmasked subnet", func(id *Identity) { id.Subnets = []netip.Prefix{p("10.1.0.5/24")} }, false},
		{"invalid subnet", func(id *Identity) { id.Subnets = []netip.Prefix{{}} }, false},
		{"unsorted subnets", func(id *Identity) { id.Subnets = []netip.Prefix{p("10.2.0.0/24"), p("10.1.0.0/24")} }, false},
		{"too many groups", func(id *Identity) {
			id.Groups = nil
			for i := 0; i <= maxGroups; i++ {
				id.Groups = append(id.Groups, "g"+strings.Repeat("x", i))
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := base
			id.Groups = append([]string(nil), base.Groups...)
			tc.edit(&id)
			err := id.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrBadIdentity) {
				t.Fatalf("error %v does not wrap ErrBadIdentity", err)
			}
		})
	}
}

func TestIdentityNormalize(t *testing.T) {
	p := netip.MustParsePrefix
	in := Identity{Groups: []string{"b", "a", "b"}, Subnets: []netip.Prefix{p("10.2.0.0/24"), p("10.1.0.0/24"), p("10.2.0.0/24"), p("10.1.0.0/16")}}
	out := in.Normalize()
	if !reflect.DeepEqual(out.Groups, []string{"a", "b"}) {
		t.Errorf("groups %v", out.Groups)
	}
	if !reflect.DeepEqual(out.Subnets, []netip.Prefix{p("10.1.0.0/16"), p("10.1.0.0/24"), p("10.2.0.0/24")}) {
		t.Errorf("subnets %v", out.Subnets)
	}
	if in.Groups[0] != "b" {
		t.Error("Normalize changed its input")
	}
}

func TestIdentityExtensionRoundTrip(t *testing.T) {
	for _, id := range []Identity{
		testIdentity("node-a", 1),
		{Name: "solo", Addr: netip.MustParsePrefix("100.64.0.7/10")},
		{Name: "coord", Addr: netip.MustParsePrefix("100.64.0.8/10"), Coordinator: true},
	} {
		der, err := marshalIdentity(id)
		if err != nil {
			t.Fatal(err)
		}
		back, err := unmarshalIdentity(der)
		if err != nil {
			t.Fatal(err)
		}
		back.Name = id.Name
		if !reflect.DeepEqual(back, id) {
			t.Fatalf("round trip\n got %+v\nwant %+v", back, id)
		}
	}
}

func TestIdentityExtensionRejects(t *testing.T) {
	enc := func(v any) []byte {
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := identityASN1{Version: 1, Addr: []byte{100, 64, 0, 1, 10}, Addr6: []byte{}, Groups: []asn1.RawValue{}, Subnets: [][]byte{}}
	mod := func(f func(*identityASN1)) []byte { v := good; f(&v); return enc(v) }
	if _, err := unmarshalIdentity(enc(good)); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	for name, der := range map[string][]byte{
		"empty":           nil,
		"trailing data":   append(enc(good), 0),
		"version 2":       mod(func(v *identityASN1) { v.Version = 2 }),
		"short addr":      mod(func(v *identityASN1) { v.Addr = []byte{100, 64, 0, 1} }),
		"prefix too long": mod(func(v *identityASN1) { v.Addr = []byte{100, 64, 0, 1, 33} }),
		"bad addr6":       mod(func(v *identityASN1) { v.Addr6 = []byte{1, 2, 3} }),
		"group not UTF8":  mod(func(v *identityASN1) { v.Groups = []asn1.RawValue{{Tag: asn1.TagPrintableString, Bytes: []byte("a")}} }),
		"bad subnet":      mod(func(v *identityASN1) { v.Subnets = [][]byte{{10, 1, 0, 0}} }),
		"unknown role":    mod(func(v *identityASN1) { v.Role = 2 }),
		"negative role":   mod(func(v *identityASN1) { v.Role = -1 }),
		"wrong type":      enc(struct{ A string }{"x"}),
	} {
		if _, err := unmarshalIdentity(der); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// identityV1 is the extension as certificates issued before roles carried it.
type identityV1 struct {
	Version int
	Addr    []byte
	Addr6   []byte
	Groups  []asn1.RawValue
	Subnets [][]byte
}

// TestIdentityRoleCompatible: the role field is invisible to both sides of an
// upgrade. A node certificate encodes byte for byte as before roles existed,
// a pre-role certificate reads as a node, and a pre-role reader still parses
// a coordinator certificate (as a node).
func TestIdentityRoleCompatible(t *testing.T) {
	node := testIdentity("node-a", 1)
	old, err := asn1.Marshal(identityV1{Version: 1, Addr: marshalPrefix(node.Addr), Addr6: marshalPrefix(node.Addr6),
		Groups:  []asn1.RawValue{{Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte("lab")}, {Class: asn1.ClassUniversal, Tag: asn1.TagUTF8String, Bytes: []byte("servers")}},
		Subnets: [][]byte{marshalPrefix(node.Subnets[0])}})
	if err != nil {
		t.Fatal(err)
	}
	der, err := marshalIdentity(node)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(der, old) {
		t.Errorf("a node identity no longer encodes as before roles:\n got %x\nwant %x", der, old)
	}
	back, err := unmarshalIdentity(old)
	if err != nil {
		t.Fatal(err)
	}
	if back.Coordinator || back.Role() != RoleNode {
		t.Errorf("a pre-role certificate reads as role %q", back.Role())
	}

	coord := node
	coord.Coordinator = true
	der, err = marshalIdentity(coord)
	if err != nil {
		t.Fatal(err)
	}
	var v identityV1
	if rest, err := asn1.Unmarshal(der, &v); err != nil || len(rest) != 0 {
		t.Fatalf("a pre-role reader refuses a coordinator identity: %v (%d bytes left)", err, len(rest))
	}
	if back, err = unmarshalIdentity(der); err != nil || !back.Coordinator || back.Role() != RoleCoordinator {
		t.Fatalf("coordinator identity reads as %q, %v", back.Role(), err)
	}
}
