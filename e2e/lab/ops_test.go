//go:build e2e

package lab_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// probeCtx bounds one probe that is expected to succeed.
func probeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustFailUDP asserts that a probe from h to target gets no reply within a
// second.
func mustFailUDP(t *testing.T, h *lab.Host, port int, target netip.AddrPort, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if got, err := h.ProbeUDP(ctx, port, target); !errors.Is(err, lab.ErrNoReply) {
		t.Fatalf("%s: probe %s -> %v got %v, err %v; want ErrNoReply", why, h.Name(), target, got, err)
	}
}

func mustUDP(t *testing.T, h *lab.Host, port int, target netip.AddrPort, why string) netip.AddrPort {
	t.Helper()
	got, err := h.ProbeUDP(probeCtx(t), port, target)
	if err != nil {
		t.Fatalf("%s: probe %s -> %v: %v", why, h.Name(), target, err)
	}
	return got[0]
}

// procState returns the state letter of /proc/PID/stat (R, S, T, ...).
func procState(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ...; comm may contain spaces, so cut after ')'.
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[0]
}

func TestPauseResume(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	srv := l.AddHost(t, "srv", lab.HostOptions{})
	cli := l.AddNode(t, "cli", lab.NATFullCone, lab.HostOptions{})
	target := netip.AddrPortFrom(srv.IP(), 7000)
	p, err := srv.StartProbeServer([]netip.AddrPort{target}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustUDP(t, cli, cli.Port(), target, "before pause")

	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	if st := procState(t, p.PID()); st != "T" {
		t.Errorf("paused server is in state %q, want T (stopped)", st)
	}
	mustFailUDP(t, cli, cli.Port(), target, "while paused")

	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	mustUDP(t, cli, cli.Port(), target, "after resume")
}

func TestCutAndRestore(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	stun := l.AddNATProbe(t, "stun")
	site := l.AddSite(t, "home", lab.SiteOptions{NAT: lab.NATPortRestrictedMasq})
	h := site.AddHost(t, "pc", lab.HostOptions{})
	peer := site.AddHost(t, "peer", lab.HostOptions{})
	lanTarget := netip.AddrPortFrom(peer.IP(), 7000)
	if _, err := peer.StartProbeServer([]netip.AddrPort{lanTarget}, nil); err != nil {
		t.Fatal(err)
	}
	mustUDP(t, h, h.Port(), stun.Primary, "before cut")

	// The host's own cable: nothing passes, not even on the LAN.
	if err := h.CutLink(); err != nil {
		t.Fatal(err)
	}
	mustFailUDP(t, h, h.Port(), stun.Primary, "host link cut")
	mustFailUDP(t, h, h.Port(), lanTarget, "host link cut, LAN peer")
	if err := h.RestoreLink(); err != nil {
		t.Fatal(err)
	}
	mustUDP(t, h, h.Port(), stun.Primary, "host link restored")

	// The site's uplink: the internet is gone, the LAN still works.
	if err := site.Router().CutUplink(); err != nil {
		t.Fatal(err)
	}
	mustFailUDP(t, h, h.Port(), stun.Primary, "uplink cut")
	mustUDP(t, h, h.Port()+2, lanTarget, "uplink cut, LAN peer")
	if err := site.Router().RestoreUplink(); err != nil {
		t.Fatal(err)
	}
	mustUDP(t, h, h.Port(), stun.Primary, "uplink restored")
}

func TestBlockPath(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	a := l.AddNode(t, "a", lab.NATFullCone, lab.HostOptions{})
	b := l.AddNode(t, "b", lab.NATFullCone, lab.HostOptions{})
	c := l.AddHost(t, "c", lab.HostOptions{})
	// b's static map forwards its port range to it, so a reaches b's
	// server at b's public address, as a peer would.
	bSrv := netip.AddrPortFrom(b.IP(), uint16(b.Port()+5))
	bPub := netip.AddrPortFrom(b.PublicIP(), uint16(b.Port()+5))
	cSrv := netip.AddrPortFrom(c.IP(), 7000)
	if _, err := b.StartProbeServer([]netip.AddrPort{bSrv}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StartProbeServer([]netip.AddrPort{cSrv}, nil); err != nil {
		t.Fatal(err)
	}
	mustUDP(t, a, a.Port(), bPub, "before block")

	blk, err := l.BlockPath(a, b)
	if err != nil {
		t.Fatal(err)
	}
	mustFailUDP(t, a, a.Port(), bPub, "a-b blocked")
	mustUDP(t, a, a.Port(), cSrv, "a-c while a-b blocked")
	if err := blk.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := blk.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	mustUDP(t, a, a.Port(), bPub, "after unblock")

	// Two hosts of one site: the block sits in their LAN bridge.
	site := l.AddSite(t, "lan", lab.SiteOptions{NAT: lab.NATPortRestricted})
	x := site.AddHost(t, "x", lab.HostOptions{})
	y := site.AddHost(t, "y", lab.HostOptions{})
	ySrv := netip.AddrPortFrom(y.IP(), 7000)
	if _, err := y.StartProbeServer([]netip.AddrPort{ySrv}, nil); err != nil {
		t.Fatal(err)
	}
	mustUDP(t, x, x.Port(), ySrv, "same LAN before block")
	blk, err = l.BlockPath(x, y)
	if err != nil {
		t.Fatal(err)
	}
	mustFailUDP(t, x, x.Port(), ySrv, "same LAN blocked")
	mustUDP(t, x, x.Port(), cSrv, "x to the internet while x-y blocked")
	if err := blk.Remove(); err != nil {
		t.Fatal(err)
	}
	mustUDP(t, x, x.Port(), ySrv, "same LAN unblocked")
}

// FlushNAT forgets mappings: behind --random-fully the next packet of the
// same flow gets a new external port, while without a flush it keeps its
// mapping.
func TestFlushNAT(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	stun := l.AddNATProbe(t, "stun")
	h := l.AddNode(t, "sym", lab.NATSymmetric, lab.HostOptions{})
	first := mustUDP(t, h, h.Port(), stun.Primary, "first")
	if again := mustUDP(t, h, h.Port(), stun.Primary, "again"); again != first {
		t.Fatalf("mapping changed without a flush: %v then %v", first, again)
	}
	// --random-fully may draw the same port again (p ≈ 1/28000); a second
	// flush makes a false failure practically impossible.
	var after netip.AddrPort
	for i := 0; i < 2; i++ {
		if err := h.Site().FlushNAT(); err != nil {
			t.Fatal(err)
		}
		if after = mustUDP(t, h, h.Port(), stun.Primary, "after flush"); after != first {
			break
		}
	}
	if after == first {
		t.Fatalf("FlushNAT kept the mapping %v", first)
	}
	t.Logf("mapping %v -> %v after flush", first, after)
}

func TestReaddress(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	stun := l.AddNATProbe(t, "stun")
	h := l.AddNode(t, "pc", lab.NATFullCone, lab.HostOptions{})
	ctx := probeCtx(t)

	// LAN renumbering: the static map follows the host.
	oldIP := h.IP()
	newIP, err := h.Readdress(netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if newIP == oldIP || h.IP() != newIP || !h.Site().LAN().Contains(newIP) {
		t.Fatalf("Readdress: %v -> %v (IP() %v)", oldIP, newIP, h.IP())
	}
	out, err := h.Run(ctx, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, newIP.String()+"/") || strings.Contains(out, oldIP.String()+"/") {
		t.Fatalf("eth0 after readdress %v -> %v:\n%s", oldIP, newIP, out)
	}
	b, err := stun.Measure(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if b.Mapping != lab.MappingEndpointIndependent || b.Filtering != lab.FilteringEndpointIndependent ||
		b.Mapped[0] != netip.AddrPortFrom(h.PublicIP(), uint16(h.Port())) {
		t.Fatalf("full cone after LAN readdress: %v", b)
	}

	// ISP renumbering of the router's WAN.
	oldWAN := h.PublicIP()
	newWAN, err := h.Site().Router().ReaddressWAN(netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if newWAN == oldWAN || h.PublicIP() != newWAN {
		t.Fatalf("ReaddressWAN: %v -> %v, PublicIP %v", oldWAN, newWAN, h.PublicIP())
	}
	if got := mustUDP(t, h, h.Port(), stun.Primary, "after WAN readdress"); got != netip.AddrPortFrom(newWAN, uint16(h.Port())) {
		t.Fatalf("seen as %v after WAN readdress, want %v:%d", got, newWAN, h.Port())
	}

	// A public host moves too; a fixed address outside the backbone or in
	// use is refused.
	pub := l.AddHost(t, "pub", lab.HostOptions{})
	want := netip.MustParseAddr("198.51.100.200")
	if got, err := pub.Readdress(want); err != nil || got != want {
		t.Fatalf("Readdress(%v) = %v, %v", want, got, err)
	}
	if got := mustUDP(t, pub, pub.Port(), stun.Primary, "public host readdressed"); got.Addr() != want {
		t.Fatalf("public host seen as %v, want %v", got, want)
	}
	for _, bad := range []netip.Addr{netip.MustParseAddr("192.0.2.1"), stun.Host.IP()} {
		if _, err := pub.Readdress(bad); !errors.Is(err, lab.ErrNoAddress) {
			t.Errorf("Readdress(%v) err = %v, want ErrNoAddress", bad, err)
		}
	}
}

// Conntrack timeouts are per router: a short UDP timeout on one NAT makes
// its idle mapping expire (and --random-fully then picks a new port) while
// another router keeps the kernel defaults.
func TestConntrackTimeouts(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	stun := l.AddNATProbe(t, "stun")
	h := l.AddNode(t, "sym", lab.NATSymmetric, lab.HostOptions{})
	other := l.AddNode(t, "other", lab.NATSymmetric, lab.HostOptions{})
	r := h.Site().Router()
	before, err := other.Site().Router().ConntrackTimeouts()
	if err != nil {
		t.Fatal(err)
	}
	want := lab.ConntrackTimeouts{UDP: time.Second, UDPStream: 2 * time.Second, TCPEstablished: time.Hour}
	if err := r.SetConntrackTimeouts(want); err != nil {
		t.Fatal(err)
	}
	got, err := r.ConntrackTimeouts()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("timeouts read back %+v, want %+v", got, want)
	}
	if after, err := other.Site().Router().ConntrackTimeouts(); err != nil || after != before || after.UDP == want.UDP {
		t.Fatalf("other router's timeouts %+v (before %+v, err %v): not per namespace", after, before, err)
	}

	first := mustUDP(t, h, h.Port(), stun.Primary, "first")
	port := fmt.Sprint(h.Port())
	lab.WaitOutput(t, 10*time.Second, r.Namespace, func(out string) bool {
		return strings.Contains(out, "0 flow entries")
	}, "conntrack", "-L", "-p", "udp", "--orig-port-src", port)
	var next netip.AddrPort
	for i := 0; i < 2; i++ { // see TestFlushNAT on repeated random ports
		if next = mustUDP(t, h, h.Port(), stun.Primary, "after expiry"); next != first {
			break
		}
		if err := r.FlushNAT(); err != nil {
			t.Fatal(err)
		}
	}
	if next == first {
		t.Fatalf("mapping %v survived its conntrack timeout", first)
	}
	if err := r.SetConntrackTimeouts(lab.ConntrackTimeouts{UDP: -time.Second}); !errors.Is(err, lab.ErrBadOption) {
		t.Errorf("negative timeout: err = %v, want ErrBadOption", err)
	}
}

func TestProcStop(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	h := l.AddHost(t, "box", lab.HostOptions{})

	p, err := h.Start("sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	err = p.Stop()
	var ee interface{ Sys() any }
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("Stop of sleep: %v, want death by SIGTERM", err)
	}
	if !p.Exited() {
		t.Fatal("Stop returned before the process exited")
	}

	// A process group that ignores SIGTERM is SIGKILLed after StopTimeout.
	stubborn, err := h.StartWith(lab.ProcOptions{Label: "stubborn", StopTimeout: 200 * time.Millisecond},
		lab.Build(t, "github.com/meshd/meshd/e2e/internal/cmd/stubborn"))
	if err != nil {
		t.Fatal(err)
	}
	stubborn.WaitOutput(t, 5*time.Second, "started", func(out, _ string) bool { return strings.Contains(out, "started") })
	var pids []int
	testutil.WaitFor(t, 5*time.Second, "stubborn and its child in the namespace", func() bool {
		pids, err = h.Pids()
		return err == nil && len(pids) == 2
	})
	start := time.Now()
	err = stubborn.Stop()
	if ws, ok := exitSignal(err); !ok || ws != syscall.SIGKILL {
		t.Fatalf("Stop of a TERM-ignoring process: %v, want death by SIGKILL", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("SIGKILL came after %v, before StopTimeout", d)
	}
	testutil.WaitFor(t, 5*time.Second, "the child to die with its group", func() bool {
		left, err := h.Pids()
		return err == nil && len(left) == 0
	})
	if !strings.Contains(stubborn.Stdout(), "started") {
		t.Errorf("stdout file lost output: %q", stubborn.Stdout())
	}
}

func exitSignal(err error) (syscall.Signal, bool) {
	var ee interface{ Sys() any }
	if !errors.As(err, &ee) {
		return 0, false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}
