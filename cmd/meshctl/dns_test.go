package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/control/controltest"
	"github.com/meshd/meshd/internal/testutil"
)

// dnsBackend adds the DNS endpoints to the fake backend.
type dnsBackend struct {
	*controltest.Backend
	status control.DNSStatus
	answer control.DNSAnswer
	asked  []string
}

func (b *dnsBackend) DNS(context.Context) (*control.DNSStatus, error) {
	st := b.status
	return &st, nil
}

func (b *dnsBackend) DNSQuery(_ context.Context, name, qtype string) (*control.DNSAnswer, error) {
	b.asked = append(b.asked, qtype+" "+name)
	a := b.answer
	return &a, nil
}

func newDNSHarness(t *testing.T) (*dnsBackend, string) {
	t.Helper()
	testutil.LeakCheck(t)
	b := &dnsBackend{Backend: controltest.New(), status: control.DNSStatus{
		Enabled: true, Domain: "mesh.internal",
		Listen:   []netip.AddrPort{netip.MustParseAddrPort("100.64.0.1:53")},
		Resolved: control.ResolvedInfo{Enabled: true, Error: "systemd-resolved is not running", Link: "meshd0"},
		Hint:     "point the host's resolver at 100.64.0.1 for mesh.internal only",
		Names: []control.DNSName{
			{Node: "a", FQDN: "a.mesh.internal", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}},
			{Node: "nas", FQDN: "nas.mesh.internal", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.7"), netip.MustParseAddr("fd7a::7")}},
		},
	}}
	_, sock := controltest.Serve(t, b)
	return b, sock
}

func TestDNSStatus(t *testing.T) {
	_, sock := newDNSHarness(t)
	out, err := runMeshctl(context.Background(), sock, "dns", "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mesh.internal", "100.64.0.1:53 (UDP and TCP)", "not configured (systemd-resolved is not running)",
		"hint:", "point the host's resolver at 100.64.0.1", "nas.mesh.internal  100.64.0.7 fd7a::7"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, err = runMeshctl(context.Background(), sock, "dns", "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var st control.DNSStatus
	if err := control.Decode([]byte(out), &st); err != nil || len(st.Names) != 2 || st.Domain != "mesh.internal" {
		t.Errorf("--json: %v %+v", err, st)
	}
}

func TestDNSHosts(t *testing.T) {
	_, sock := newDNSHarness(t)
	out, err := runMeshctl(context.Background(), sock, "dns", "hosts")
	if err != nil {
		t.Fatal(err)
	}
	want := "100.64.0.1\ta.mesh.internal a\n100.64.0.7\tnas.mesh.internal nas\nfd7a::7\tnas.mesh.internal nas\n"
	if _, lines, _ := strings.Cut(out, "\n"); lines != want {
		t.Errorf("hosts lines\n%s\nwant\n%s", lines, want)
	}
}

func TestDNSQuery(t *testing.T) {
	b, sock := newDNSHarness(t)
	b.answer = control.DNSAnswer{Name: "nas.mesh.internal.", Type: "A", Rcode: "NOERROR",
		Answers: []control.DNSRecord{{Name: "nas.mesh.internal.", Type: "A", TTL: 1, Value: "\t100.64.0.7"}}}
	out, err := runMeshctl(context.Background(), sock, "dns", "query", "nas", "--type", "aaaa")
	if err != nil || !strings.Contains(out, "nas.mesh.internal.  1  A  100.64.0.7") {
		t.Errorf("query: %v\n%s", err, out)
	}
	if len(b.asked) != 1 || b.asked[0] != "AAAA nas" {
		t.Errorf("asked %q", b.asked)
	}
	b.answer = control.DNSAnswer{Name: "printer.mesh.internal.", Type: "A", Rcode: "NXDOMAIN"}
	out, err = runMeshctl(context.Background(), sock, "dns", "query", "printer", "--json")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), "NXDOMAIN") {
		t.Errorf("NXDOMAIN: error %v", err)
	}
	var ans control.DNSAnswer
	if err := json.Unmarshal([]byte(out), &ans); err != nil || ans.Rcode != "NXDOMAIN" {
		t.Errorf("--json: %v %s", err, out)
	}
}

// TestStatusNamesLine: meshctl status says where the names are served and,
// without systemd-resolved, how to point the host's resolver at meshd.
func TestStatusNamesLine(t *testing.T) {
	for _, tc := range []struct {
		dns  control.DNSSummary
		want string
	}{
		{control.DNSSummary{Domain: "mesh.internal", Listen: []netip.AddrPort{netip.MustParseAddrPort("100.64.0.1:53")}, ResolvedConfigured: true},
			"*.mesh.internal on 100.64.0.1:53, via systemd-resolved"},
		{control.DNSSummary{Domain: "mesh.internal", Listen: []netip.AddrPort{netip.MustParseAddrPort("100.64.0.1:53")}, Hint: "point the host's resolver at 100.64.0.1"},
			"*.mesh.internal on 100.64.0.1:53; not in the host's resolver: point the host's resolver at 100.64.0.1"},
		{control.DNSSummary{Domain: "mesh.internal", Hint: "not serving: dns.enabled = false"}, "*.mesh.internal; not serving: dns.enabled = false"},
	} {
		var b strings.Builder
		st := &control.Status{Name: "a", DNS: &tc.dns}
		if err := renderStatus(&b, st, time.Now()); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("status lacks %q:\n%s", tc.want, b.String())
		}
	}
}

// TestWaitPeerByName: meshctl wait --peer takes the peer's name in the mesh
// domain too.
func TestWaitPeerByName(t *testing.T) {
	h := newHarness(t)
	h.b.SetStatus(control.Status{Name: "laptop", Coordinator: control.CoordinatorInfo{State: control.SessionConnected},
		DNS: &control.DNSSummary{Domain: "mesh.internal"}})
	h.b.SetPeers(samplePeers(time.Now()))
	for _, arg := range []string{"vps.mesh.internal", "VPS.mesh.internal."} {
		out, err := h.run(t, "wait", "--peer", arg, "--timeout", "5s")
		if err != nil || !strings.Contains(out, "is up") {
			t.Errorf("wait --peer %s: %q, %v", arg, out, err)
		}
	}
}
