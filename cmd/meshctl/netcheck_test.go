package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
)

func sampleNetcheck() control.Netcheck {
	return control.Netcheck{
		UDP: true,
		STUN: []control.STUNProbe{
			{Server: "198.51.100.10:3478", Reflexive: ap("203.0.113.9:40000"), Latency: 12 * time.Millisecond},
			{Server: "198.51.100.11:3478", Reflexive: ap("203.0.113.9:40001"), Latency: 20 * time.Millisecond},
			{Server: "stun.example.net:3478", Error: "no answer in 3s"},
		},
		MappingVariesByDest: true, NAT: control.NATAddressPortDependent,
		Latencies: []control.ServerLatency{
			{Name: "coord-a", Kind: control.ServerCoordinator, Address: "198.51.100.10:7000", Latency: 12 * time.Millisecond},
			{Name: "coord-b", Kind: control.ServerCoordinator, Address: "198.51.100.11:7000", Latency: 31500 * time.Microsecond},
			{Name: "turn-a", Kind: control.ServerRelay, Address: "198.51.100.20:3478", Error: "timeout"},
		},
		Verdict: "This node is behind a hard NAT: direct paths to other NATed nodes will go through a relay.",
		Interfaces: []control.InterfaceUse{
			{Name: "eth0", Used: true, Reason: "carries the default route", Addresses: []netip.Addr{netip.MustParseAddr("192.168.1.20")}},
			{Name: "wg0", Reason: "tunnel device (tuntap): another VPN or overlay"},
			{Name: "docker0", Reason: "bridge without the default route (container or VM network)"},
		},
		IPv6: control.IPv6Check{Enabled: true, STUN: true, Addresses: []control.AddressUse{
			{Address: netip.MustParseAddr("2001:db8:1::20"), Interface: "eth0", Used: true, Reason: "offered"},
			{Address: netip.MustParseAddr("2001:db8:1::9f3a:1"), Interface: "eth0", Reason: "temporary (privacy) address; the stable one is offered"},
			{Address: netip.MustParseAddr("fe80::20"), Interface: "eth0", Reason: "link-local (needs a zone, reaches only the link)"},
		}},
	}
}

func TestRenderNetcheckGolden(t *testing.T) {
	nc := sampleNetcheck()
	var b bytes.Buffer
	if err := renderNetcheck(&b, &nc); err != nil {
		t.Fatal(err)
	}
	want := `UDP             works
public address  203.0.113.9:40000 (seen by 198.51.100.10:3478 in 12.0ms)
                203.0.113.9:40001 (seen by 198.51.100.11:3478 in 20.0ms)
                stun.example.net:3478: no answer in 3s
port mapping    varies by destination (hard NAT)
NAT             address-and-port-dependent (hard: direct paths to other NATed nodes need the relay)
coordinators    coord-a (198.51.100.10:7000) in 12.0ms
                coord-b (198.51.100.11:7000) in 31.5ms
relays          turn-a (198.51.100.20:3478): timeout
interfaces      eth0 used: carries the default route
                wg0 skipped: tunnel device (tuntap): another VPN or overlay
                docker0 skipped: bridge without the default route (container or VM network)
ipv6            on; a STUN server answered over IPv6
                2001:db8:1::20 on eth0 offered
                2001:db8:1::9f3a:1 on eth0 skipped: temporary (privacy) address; the stable one is offered
                fe80::20 on eth0 skipped: link-local (needs a zone, reaches only the link)

This node is behind a hard NAT: direct paths to other NATed nodes will go through a relay.
`
	if got := b.String(); got != want {
		t.Errorf("netcheck output:\n%s\nwant:\n%s", got, want)
	}

	blocked := control.Netcheck{NAT: control.NATUDPBlocked, STUN: []control.STUNProbe{{Server: "198.51.100.10:3478", Error: "timeout"}}}
	b.Reset()
	if err := renderNetcheck(&b, &blocked); err != nil {
		t.Fatal(err)
	}
	want = `UDP             blocked: no STUN server answered over UDP
public address  198.51.100.10:3478: timeout
NAT             UDP blocked (no STUN answers: no direct paths)
`
	if got := b.String(); got != want {
		t.Errorf("netcheck output without UDP:\n%s\nwant:\n%s", got, want)
	}
}

// One STUN destination answered: netcheck must not claim a mapping
// behaviour it compared with nothing.
func TestRenderNetcheckOneDestination(t *testing.T) {
	nc := control.Netcheck{UDP: true, NAT: control.NATUnknown,
		STUN: []control.STUNProbe{{Server: "stun:198.51.100.10:3478", Reflexive: ap("203.0.113.9:51820"), Latency: time.Millisecond}}}
	var b bytes.Buffer
	if err := renderNetcheck(&b, &nc); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "port mapping    unknown (fewer than two STUN destinations answered)") || strings.Contains(out, "same for every destination") {
		t.Errorf("netcheck output:\n%s", out)
	}
}

func TestNetcheckCommand(t *testing.T) {
	h := newHarness(t)
	h.b.SetNetcheck(sampleNetcheck())
	out, err := h.run(t, "netcheck")
	if err != nil || out == "" {
		t.Fatalf("netcheck: %v\n%s", err, out)
	}
	out, err = h.run(t, "netcheck", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var nc control.Netcheck
	if err := control.Decode([]byte(out), &nc); err != nil || !nc.MappingVariesByDest || len(nc.STUN) != 3 || nc.Latencies[1].Latency != 31500*time.Microsecond ||
		len(nc.Interfaces) != 3 || !nc.Interfaces[0].Used || nc.Interfaces[1].Used || nc.Interfaces[1].Reason == "" ||
		!nc.IPv6.Enabled || !nc.IPv6.STUN || len(nc.IPv6.Addresses) != 3 || nc.IPv6.Addresses[1].Used {
		t.Errorf("netcheck --json: %v, %+v", err, nc)
	}
}
