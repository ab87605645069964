//go:build e2e

package scenarios

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// TestSubnetRoute: node gw advertises its office LAN ([routes] advertise
// and forward, certificate --subnets); the LAN's printer runs no meshd and
// has a return route for the overlay via gw (the alternative, MASQUERADE on
// gw, would hide the overlay source). laptop, which accepts the subnet,
// reaches the printer through the overlay (ping and a TCP transfer);
// other, which does not accept it, has no route to it.
func TestSubnetRoute(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true})
	office := l.AddSite(t, "office", lab.SiteOptions{NAT: lab.NATPortRestricted})
	lan := office.LAN().String()
	gw := m.addNode(office.AddHost(t, "gw", lab.HostOptions{}), nodeOpts{
		join:    []*node{coord},
		subnets: []string{lan},
		extra:   fmt.Sprintf("[routes]\nadvertise = [%q]\nforward = true\n", lan),
	})
	printer := office.AddHost(t, "printer", lab.HostOptions{})
	laptop := m.addNode(l.AddNode(t, "laptop", lab.NATFullCone, lab.HostOptions{}), nodeOpts{
		join:  []*node{coord},
		extra: fmt.Sprintf("[routes]\naccept = [%q]\n", lan),
	})
	other := m.addNode(l.AddNode(t, "other", lab.NATFullCone, lab.HostOptions{}), nodeOpts{join: []*node{coord}})
	ctx := context.Background()
	if out, err := printer.Run(ctx, "ip", "route", "add", "100.64.0.0/10", "via", gw.host.IP().String()); err != nil {
		t.Fatalf("return route on the printer: %v: %s", err, out)
	}
	if _, err := printer.StartWith(lab.ProcOptions{Label: "sink"}, m.tool, "sink", "-listen", fmt.Sprintf("0.0.0.0:%d", sinkPort)); err != nil {
		t.Fatal(err)
	}
	lab.WaitListening(t, 5*time.Second, printer.Namespace, "tcp", sinkPort)

	for _, n := range []*node{coord, gw, laptop, other} {
		n.start()
	}
	for _, n := range []*node{coord, gw, laptop, other} {
		n.waitSession(t, sessionTimeout)
	}
	p := mustPeer(t, laptop, "gw", isOnline, linkTimeout, "up")
	if !slices.Contains(p.Subnets, office.LAN()) {
		t.Errorf("laptop: peers --json lists gw's subnets as %v, want %v", p.Subnets, office.LAN())
	}
	mustPeer(t, other, "gw", isOnline, linkTimeout, "up")

	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, linkTimeout+10*time.Second)
	at, err := firstReply(cctx, laptop.host.Namespace, printer.IP(), linkTimeout)
	cancel()
	if err != nil {
		t.Fatalf("laptop cannot ping the printer %v behind gw: %v", printer.IP(), err)
	}
	t.Logf("laptop → printer %v (a LAN host behind gw, no meshd) answers ping after %v", printer.IP(), at.Sub(start).Round(time.Millisecond))
	sent, recv, out, err := ping(ctx, laptop.host.Namespace, printer.IP(), 5)
	if err != nil || recv != sent {
		t.Errorf("laptop → printer: %d/%d replies (%v)\n%s", recv, sent, err, out)
	}
	r, err := send(ctx, laptop.host.Namespace, m.tool, printer.IP(), 1<<20, 0, 20*time.Second)
	if err != nil {
		t.Errorf("laptop → printer TCP: %v", err)
	} else {
		t.Logf("laptop → printer: 1 MiB over TCP through gw intact in %v", r.Duration.Round(time.Millisecond))
	}
	route, _ := laptop.host.Run(ctx, "ip", "route", "get", printer.IP().String())
	t.Logf("laptop: ip route get %v: %s", printer.IP(), route)

	// other does not accept the subnet: no route into the overlay for it.
	sent, recv, out, _ = ping(ctx, other.host.Namespace, printer.IP(), 3)
	if recv != 0 {
		t.Errorf("other (routes.accept empty) reaches the printer: %d/%d replies\n%s", recv, sent, out)
	}
	if r, _ := other.host.Run(ctx, "ip", "route", "get", printer.IP().String()); containsDev(r, "meshd0") {
		t.Errorf("other routes %v into the overlay although it accepts no subnet: %s", printer.IP(), r)
	}
	for _, n := range []*node{coord, gw, laptop, other} {
		n.alive(t)
	}
}

// containsDev reports whether `ip route get` output routes via dev.
func containsDev(route, dev string) bool { return strings.Contains(route, " dev "+dev+" ") }
