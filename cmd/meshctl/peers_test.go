package main

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
)

// tableNames returns the first cell of each row of the table under header.
func tableNames(out string) []string {
	var names []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, "NAME "):
			in = true
		case in && l == "":
			return names
		case in:
			names = append(names, strings.Fields(l)[0])
		}
	}
	return names
}

func TestPeersSortAndFilter(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	peers := samplePeers(now)
	peers = append(peers, control.Peer{Name: "alpha", Address: addr("100.64.0.5"), Online: true,
		State: control.LinkUp, Path: control.PathDirect, Endpoint: ap("192.0.2.7:51820"), RTT: 9 * time.Millisecond,
		RxBytes: 10 << 20, TxBytes: 1})
	h.b.SetPeers(peers)

	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"peers"}, []string{"alpha", "laptop", "nas", "vps"}},
		{[]string{"peers", "--sort", "rtt"}, []string{"nas", "alpha", "vps", "laptop"}},
		{[]string{"peers", "--sort", "rx"}, []string{"nas", "alpha", "vps", "laptop"}},
		{[]string{"peers", "--sort", "tx"}, []string{"nas", "vps", "alpha", "laptop"}},
		{[]string{"peers", "--sort", "state"}, []string{"alpha", "nas", "vps", "laptop"}},
		{[]string{"peers", "--online"}, []string{"alpha", "nas", "vps"}},
		{[]string{"peers", "--relay"}, []string{"vps"}},
		{[]string{"peers", "--direct", "--sort", "rtt"}, []string{"nas", "alpha"}},
		{[]string{"peers", "--direct", "--relay"}, []string{"alpha", "nas", "vps"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := h.run(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if got := tableNames(out); !slices.Equal(got, tt.want) {
				t.Errorf("rows %v, want %v\n%s", got, tt.want, out)
			}
			checkAligned(t, out, "NAME")
		})
	}

	out, err := h.run(t, "peers", "--relay", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var pl control.PeerList
	if err := control.Decode([]byte(out), &pl); err != nil {
		t.Fatalf("peers --json does not decode: %v\n%s", err, out)
	}
	if len(pl.Peers) != 1 || pl.Peers[0].Name != "vps" || pl.Peers[0].Relay != "198.51.100.20:3478" {
		t.Errorf("peers --relay --json: %+v", pl.Peers)
	}

	_, err = h.run(t, "peers", "--sort", "bogus")
	if exitCode(err) != 2 || !strings.Contains(err.Error(), `--sort "bogus"`) {
		t.Errorf("peers --sort bogus: %v (exit %d), want a usage error", err, exitCode(err))
	}

	h.b.SetPeers(nil)
	if out, err := h.run(t, "peers"); err != nil || out != "no peers yet\n" {
		t.Errorf("peers with none: %q, %v", out, err)
	}
}

func samplePeerWhy() control.PeerWhy {
	return control.PeerWhy{
		Peer: "vps", Address: addr("100.64.0.3"), State: control.LinkUp, Path: control.PathRelay,
		Pairs: []control.CandidatePair{
			{Local: control.Candidate{Type: control.CandidateHost, Address: "10.0.0.2:51820"},
				Remote: control.Candidate{Type: control.CandidateSrflx, Address: "198.51.100.77:40001"},
				State:  "failed", LastError: "no response to connectivity checks"},
			{Local: control.Candidate{Type: control.CandidateRelay, Address: "198.51.100.20:50000"},
				Remote: control.Candidate{Type: control.CandidateSrflx, Address: "198.51.100.77:40000"},
				State:  "succeeded", Nominated: true, RTT: 42 * time.Millisecond},
		},
		LocalNAT: control.NATEndpointIndependent, RemoteNAT: control.NATAddressPortDependent,
		Explanation: "vps is behind a NAT that maps each destination to a new port, so no direct pair succeeded; traffic goes through the relay",
	}
}

func TestRenderPeerWhyGolden(t *testing.T) {
	why := samplePeerWhy()
	var b bytes.Buffer
	if err := renderPeerWhy(&b, &why); err != nil {
		t.Fatal(err)
	}
	want := `peer        vps (100.64.0.3)
state       up, path relay
NAT here    endpoint-independent (easy: direct paths work)
NAT at vps  address-and-port-dependent (hard: direct paths to other NATed nodes need the relay)

LOCAL                      REMOTE                     STATE      NOMINATED  RTT     ERROR
host 10.0.0.2:51820        srflx 198.51.100.77:40001  failed     no         -       no response to connectivity checks
relay 198.51.100.20:50000  srflx 198.51.100.77:40000  succeeded  yes        42.0ms  -

why: vps is behind a NAT that maps each destination to a new port, so no direct pair succeeded; traffic goes through the relay
`
	if got := b.String(); got != want {
		t.Errorf("peers --why output:\n%s\nwant:\n%s", got, want)
	}
}

func TestPeersWhyCommand(t *testing.T) {
	h := newHarness(t)
	h.b.SetPeerWhy(samplePeerWhy())
	out, err := h.run(t, "peers", "--why", "vps")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "relay 198.51.100.20:50000") || !strings.Contains(out, "why: vps is behind") {
		t.Errorf("peers --why vps:\n%s", out)
	}
	checkAligned(t, out, "LOCAL")

	out, err = h.run(t, "peers", "--why", "vps", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var why control.PeerWhy
	if err := control.Decode([]byte(out), &why); err != nil || len(why.Pairs) != 2 || !why.Pairs[1].Nominated {
		t.Errorf("peers --why --json: %v, %+v", err, why)
	}

	_, err = h.run(t, "peers", "--why", "ghost")
	if want := `no peer named "ghost" in the mesh (meshctl peers lists them)`; err == nil || err.Error() != want {
		t.Errorf("peers --why ghost: %v, want %q", err, want)
	}
}

func TestPeerTableSubnets(t *testing.T) {
	now := time.Date(2025, 3, 14, 15, 0, 0, 0, time.UTC)
	peers := samplePeers(now)
	peers[0].Subnets = []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("10.9.0.0/16")}
	var b bytes.Buffer
	if err := renderPeerTable(&b, peers, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "HANDSHAKE  SUBNETS") || !strings.Contains(out, "3m ago     192.168.1.0/24,10.9.0.0/16") {
		t.Errorf("peer table with a subnet router:\n%s", out)
	}
	checkAligned(t, out, "NAME")
}

// TestPeerTableMemberRelay: a link carried by a member relay shows the
// relay's node name in the table and in JSON.
func TestPeerTableMemberRelay(t *testing.T) {
	now := time.Date(2025, 3, 14, 15, 0, 0, 0, time.UTC)
	h := newHarness(t)
	peers := samplePeers(now)
	for i := range peers {
		if peers[i].Name == "vps" {
			peers[i].Relay, peers[i].RelayNode = "203.0.113.7:3479/udp", "relay-1"
		}
	}
	h.b.SetPeers(peers)
	out, err := h.run(t, "peers", "--relay")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "relay-1 (203.0.113.7:3479/udp)") {
		t.Errorf("member relay not named:\n%s", out)
	}
	checkAligned(t, out, "NAME")
	out, err = h.run(t, "peers", "--relay", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"relay_node": "relay-1"`) {
		t.Errorf("JSON lacks relay_node:\n%s", out)
	}
}
