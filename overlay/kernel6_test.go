package overlay_test

import (
	"context"
	"net/netip"
	"os"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/vishvananda/netlink"
)

// TestKernelTUNIPv6Disabled: on a host with IPv6 disabled, a node whose
// certificate carries an IPv6 overlay address still comes up, IPv4 only
// (addresses, routes and forwarding of IPv4 in place, nothing of IPv6),
// instead of failing its network setup. Every certificate a dual-stack CA
// signs has an IPv6 address, so this is any such node on such a host.
func TestKernelTUNIPv6Disabled(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.LeakCheck(t)
	enterNetns(t)
	// Devices created from now on in this namespace start with IPv6 off.
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1\n"), 0o644); err != nil {
		t.Skipf("cannot disable IPv6 in the namespace: %v", err)
	}
	const dev = "meshtest6"
	k, err := overlay.New(overlay.Options{Mode: overlay.ModeKernel, Name: dev, MTU: 1400, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("New(kernel): %v", err)
	}
	t.Cleanup(func() { k.Close() })
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	kb, _ := pipe(t, true)
	cfg := overlay.Config{
		Addresses:    []netip.Prefix{meshAddr(addrA), meshAddr(addrA6)},
		Peers:        []overlay.PeerConfig{{Name: "b", AllowedPrefixes: []netip.Prefix{host(addrB), host(addrB6), pfx("10.7.0.0/24"), pfx("fd00:7::/64")}, Conn: kb}},
		LocalSubnets: []netip.Prefix{pfx("192.168.50.0/24"), pfx("fd00:50::/64")},
		Forwarding:   true,
	}
	reconfig(t, k, cfg)
	// A changed Reconfig (what registry changes do) succeeds too.
	cfg.Peers[0].AllowedPrefixes = append(cfg.Peers[0].AllowedPrefixes, pfx("fd00:8::/64"))
	reconfig(t, k, cfg)
	link, err := netlink.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "100.64.0.1/10" {
		t.Fatalf("IPv4 addresses %v (%v), want 100.64.0.1/10", addrs, err)
	}
	if !hasRoute(t, link, "10.7.0.0/24") {
		t.Fatal("IPv4 subnet route missing")
	}
	if addrs6, _ := netlink.AddrList(link, netlink.FAMILY_V6); len(addrs6) != 0 {
		t.Fatalf("IPv6 addresses %v on a device with IPv6 disabled", addrs6)
	}
	if got := readSysctl(t, "/proc/sys/net/ipv6/conf/all/forwarding"); got != "0" {
		t.Errorf("IPv6 forwarding turned on (%s) although IPv6 is off", got)
	}
	if err := k.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
