//go:build e2e

package lab_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// TestNATTruthTable measures every kind of host the lab offers with the
// RFC 4787 probe of LAB.md §1 and checks it against the behaviour the lab
// promises (NATKind.Expect, Site.Expect). This table is the lab's own truth:
// scenarios rely on it.
func TestNATTruthTable(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	stun := l.AddNATProbe(t, "stun")

	type row struct {
		name    string
		host    *lab.Host
		carrier lab.NATKind
	}
	var rows []row
	for _, k := range []lab.NATKind{
		lab.NATNone, lab.NATFirewall, lab.NATFullCone, lab.NATAddressRestricted,
		lab.NATPortRestricted, lab.NATPortRestrictedMasq, lab.NATSymmetric,
	} {
		name := strings.ReplaceAll(k.String(), "-", "")
		rows = append(rows, row{name: k.String(), host: l.AddNode(t, name, k, lab.HostOptions{})})
	}
	for _, pair := range [][2]lab.NATKind{
		{lab.NATFullCone, lab.NATFullCone},
		{lab.NATAddressRestricted, lab.NATFullCone},
		{lab.NATPortRestrictedMasq, lab.NATSymmetric},
		{lab.NATFullCone, lab.NATPortRestrictedMasq},
	} {
		home, carrier := pair[0], pair[1]
		name := fmt.Sprintf("dbl%d%d", home, carrier)
		site := l.AddSite(t, name, lab.SiteOptions{NAT: home, Carrier: carrier})
		rows = append(rows, row{name: fmt.Sprintf("%v behind %v", home, carrier), host: site.AddHost(t, name, lab.HostOptions{}), carrier: carrier})
	}

	var mu sync.Mutex
	var table []string
	for _, r := range rows {
		t.Run(strings.ReplaceAll(r.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			var wantM lab.Mapping
			var wantF lab.Filtering
			if s := r.host.Site(); s != nil {
				wantM, wantF, _ = s.Expect()
			} else {
				wantM, wantF, _ = r.host.Kind().Expect()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := stun.Measure(ctx, r.host)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			table = append(table, fmt.Sprintf("%-40s expect %v/%-4v measured %v", r.name, wantM, wantF, got))
			mu.Unlock()
			if got.Mapping != wantM || got.Filtering != wantF {
				t.Errorf("measured %v, lab promises %v/%v", got, wantM, wantF)
			}
			pub := r.host.PublicIP()
			for _, m := range append(got.Mapped, got.Filter.Observed) {
				if m.Addr() != pub {
					t.Errorf("server saw %v, want the host's public address %v", m, pub)
				}
			}
			switch k := r.host.Kind(); {
			case r.carrier != lab.NATNone:
				if pub == r.host.Site().Router().WANIP() || pub != r.host.Site().Carrier().WANIP() {
					t.Errorf("double NAT: public %v, router WAN %v, carrier WAN %v", pub, r.host.Site().Router().WANIP(), r.host.Site().Carrier().WANIP())
				}
			case k == lab.NATNone || k == lab.NATFirewall:
				want := netip.AddrPortFrom(r.host.IP(), uint16(r.host.Port()))
				if got.Mapped[0] != want {
					t.Errorf("public host seen as %v, want %v (no translation)", got.Mapped[0], want)
				}
			case k == lab.NATSymmetric:
				if got.Mapped[0] == got.Mapped[1] || got.Mapped[1] == got.Mapped[2] || got.Mapped[0] == got.Mapped[2] {
					t.Errorf("symmetric NAT reused a mapping: %v", got.Mapped)
				}
			default:
				// The cone kinds keep the node's port: a peer can predict it.
				if int(got.Mapped[0].Port()) != r.host.Port() {
					t.Errorf("%v: external port %d, want the node's own %d", k, got.Mapped[0].Port(), r.host.Port())
				}
			}
		})
	}
	t.Cleanup(func() {
		sort.Strings(table)
		out := strings.Join(table, "\n") + "\n"
		t.Logf("NAT truth table:\n%s", out)
		_ = os.WriteFile(filepath.Join(l.ArtifactDir(), "truth-table.txt"), []byte(out), 0o644)
	})
}

// A site whose router drops outbound UDP passes no UDP at all, while TCP
// goes out (masqueraded).
func TestUDPBlocked(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	stun := l.AddNATProbe(t, "stun")
	h := l.AddNode(t, "blocked", lab.NATUDPBlocked, lab.HostOptions{})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obs, err := h.ProbeTCP(ctx, stun.TCP)
	if err != nil {
		t.Fatalf("TCP out of the UDP-blocked site: %v", err)
	}
	if obs.Addr() != h.PublicIP() {
		t.Errorf("TCP seen from %v, want the site's %v", obs, h.PublicIP())
	}

	uctx, ucancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer ucancel()
	if got, err := h.ProbeUDP(uctx, h.Port(), stun.Primary); !errors.Is(err, lab.ErrNoReply) {
		t.Fatalf("UDP out of the UDP-blocked site: got %v, err %v; want ErrNoReply", got, err)
	}
	// The same probe works from a normal site, so the failure above is the
	// router's doing and not the probe's.
	normal := l.AddNode(t, "normal", lab.NATPortRestrictedMasq, lab.HostOptions{})
	if _, err := normal.ProbeUDP(ctx, normal.Port(), stun.Primary); err != nil {
		t.Fatalf("UDP from a normal site: %v", err)
	}
	if _, _, promised := h.Kind().Expect(); promised {
		t.Error("NATUDPBlocked claims to pass UDP")
	}
}

// Double NAT: the flow is translated twice, and both routers hold a mapping
// for it: the home router from the LAN address to its WAN on the carrier's
// network, the carrier from there to the public address the server saw.
func TestDoubleNAT(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	stun := l.AddNATProbe(t, "stun")
	site := l.AddSite(t, "home", lab.SiteOptions{NAT: lab.NATPortRestricted, Carrier: lab.NATSymmetric})
	h := site.AddHost(t, "pc", lab.HostOptions{Port: 6000})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obs, err := h.ProbeUDP(ctx, h.Port(), stun.Primary)
	if err != nil {
		t.Fatal(err)
	}
	if obs[0].Addr() != site.Carrier().WANIP() {
		t.Fatalf("server saw %v, want the carrier's WAN %v", obs[0], site.Carrier().WANIP())
	}
	port := fmt.Sprint(h.Port())
	home, err := site.Router().Run(ctx, "conntrack", "-L", "-p", "udp", "--orig-port-src", port)
	if err != nil {
		t.Fatal(err)
	}
	// Home router: 10.0.1.2:6000 -> stun, reply to its carrier-side WAN, port kept.
	wantHome := []string{"src=" + h.IP().String(), "dst=" + site.Router().WANIP().String(), "dport=" + port}
	for _, w := range wantHome {
		if !strings.Contains(home, w) {
			t.Errorf("home router conntrack lacks %q:\n%s", w, home)
		}
	}
	carrier, err := site.Carrier().Run(ctx, "conntrack", "-L", "-p", "udp", "--orig-src", site.Router().WANIP().String())
	if err != nil {
		t.Fatal(err)
	}
	wantCarrier := []string{"src=" + site.Router().WANIP().String(), "sport=" + port, "dst=" + obs[0].Addr().String(), fmt.Sprintf("dport=%d", obs[0].Port())}
	for _, w := range wantCarrier {
		if !strings.Contains(carrier, w) {
			t.Errorf("carrier conntrack lacks %q:\n%s", w, carrier)
		}
	}
}

// Two hosts behind one NAT reach each other directly on the LAN (their own
// addresses, not through the router's NAT), and both reach the internet with
// their own mappings.
func TestSameLAN(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	stun := l.AddNATProbe(t, "stun")
	site := l.AddSite(t, "office", lab.SiteOptions{NAT: lab.NATPortRestrictedMasq})
	a := site.AddHost(t, "a", lab.HostOptions{})
	b := site.AddHost(t, "b", lab.HostOptions{})
	if a.Port() == b.Port() {
		t.Fatalf("hosts of one site got the same port %d", a.Port())
	}
	srv := netip.AddrPortFrom(b.IP(), uint16(b.Port()+2)) // b.Port() itself probes the internet below
	if _, err := b.StartProbeServer([]netip.AddrPort{srv}, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obs, err := a.ProbeUDP(ctx, a.Port(), srv)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.AddrPortFrom(a.IP(), uint16(a.Port())); obs[0] != want {
		t.Errorf("b saw a as %v, want its LAN address %v", obs[0], want)
	}
	// The LAN flow never touched the router's IP stack.
	ct, err := site.Router().Run(ctx, "conntrack", "-L", "-p", "udp", "--orig-dst", b.IP().String())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ct, "src="+a.IP().String()) {
		t.Errorf("LAN traffic went through the router:\n%s", ct)
	}
	for _, h := range []*lab.Host{a, b} {
		out, err := h.ProbeUDP(ctx, h.Port(), stun.Primary)
		if err != nil {
			t.Fatal(err)
		}
		if want := netip.AddrPortFrom(site.PublicIP(), uint16(h.Port())); out[0] != want {
			t.Errorf("%s seen by the internet as %v, want %v", h.Name(), out[0], want)
		}
	}
}
