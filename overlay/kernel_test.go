package overlay_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// enterNetns moves the test goroutine, locked to its thread, into a new
// network namespace, and back at cleanup; the namespace disappears with its
// last reference.
func enterNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		err := netns.Set(orig)
		ns.Close()
		orig.Close()
		if err != nil {
			// Leave the thread locked: Go discards it when the goroutine
			// ends instead of reusing a thread in the wrong namespace.
			t.Errorf("restore netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	})
}

func readSysctl(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func hasRoute(t *testing.T, link netlink.Link, dst string) bool {
	t.Helper()
	routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == dst {
			return true
		}
	}
	return false
}

func hasRoute6(t *testing.T, link netlink.Link, dst string) bool {
	t.Helper()
	routes, err := netlink.RouteList(link, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == dst {
			return true
		}
	}
	return false
}

// TestKernelTUN runs the kernel TUN in a private network namespace against a
// userspace peer: the kernel's own TCP (with TSO/GRO through the
// virtio-net header) talks to the peer's netstack through the overlay.
func TestKernelTUN(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.LeakCheck(t)
	enterNetns(t)

	const dev = "meshtest0"
	k, err := overlay.New(overlay.Options{Mode: overlay.ModeKernel, Name: dev, MTU: 1400, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New(kernel): %v", err)
	}
	t.Cleanup(func() { k.Close() })
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := newUNode(t, "b", addrB)
	kb, bk := pipe(t, true)
	kcfg := overlay.Config{
		Addresses:    []netip.Prefix{meshAddr(addrA), meshAddr(addrA6)},
		Peers:        []overlay.PeerConfig{{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB), host(addrB6), pfx("10.7.0.0/24"), pfx("fd00:7::/64")}, Conn: kb}},
		LocalSubnets: []netip.Prefix{pfx("192.168.50.0/24")},
		Forwarding:   true,
	}
	fwdBefore := readSysctl(t, "/proc/sys/net/ipv4/ip_forward")
	reconfig(t, k, kcfg)
	reconfig(t, b.ifc, overlay.Config{
		Addresses: []netip.Prefix{meshAddr(addrB)},
		Peers:     []overlay.PeerConfig{{Name: "a", AllowedPrefixes: []netip.Prefix{host(addrA)}, Conn: bk}},
		Firewall:  sshOnly,
	})
	echoServer(t, b, 7)

	// The device, its address and routes are in place.
	link, err := netlink.LinkByName(dev)
	if err != nil {
		t.Fatalf("device %s: %v", dev, err)
	}
	if link.Attrs().MTU != 1400 || link.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("device attrs: mtu %d flags %v", link.Attrs().MTU, link.Attrs().Flags)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "100.64.0.1/10" {
		t.Fatalf("addresses %v (%v), want 100.64.0.1/10", addrs, err)
	}
	if !hasRoute(t, link, "10.7.0.0/24") || !hasRoute(t, link, "100.64.0.0/10") {
		t.Fatal("subnet or mesh route missing")
	}
	addrs6, err := netlink.AddrList(link, netlink.FAMILY_V6)
	found6 := false
	for _, a := range addrs6 {
		found6 = found6 || a.IPNet.String() == "fd7a:115c:a1e0::1/48"
	}
	if err != nil || !found6 {
		t.Fatalf("IPv6 addresses %v (%v), want fd7a:115c:a1e0::1/48", addrs6, err)
	}
	if !hasRoute6(t, link, "fd00:7::/64") || !hasRoute6(t, link, "fd7a:115c:a1e0::/48") {
		t.Fatal("IPv6 subnet or mesh route missing")
	}
	if got := readSysctl(t, "/proc/sys/net/ipv4/ip_forward"); got != "1" {
		t.Fatalf("ip_forward = %s with forwarding on", got)
	}

	// Kernel TCP through the overlay to b's netstack: 1 MiB echoed back.
	c, err := net.DialTimeout("tcp", "100.64.0.2:7", 10*time.Second)
	if err != nil {
		t.Fatalf("kernel dial through the overlay: %v", err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := c.Write(data); err != nil {
			t.Errorf("write: %v", err)
		}
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	wg.Wait()
	c.Close()
	if err != nil || len(got) != len(data) || string(got) != string(data) {
		t.Fatalf("echo: %d of %d bytes, %v", len(got), len(data), err)
	}

	// No route: the kernel gets ICMP host unreachable and fails at once.
	start := time.Now()
	_, err = net.DialTimeout("tcp", "100.64.0.99:7", 10*time.Second)
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("dial to 100.64.0.99: %v, want EHOSTUNREACH", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("no-route dial took %v", d)
	}
	// Over IPv6 the kernel must accept our ICMPv6 (checksum with the
	// pseudo-header) to fail the same way.
	start = time.Now()
	_, err = net.DialTimeout("tcp", "[fd7a:115c:a1e0::99]:7", 10*time.Second)
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Fatalf("dial to fd7a:115c:a1e0::99: %v, want EHOSTUNREACH", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("no-route IPv6 dial took %v", d)
	}

	// Reconfig removes what is no longer wanted: the subnet route and
	// forwarding.
	kcfg2 := kcfg
	kcfg2.Peers = []overlay.PeerConfig{{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB), host(addrB6)}, Conn: kb}}
	kcfg2.Forwarding = false
	reconfig(t, k, kcfg2)
	if hasRoute(t, link, "10.7.0.0/24") || hasRoute6(t, link, "fd00:7::/64") {
		t.Fatal("subnet route left after Reconfig removed it")
	}
	if got := readSysctl(t, "/proc/sys/net/ipv4/ip_forward"); got != fwdBefore {
		t.Fatalf("ip_forward = %s after forwarding off, want the original %s", got, fwdBefore)
	}

	if err := k.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := netlink.LinkByName(dev); err == nil {
		t.Fatal("device still exists after Close")
	}
	s := k.Stats()
	if s.PacketsOut == 0 || s.PacketsIn == 0 || s.Drops.NoRoute == 0 || s.ICMPSent == 0 {
		t.Fatalf("stats %+v", s)
	}
	t.Logf("kernel overlay stats: %+v", s)
}
