//go:build e2e

package lab_test

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// TestIPv6Sites checks that each kind of IPv6 site behaves like its real
// counterpart, with the lab's own probe and no meshd:
//
//   - (a) home: IPv4 NAT plus global IPv6 behind a stateful firewall. The
//     host's IPv6 address is not translated; unsolicited inbound IPv6 is
//     dropped; a reply to what the host sent passes, but only from the
//     address and port it contacted; two such hosts reach each other when
//     both send at once (simultaneous open); IPv4 still goes through the NAT.
//   - (b) vps: IPv6 only, with no IPv4 address or route at all.
//   - (c) v4only: IPv4 behind NAT, no IPv6 at all.
//   - (d) pub: public dual-stack host, reachable unsolicited on both.
//
// It also checks that the lab's IPv6 configures nothing by itself (router
// advertisements off, no tentative addresses) and that BlockPath blocks an
// IPv6 path.
func TestIPv6Sites(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	pub := l.AddHost(t, "pub", lab.HostOptions{IPv6: true})
	vps := l.AddHost(t, "vps", lab.HostOptions{NoIPv4: true})
	home := l.AddSite(t, "home", lab.SiteOptions{NAT: lab.NATPortRestrictedMasq, IPv6: true}).AddHost(t, "home", lab.HostOptions{})
	home2 := l.AddNode(t, "home2", lab.NATPortRestricted, lab.HostOptions{IPv6: true})
	v4only := l.AddNode(t, "v4only", lab.NATSymmetric, lab.HostOptions{})
	t.Logf("topology:\n%s", l.Describe())

	pub6 := pub.IP6()
	srv := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(pub6, port) }
	if _, err := pub.StartProbeServer([]netip.AddrPort{srv(3478), srv(3479), srv(9999), netip.AddrPortFrom(pub.IP(), 3478)}, nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*lab.Host{home, home2} {
		if _, err := h.StartProbeServer([]netip.AddrPort{netip.AddrPortFrom(h.IP6(), uint16(h.Port()+2))}, nil); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	// within bounds one probe; short for the answers that must not come.
	within := func(d time.Duration) (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, d) }

	t.Run("addresses", func(t *testing.T) {
		for _, h := range []*lab.Host{pub, vps, home, home2} {
			if !h.IP6().IsValid() || !netip.MustParsePrefix("2001:db8::/32").Contains(h.IP6()) {
				t.Errorf("%s: IPv6 address %v, want one in 2001:db8::/32", h.Name(), h.IP6())
			}
		}
		if s := home.Site(); !s.LAN6().Contains(home.IP6()) {
			t.Errorf("home: %v not in its site's %v", home.IP6(), s.LAN6())
		}
		for _, ns := range l.Namespaces() {
			out, err := runIn(ctx, ns, "ip", "-6", "addr", "show")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out, "tentative") || strings.Contains(out, "dadfailed") {
				t.Errorf("%s: tentative or duplicate IPv6 address:\n%s", ns, out)
			}
			if ra, err := runIn(ctx, ns, "sysctl", "-n", "net.ipv6.conf.all.accept_ra"); err != nil || ra != "0" {
				t.Errorf("%s: accept_ra = %q (%v), want 0", ns, ra, err)
			}
		}
		if v4only.IP6().IsValid() {
			t.Errorf("v4only has IPv6 address %v", v4only.IP6())
		}
		out, err := v4only.Run(ctx, "ip", "-6", "addr", "show", "dev", "eth0")
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("v4only eth0 carries IPv6 (%v):\n%s", err, out)
		}
	})

	t.Run("vps-has-no-ipv4", func(t *testing.T) {
		if vps.HasIPv4() || vps.IP() != vps.IP6() {
			t.Errorf("vps: HasIPv4 %v, IP %v, want IPv6 only", vps.HasIPv4(), vps.IP())
		}
		for _, argv := range [][]string{{"ip", "-4", "addr", "show", "dev", "eth0"}, {"ip", "-4", "route", "show"}} {
			if out, err := vps.Run(ctx, argv[0], argv[1:]...); err != nil || strings.TrimSpace(out) != "" {
				t.Errorf("vps: %s: %q (%v), want nothing", strings.Join(argv, " "), out, err)
			}
		}
		if out, err := vps.Run(ctx, "ip", "-4", "route", "get", pub.IP().String()); err == nil {
			t.Errorf("vps has an IPv4 route to %v: %s", pub.IP(), out)
		}
		c, cancel := within(time.Second)
		defer cancel()
		if got, err := vps.ProbeUDP(c, vps.Port(), netip.AddrPortFrom(pub.IP(), 3478)); err == nil {
			t.Errorf("vps reached %v over IPv4 (seen as %v)", pub.IP(), got)
		}
		c, cancel = within(5 * time.Second)
		defer cancel()
		got, err := vps.ProbeUDP(c, vps.Port(), srv(3478))
		if err != nil {
			t.Fatalf("vps → pub over IPv6: %v", err)
		}
		if want := netip.AddrPortFrom(vps.IP6(), uint16(vps.Port())); got[0] != want {
			t.Errorf("pub saw vps as %v, want %v", got[0], want)
		}
	})

	t.Run("home-firewall", func(t *testing.T) {
		target := netip.AddrPortFrom(home.IP6(), uint16(home.Port()+2))
		for _, from := range []*lab.Host{pub, vps} {
			c, cancel := within(time.Second)
			got, err := from.ProbeUDP(c, from.Port()+5, target)
			cancel()
			if !errors.Is(err, lab.ErrNoReply) {
				t.Errorf("unsolicited %s → home %v passed the firewall (seen as %v, err %v)", from.Name(), target, got, err)
			}
		}
		c, cancel := within(5 * time.Second)
		defer cancel()
		got, err := home.ProbeUDP(c, home.Port(), srv(3478))
		if err != nil {
			t.Fatalf("home → pub over IPv6: %v", err)
		}
		if want := netip.AddrPortFrom(home.IP6(), uint16(home.Port())); got[0] != want {
			t.Errorf("pub saw home as %v, want %v (routed, not translated)", got[0], want)
		}
		f, err := home.ProbeFilter(c, home.Port()+1, srv(3478))
		if err != nil {
			t.Fatal(err)
		}
		if !f.Passed(srv(3478)) || f.Passed(srv(3479)) || f.Passed(srv(9999)) {
			t.Errorf("home's IPv6 firewall let in %v, want only the reply from %v", f.From, srv(3478))
		}
		// IPv4 still goes through the NAT.
		got, err = home.ProbeUDP(c, home.Port()+3, netip.AddrPortFrom(pub.IP(), 3478))
		if err != nil {
			t.Fatalf("home → pub over IPv4: %v", err)
		}
		if got[0].Addr() != home.PublicIP() {
			t.Errorf("pub saw home over IPv4 as %v, want the NAT's %v", got[0], home.PublicIP())
		}
		// The IPv4-only host has no way to IPv6.
		c1, cancel1 := within(time.Second)
		defer cancel1()
		if got, err := v4only.ProbeUDP(c1, v4only.Port(), srv(3478)); err == nil {
			t.Errorf("v4only reached %v over IPv6 (seen as %v)", srv(3478), got)
		}
	})

	punch := func(a, b *lab.Host, port int) (errA, errB error) {
		c, cancel := within(5 * time.Second)
		defer cancel()
		ch := make(chan error, 1)
		go func() {
			_, err := b.ProbePunch(c, port, netip.AddrPortFrom(a.IP6(), uint16(port)))
			ch <- err
		}()
		heard, errA := a.ProbePunch(c, port, netip.AddrPortFrom(b.IP6(), uint16(port)))
		errB = <-ch
		if errA == nil && heard.Addr() != b.IP6() {
			errA = errors.New("heard " + heard.String() + ", not " + b.IP6().String())
		}
		return errA, errB
	}
	t.Run("simultaneous-open", func(t *testing.T) {
		if ea, eb := punch(home, home2, home.Port()+4); ea != nil || eb != nil {
			t.Fatalf("home ↔ home2 simultaneous open over IPv6: %v / %v", ea, eb)
		}
		// The backbone routes the sites' prefixes; blocking the pair cuts
		// the IPv6 path too.
		blk, err := l.BlockPath(home, home2)
		if err != nil {
			t.Fatal(err)
		}
		if ea, eb := punch(home, home2, home.Port()+5); ea == nil || eb == nil {
			t.Errorf("home ↔ home2 punched through a BlockPath: %v / %v", ea, eb)
		}
		if err := blk.Remove(); err != nil {
			t.Fatal(err)
		}
		if ea, eb := punch(home, home2, home.Port()+6); ea != nil || eb != nil {
			t.Errorf("home ↔ home2 after the block was removed: %v / %v", ea, eb)
		}
	})
}

// runIn runs argv in the namespace called ns and returns its trimmed output.
func runIn(ctx context.Context, ns string, argv ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
