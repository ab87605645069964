//go:build e2e

package lab

import (
	"encoding/base64"
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestAllocator(t *testing.T) {
	p := netip.MustParsePrefix("10.0.7.0/29") // .1 - .6 usable, .7 broadcast
	a := newAllocator(p, netip.MustParseAddr("10.0.7.2"))
	if _, err := a.take(netip.MustParseAddr("10.0.7.3")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		ip, err := a.take(netip.Addr{})
		if err != nil {
			if !errors.Is(err, ErrNoAddress) {
				t.Fatalf("exhaustion error %v, want ErrNoAddress", err)
			}
			break
		}
		got = append(got, ip.String())
	}
	if want := "10.0.7.2 10.0.7.4 10.0.7.5 10.0.7.6"; strings.Join(got, " ") != want {
		t.Errorf("handed out %v, want %s (skipping the taken .3 and the broadcast)", got, want)
	}
	for _, bad := range []string{"10.0.7.3", "10.0.7.0", "10.0.8.1"} {
		if _, err := a.take(netip.MustParseAddr(bad)); !errors.Is(err, ErrNoAddress) {
			t.Errorf("take(%s) err = %v, want ErrNoAddress", bad, err)
		}
	}
}

func TestExpectChain(t *testing.T) {
	cases := []struct {
		kinds []NATKind
		m     Mapping
		f     Filtering
		ok    bool
	}{
		{[]NATKind{NATFullCone, NATFullCone}, MappingEndpointIndependent, FilteringEndpointIndependent, true},
		{[]NATKind{NATAddressRestricted, NATFullCone}, MappingEndpointIndependent, FilteringAddressDependent, true},
		{[]NATKind{NATFullCone, NATPortRestrictedMasq}, MappingEndpointIndependent, FilteringAddressPortDependent, true},
		{[]NATKind{NATPortRestricted, NATSymmetric}, MappingEndpointDependent, FilteringAddressPortDependent, true},
		{[]NATKind{NATSymmetric, NATFullCone}, MappingEndpointDependent, FilteringAddressPortDependent, true},
		{[]NATKind{NATFullCone, NATUDPBlocked}, MappingUnknown, FilteringUnknown, false},
	}
	for _, tc := range cases {
		m, f, ok := expectChain(tc.kinds...)
		if m != tc.m || f != tc.f || ok != tc.ok {
			t.Errorf("expectChain(%v) = %v %v %v, want %v %v %v", tc.kinds, m, f, ok, tc.m, tc.f, tc.ok)
		}
	}
}

// The credentials must be what coturn computes: LAB.md's recipe is
// printf %s "$u" | openssl dgst -sha1 -hmac SECRET -binary | base64.
func TestTURNCredentialsMatchOpenSSL(t *testing.T) {
	user, pass := TURNCredentials("labsecret", "alice", time.Unix(1800000000, 0))
	if user != "1800000000:alice" {
		t.Fatalf("username %q", user)
	}
	// openssl is on scripts/programs.txt: a missing one fails, not skips.
	cmd := exec.Command("openssl", "dgst", "-sha1", "-hmac", "labsecret", "-binary")
	cmd.Stdin = strings.NewReader(user)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.StdEncoding.EncodeToString(out); pass != want {
		t.Fatalf("password %q, openssl says %q", pass, want)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"TestX/sub case": "TestX_sub_case",
		"..":             "_",
		"":               "_",
		"a.b-c_d":        "a.b-c_d",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}
