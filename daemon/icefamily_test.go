package daemon

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

// TestICEPortFamilies: by default (ice.ipv6 = true) the ICE port opens on
// both families (one socket each, IPv4 alone on a host without IPv6);
// ice.ipv6 = false keeps it on IPv4, and netcheck says why.
func TestICEPortFamilies(t *testing.T) {
	testutil.LeakCheck(t)
	hostV6 := true
	if c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback}); err != nil {
		hostV6 = false
	} else {
		_ = c.Close()
	}
	m := newTestMesh(t)
	for i, ipv6 := range []bool{true, false} {
		n := m.node(t, []string{"dual", "four"}[i], byte(i+1), nodeSpec{})
		cfg := mustLoad(t, m.config(t, n, confSpec{coordinator: true}))
		cfg.ICE.IPv6 = ipv6
		tu := testTuning()
		tu.ICEListenAddr = netip.Addr{} // what the configuration says
		logger, lv, _ := newLogCapture(t, n.name)
		d, err := New(cfg, Options{Logger: logger, LogLevel: lv, Version: "test", Tuning: tu})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		v4, v6, why := d.tm.Families()
		if !v4 || v6 != (ipv6 && hostV6) {
			t.Errorf("ice.ipv6 = %v: families v4 %v v6 %v (%v), want v6 %v", ipv6, v4, v6, why, ipv6 && hostV6)
		}
		if c := d.ipv6Check(nil); c.Enabled != v6 || (!ipv6 && c.Reason != "ice.ipv6 = false") {
			t.Errorf("ice.ipv6 = %v: netcheck says %+v", ipv6, c)
		}
		_ = d.Close()
	}
}

// TestAddrFamily: peers --json names the family of a link's pair; an
// IPv4-mapped address is IPv4.
func TestAddrFamily(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.1": "ipv4", "::ffff:192.0.2.1": "ipv4", "2001:db8::1": "ipv6", "": ""} {
		var a netip.Addr
		if in != "" {
			a = netip.MustParseAddr(in)
		}
		if got := addrFamily(a); got != want {
			t.Errorf("addrFamily(%q) = %q, want %q", in, got, want)
		}
	}
}
