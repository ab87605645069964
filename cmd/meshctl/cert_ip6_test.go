package main

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshd/meshd/pki"
)

// TestCertSignIPv6 is the IPv6 overlay address as an operator assigns it: ca
// init picks a unique local /48 and stores it in the CA; cert sign derives
// each node's address from its IPv4 host part, takes an explicit one inside
// the prefix, or none; a CA without a prefix (made before IPv6, or with
// --ip6-prefix none) signs IPv4-only nodes.
func TestCertSignIPv6(t *testing.T) {
	root := t.TempDir()
	auto, fixed, v4only := filepath.Join(root, "auto"), filepath.Join(root, "fixed"), filepath.Join(root, "v4")
	out := mustPKICmd(t, "ca", "init", "--name", "m", "--dir", auto)
	p6, err := netip.ParsePrefix(pkiFieldValue(t, out, "ipv6 prefix"))
	if err != nil || pki.ValidateMeshPrefix6(p6) != nil || p6.Addr().As16()[0] != 0xfd {
		t.Fatalf("ca init chose ipv6 prefix %v (%v):\n%s", p6, err, out)
	}
	if got := pkiFieldValue(t, mustPKICmd(t, "cert", "show", filepath.Join(auto, "ca.crt")), "ipv6 prefix"); got != p6.String() {
		t.Fatalf("cert show of the CA: ipv6 prefix %q, want %v", got, p6)
	}
	mustPKICmd(t, "ca", "init", "--name", "m", "--dir", fixed, "--ip6-prefix", "fd7a:115c:a1e0::/48")
	out = mustPKICmd(t, "ca", "init", "--name", "m", "--dir", v4only, "--ip6-prefix", "none")
	if !strings.HasPrefix(pkiFieldValue(t, out, "ipv6 prefix"), "(none") {
		t.Fatalf("--ip6-prefix none:\n%s", out)
	}

	derived := p6.Addr().As16()
	derived[15] = 7
	n := 0
	for _, tc := range []struct {
		name string
		ca   string
		args []string
		want string // the certificate's Addr6, "" for none
	}{
		{"auto derives from the IPv4 host part", auto, []string{"--ip", "100.64.0.7/10"}, netip.PrefixFrom(netip.AddrFrom16(derived), 48).String()},
		{"auto, 100.64.1.2", fixed, []string{"--ip", "100.64.1.2/10"}, "fd7a:115c:a1e0::102/48"},
		{"explicit without length", fixed, []string{"--ip", "100.64.0.9/10", "--ip6", "fd7a:115c:a1e0::99"}, "fd7a:115c:a1e0::99/48"},
		{"explicit with length", fixed, []string{"--ip", "100.64.0.9/10", "--ip6", "fd7a:115c:a1e0::98/48"}, "fd7a:115c:a1e0::98/48"},
		{"none", fixed, []string{"--ip", "100.64.0.10/10", "--ip6", "none"}, ""},
		{"IPv4-only CA", v4only, []string{"--ip", "100.64.0.11/10"}, ""},
		{"IPv4-only CA, explicit", v4only, []string{"--ip", "100.64.0.12/10", "--ip6", "fd00:1::12/64"}, "fd00:1::12/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n++
			dir := filepath.Join(root, "out", tc.name)
			name := "node-" + string(rune('a'+n))
			mustPKICmd(t, append([]string{"cert", "sign", "--ca-dir", tc.ca, "--name", name, "--out", dir}, tc.args...)...)
			nc := signedCert(t, filepath.Join(dir, name+".crt"))
			got := ""
			if nc.Identity.Addr6.IsValid() {
				got = nc.Identity.Addr6.String()
			}
			if got != tc.want {
				t.Fatalf("Addr6 = %q, want %q", got, tc.want)
			}
		})
	}

	sign := func(ca string, extra ...string) []string {
		return append([]string{"cert", "sign", "--ca-dir", ca, "--name", "bad", "--out", filepath.Join(root, "bad")}, extra...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{sign(fixed, "--ip", "100.64.0.3/10", "--ip6", "fd7a:115c:beef::3"), "not a host address of the CA's IPv6 prefix"},
		{sign(fixed, "--ip", "100.64.0.3/10", "--ip6", "fd7a:115c:a1e0::3/64"), "not a host address of the CA's IPv6 prefix"},
		{sign(fixed, "--ip", "100.64.0.3/10", "--ip6", "fd7a:115c:a1e0::"), "not a host address of the CA's IPv6 prefix"},
		{sign(fixed, "--ip", "100.64.0.0/10"), "no host part"},
		{sign(fixed, "--ip", "100.64.0.3/10", "--subnets", "fd7a:115c:a1e0:5::/64"), "overlaps the mesh prefix fd7a:115c:a1e0::/48"},
		{sign(fixed, "--ip", "100.64.0.3/10", "--ip6", "nonsense"), `--ip6 "nonsense"`},
		{sign(v4only, "--ip", "100.64.0.3/10", "--ip6", "fd00:1::3"), "the CA has no IPv6 prefix"},
		{[]string{"ca", "init", "--name", "m", "--dir", filepath.Join(root, "x"), "--ip6-prefix", "2001:db8:1::/48"}, "--ip6-prefix"},
		{[]string{"ca", "init", "--name", "m", "--dir", filepath.Join(root, "x"), "--ip6-prefix", "fd00:1::/64"}, "--ip6-prefix"},
	} {
		_, err := runPKICmd(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || exitCode(err) != 2 {
			t.Errorf("%v: error %v (exit %d), want exit 2 and %q", tc.args[:2], err, exitCode(err), tc.want)
		}
	}
}
