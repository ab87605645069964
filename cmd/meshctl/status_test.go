package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
)

var statusNow = time.Date(2025, 3, 14, 15, 0, 0, 0, time.UTC)

func sampleStatus(now time.Time, certDays int) *control.Status {
	peers := samplePeers(now)
	st := &control.Status{
		SchemaVersion: 1,
		Name:          "laptop", Address: addr("100.64.0.1"), Address6: addr("fd7a:115c:a1e0::1"),
		Version: "1.2.3", Uptime: 3*time.Hour + 12*time.Minute + 5*time.Second,
		Cert: control.CertStatus(control.CertInfo{NotAfter: now.Add(time.Duration(certDays)*24*time.Hour + time.Hour)}, now),
		Coordinator: control.CoordinatorInfo{State: control.SessionConnected, Name: "coord-a",
			Address: "198.51.100.10:7000", Since: now.Add(-2*time.Hour - 13*time.Minute)},
		PublicEndpoints: []netip.AddrPort{ap("203.0.113.9:51820")},
		NAT:             control.NATEndpointIndependent,
		PeerCounts:      control.CountPeers(peers),
		Peers:           peers,
		Drops:           map[string]uint64{"no_route": 3, "firewall": 12},
	}
	return st
}

func TestRenderStatusGolden(t *testing.T) {
	var b bytes.Buffer
	if err := renderStatus(&b, sampleStatus(statusNow, 9), statusNow); err != nil {
		t.Fatal(err)
	}
	want := `WARNING: Certificate expires in 9 days (2025-03-23); renew it before then
         (meshctl cert request on this node, meshctl cert sign on the CA machine)

node         laptop  100.64.0.1, fd7a:115c:a1e0::1
meshd        1.2.3, up 3h12m
coordinator  connected to coord-a (198.51.100.10:7000) for 2h13m
NAT          endpoint-independent (easy: direct paths work); public 203.0.113.9:51820
certificate  EXPIRES IN 9 DAYS (2025-03-23)
peers        2 online / 1 direct / 1 relay (3 known)
drops        firewall 12, no_route 3

NAME    ADDRESS     STATE   PATH                 VIA                 RTT     RX       TX       HANDSHAKE
laptop  100.64.0.4  failed  -                    -                   -       0 B      0 B      2d ago
nas     100.64.0.2  up      direct (host/srflx)  203.0.113.5:51820   1.2ms   3.0 GiB  5.5 MiB  3m ago
vps     100.64.0.3  up      relay                198.51.100.20:3478  42.0ms  2.0 KiB  700 B    45s ago

last errors:
  laptop  ice: no candidate pair succeeded
`
	if got := b.String(); got != want {
		t.Errorf("status output:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderStatusStates(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(*control.Status)
		want   []string
		reject []string
	}{
		{"healthy cert is quiet", func(st *control.Status) {
			st.Cert = control.CertStatus(control.CertInfo{NotAfter: statusNow.Add(200*24*time.Hour + time.Hour)}, statusNow)
		}, []string{"certificate  valid until 2025-09-30 (200 days left)"}, []string{"WARNING", "EXPIRES"}},
		{"expired cert", func(st *control.Status) {
			st.Cert = control.CertStatus(control.CertInfo{NotAfter: statusNow.Add(-2 * time.Hour)}, statusNow)
		}, []string{"WARNING: Certificate expired on 2025-03-14", "certificate  EXPIRED on 2025-03-14"}, nil},
		{"coordinator lost", func(st *control.Status) {
			st.Coordinator = control.CoordinatorInfo{State: control.SessionDisconnected,
				Since: statusNow.Add(-5 * time.Minute), LastError: "dial tcp 198.51.100.10:7000: connection refused"}
		}, []string{"coordinator  DISCONNECTED since 5m ago (last error: dial tcp 198.51.100.10:7000: connection refused)"}, nil},
		{"identity conflict", func(st *control.Status) {
			st.Coordinator = control.CoordinatorInfo{State: control.SessionConnecting, Name: "", Address: "198.51.100.10:7000",
				LastError: "discovery: coordinator 198.51.100.10:7000 refused the session: duplicate identity: ...",
				Conflict:  "another host at 192.0.2.7:41234 is using this node's identity (refused by coordinator coord-a)"}
		}, []string{
			"WARNING: Another host at 192.0.2.7:41234 is using this node's identity (refused by coordinator coord-a)\n" +
				"         (a cloned machine? each host needs its own key and certificate: meshctl cert request on one of the two, meshctl cert sign on the CA machine)\n\n" +
				"node ",
			"coordinator  REFUSED: another host at 192.0.2.7:41234 is using this node's identity (refused by coordinator coord-a)\n",
		}, []string{"(last error:", "connecting to"}},
		{"no conflict, no refusal line", func(st *control.Status) {}, nil, []string{"REFUSED", "identity"}},
		{"coordinator failing over", func(st *control.Status) {
			st.Coordinator = control.CoordinatorInfo{State: control.SessionConnecting, Name: "coord-b", Address: "198.51.100.11:7000"}
		}, []string{"coordinator  connecting to coord-b (198.51.100.11:7000)"}, nil},
		{"hard NAT", func(st *control.Status) { st.NAT = control.NATAddressPortDependent },
			[]string{"NAT          address-and-port-dependent (hard: direct paths to other NATed nodes need the relay)"}, nil},
		{"no peers", func(st *control.Status) { st.Peers, st.PeerCounts = nil, control.PeerCounts{} },
			[]string{"peers        0 online / 0 direct / 0 relay (0 known)"}, []string{"NAME"}},
		{"no drops", func(st *control.Status) { st.Drops = nil }, nil, []string{"drops"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := sampleStatus(statusNow, 100)
			tt.edit(st)
			var b bytes.Buffer
			if err := renderStatus(&b, st, statusNow); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
			for _, r := range tt.reject {
				if strings.Contains(b.String(), r) {
					t.Errorf("output has %q:\n%s", r, b.String())
				}
			}
		})
	}
}

// TestStatusCommand runs meshctl status against a control server.
func TestStatusCommand(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	st := sampleStatus(now, 12)
	st.Peers, st.PeerCounts = nil, control.PeerCounts{} // the server fills them
	st.Cert = control.CertInfo{NotAfter: st.Cert.NotAfter}
	h.b.SetStatus(*st)
	h.b.SetPeers(samplePeers(now))

	out, err := h.run(t, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"WARNING: Certificate expires in 12 days",
		"peers        2 online / 1 direct / 1 relay (3 known)",
		"3m ago", "45s ago", "2d ago",
		"direct (host/srflx)  203.0.113.5:51820",
		"relay                198.51.100.20:3478",
		"failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	checkAligned(t, out, "NAME")

	out, err = h.run(t, "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got control.Status
	if err := control.Decode([]byte(out), &got); err != nil {
		t.Fatalf("status --json does not decode: %v\n%s", err, out)
	}
	if got.Name != "laptop" || len(got.Peers) != 3 || got.PeerCounts.Relay != 1 || got.Cert.DaysLeft != 12 || got.Cert.Warning == "" {
		t.Errorf("status --json decoded to %+v", got)
	}
}

// checkAligned checks that every row of the table whose header line starts
// with header has each cell starting at the header's column.
func checkAligned(t *testing.T, out, header string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, header+" ") {
			start = i
			break
		}
	}
	if start < 0 {
		t.Fatalf("no table with header %q in:\n%s", header, out)
	}
	var cols []int
	hdr := lines[start]
	for i := range hdr {
		if hdr[i] != ' ' && (i == 0 || hdr[i-1] == ' ') {
			cols = append(cols, i)
		}
	}
	rows := 0
	for _, l := range lines[start+1:] {
		if l == "" {
			break
		}
		rows++
		for _, c := range cols {
			if c >= len(l) || l[c] == ' ' || (c > 0 && l[c-1] != ' ') {
				t.Errorf("row %q has no cell starting at column %d (header %q)", l, c, hdr)
				break
			}
		}
	}
	if rows == 0 {
		t.Errorf("table %q has no rows", header)
	}
}

// TestStatusCommandConflict: a node refused because another host holds its
// session says so first, and --json carries it.
func TestStatusCommandConflict(t *testing.T) {
	h := newHarness(t)
	st := sampleStatus(time.Now(), 200)
	st.Peers, st.PeerCounts = nil, control.PeerCounts{}
	st.Coordinator = control.CoordinatorInfo{State: control.SessionConnecting, Address: "198.51.100.10:7000",
		Conflict: "another host at 192.0.2.7:41234 is using this node's identity (refused by coordinator coord-a)"}
	h.b.SetStatus(*st)

	out, err := h.run(t, "status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "WARNING: Another host at 192.0.2.7:41234 is using this node's identity (refused by coordinator coord-a)\n") {
		t.Errorf("conflict is not the first line:\n%s", out)
	}
	out, err = h.run(t, "status", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got control.Status
	if err := control.Decode([]byte(out), &got); err != nil {
		t.Fatalf("status --json does not decode: %v\n%s", err, out)
	}
	if got.Coordinator.Conflict != st.Coordinator.Conflict || !strings.Contains(out, `"conflict": "another host at 192.0.2.7:41234`) {
		t.Errorf("status --json conflict %q:\n%s", got.Coordinator.Conflict, out)
	}
}
