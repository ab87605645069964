//go:build e2e && bench

package bench

// Tests of the parsers and the report, on recorded tool output: they need
// neither root nor the lab.

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseIperf(t *testing.T) {
	cases := []struct {
		name    string
		out     string
		want    float64
		wantErr string
	}{
		{
			name: "tcp one stream",
			out:  `{"start":{},"end":{"sum_sent":{"bits_per_second":2.6e9},"sum_received":{"bits_per_second":2568000000.5}}}`,
			want: 2568.0000005,
		},
		{
			name: "warning before the JSON",
			out:  "iperf3: warning: something\n" + `{"end":{"sum_received":{"bits_per_second":1e6}}}`,
			want: 1,
		},
		{name: "iperf3 error", out: `{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`, wantErr: "Connection refused"},
		{name: "no sum_received", out: `{"end":{"sum":{"bits_per_second":5e6}}}`, wantErr: "no end.sum_received"},
		{name: "not JSON", out: "iperf3: error - unable to connect", wantErr: "not JSON"},
		{name: "cut short", out: `{"end":{"sum_received":`, wantErr: "bad JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseIperf(tc.out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseIperf = %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || abs(got-tc.want) > 1e-6 {
				t.Fatalf("parseIperf = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestParsePing(t *testing.T) {
	const ok = `PING 100.64.0.2 (100.64.0.2) 56(84) bytes of data.

--- 100.64.0.2 ping statistics ---
200 packets transmitted, 200 received, 0% packet loss, time 2189ms
rtt min/avg/max/mdev = 0.310/0.499/1.204/0.081 ms
`
	const lossy = `--- 10.201.0.2 ping statistics ---
200 packets transmitted, 190 received, 5% packet loss, time 2189ms
rtt min/avg/max/mdev = 0.053/0.060/0.100/0.010 ms, pipe 2
`
	const none = `--- 10.201.0.2 ping statistics ---
200 packets transmitted, 0 received, 100% packet loss, time 2189ms
`
	cases := []struct {
		name    string
		out     string
		want    pingResult
		wantErr bool
	}{
		{name: "all answered", out: ok, want: pingResult{sent: 200, received: 200, min: 310 * time.Microsecond, avg: 499 * time.Microsecond, max: 1204 * time.Microsecond}},
		{name: "some lost", out: lossy, want: pingResult{sent: 200, received: 190, min: 53 * time.Microsecond, avg: 60 * time.Microsecond, max: 100 * time.Microsecond}},
		{name: "no reply", out: none, wantErr: true},
		{name: "no summary", out: "ping: connect: Network is unreachable", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePing(tc.out)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parsePing = %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parsePing = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestFirstReply(t *testing.T) {
	const out = `PING 100.64.0.3 (100.64.0.3) 56(84) bytes of data.
[1795533258.168548] From 100.64.0.2 icmp_seq=1 Destination Host Unreachable
[1795533258.530012] 64 bytes from 100.64.0.3: icmp_seq=19 ttl=64 time=0.912 ms
[1795533258.550100] 64 bytes from 100.64.0.3: icmp_seq=20 ttl=64 time=0.512 ms
`
	got, err := firstReply(out)
	if want := time.Unix(1795533258, 530012000); err != nil || !got.Equal(want) {
		t.Fatalf("firstReply = %v, %v; want %v (the first reply, not the ICMP error)", got, err, want)
	}
	if _, err := firstReply(`[1795533258.168548] From 100.64.0.2 icmp_seq=1 Destination Host Unreachable`); !errors.Is(err, errNoFigure) {
		t.Fatalf("firstReply without a reply: %v, want errNoFigure", err)
	}
}

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{5}, 5},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range cases {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestNewestV1(t *testing.T) {
	list := strings.Fields("github.com/slackhq/nebula v1.5.2 v1.6.1 v1.9.5 v1.10.3 v1.11.0 v1.11.1 v1.11.2 v1.12.0 v1.13.0-rc1 v2.0.0")
	got := newestV1(list, 4)
	want := []string{"v1.12.0", "v1.11.2", "v1.11.1", "v1.11.0"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("newestV1 = %v, want %v (numeric order, no pre-releases, no v2)", got, want)
	}
	if got := newestV1([]string{"example.com/m"}, 4); len(got) != 0 {
		t.Fatalf("newestV1 of no versions = %v", got)
	}
}

func TestWhyNoBuild(t *testing.T) {
	cases := []struct {
		err  string
		want string
	}{
		{"go install: exit status 1: go: github.com/slackhq/nebula@v1.12.0 requires go >= 1.27.3 (running go 1.26.8; GOTOOLCHAIN=local)", "needs go >= 1.27.3"},
		{"go install: exit status 1: reading https://proxy/x.zip: 403 Forbidden", "the module proxy does not serve"},
		{"go install: exit status 1: something else", "failed: go install: exit status 1: something else"},
	}
	for _, tc := range cases {
		if got := whyNoBuild(errors.New(tc.err)); !strings.Contains(got, tc.want) {
			t.Errorf("whyNoBuild(%q) = %q, want it to contain %q", tc.err, got, tc.want)
		}
	}
}

func TestFirstError(t *testing.T) {
	out := "# github.com/meshd/meshd/tunnel\ntunnel/socket.go:12:3: undefined: x\ntunnel/socket.go:205:2: too many errors\n"
	if got := firstError(out); got != "tunnel/socket.go:12:3: undefined: x" {
		t.Errorf("firstError = %q", got)
	}
	if got := firstError("go: module not found\n\n"); got != "go: module not found" {
		t.Errorf("firstError without diagnostics = %q", got)
	}
}

func TestParseCounters(t *testing.T) {
	const out = `{"nftables": [{"metainfo": {"version": "1.0.6"}},
{"counter": {"family": "bridge", "name": "wg_all", "table": "meshdbench", "handle": 1, "packets": 100, "bytes": 3000000}},
{"counter": {"family": "bridge", "name": "wg_big", "table": "meshdbench", "handle": 2, "packets": 90, "bytes": 2990000}},
{"counter": {"family": "bridge", "name": "nebula_all", "table": "meshdbench", "handle": 3, "packets": 10, "bytes": 14780}},
{"counter": {"family": "bridge", "name": "nebula_big", "table": "meshdbench", "handle": 4, "packets": 0, "bytes": 0}}]}`
	got, err := parseCounters(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]wireCount{
		"wg":     {packets: 100, bytes: 3000000, bigPackets: 90, bigBytes: 2990000},
		"nebula": {packets: 10, bytes: 14780},
	}
	if len(got) != len(want) || got["wg"] != want["wg"] || got["nebula"] != want["nebula"] {
		t.Fatalf("parseCounters = %+v, want %+v", got, want)
	}
	if _, err := parseCounters("Error: No such file or directory"); err == nil {
		t.Fatal("parseCounters accepted non-JSON")
	}
}

func TestGroup(t *testing.T) {
	cases := map[float64]string{0: "0", 7: "7", 999.6: "1 000", 17277: "17 277", 1234567: "1 234 567", -2500: "-2 500"}
	for in, want := range cases {
		if got := group(in); got != want {
			t.Errorf("group(%v) = %q, want %q", in, got, want)
		}
	}
}

// TestReportTable checks the rows: median and range, ratios to the
// reference, a path that was not available, and failed measurements.
func TestReportTable(t *testing.T) {
	wg := &column{key: "wg", label: "wireguard-go", ref: true, legs: []wireLeg{{what: "a → b, UDP"}},
		tcp1: []float64{2400, 2600, 2500}, tcp4: []float64{2526}, ping: pingResult{sent: 200, received: 200, avg: 499 * time.Microsecond}}
	mesh := &column{key: "meshd", label: "meshd, direct", legs: []wireLeg{{what: "a → b, UDP"}}, setup: 1234 * time.Millisecond,
		tcp1: []float64{3000, 3500, 3100}, ping: pingResult{sent: 200, received: 198, avg: 400 * time.Microsecond}}
	mesh.fail(errors.New("iperf3 -c 100.64.0.2: iperf3 error: the server is busy"))
	neb := &column{key: "nebula", label: "Nebula", unavailable: "no | release builds"}
	r := &report{
		when: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC), machine: machine{cpus: 2, model: "CPU", kernel: "6.18", goVer: "go1.26", iperf: "iperf 3.12"},
		settings: settings{seconds: 8, runs: 3}, cols: []*column{wg, neb, mesh},
		wire: map[string]wireCount{"wg0": {packets: 10, bytes: 340000, bigPackets: 10, bigBytes: 340000}, "meshd0": {packets: 100, bytes: 147800}},
	}
	md := r.markdown()
	for _, want := range []string{
		"| wireguard-go | 2 500 [2 400–2 600] | 2 526 | 499 µs | 1.00 |",
		`| Nebula | not available: no \| release builds |  |  |  |`,
		"| meshd, direct | 3 100 [3 000–3 500] | failed | 400 µs (2 of 200 lost) | 1.24 |",
		"| meshd, direct | 1.23 s |",
		"| wireguard-go | a → b, UDP | 100.0% | 10 | 34 000 B |",
		"| meshd, direct | a → b, UDP | 0.0% | 100 | 1 478 B |",
		"- meshd, direct: iperf3 -c 100.64.0.2: iperf3 error: the server is busy",
		"2 × CPU, Linux 6.18",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// Without a reference figure there are no ratios.
	wg.tcp1 = nil
	if md := r.markdown(); !strings.Contains(md, "| 3 100 [3 000–3 500] | failed | 400 µs (2 of 200 lost) | n/a |") {
		t.Errorf("ratio without a reference:\n%s", md)
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// TestReportFamilies checks the IPv6 rows: each path's ratio is to the
// wireguard-go of its own underlay family, and the family comparison says
// how far the IPv6 ratio is from the IPv4 one and whether that is within
// the 10% issue 16 asks for.
func TestReportFamilies(t *testing.T) {
	wg := &column{key: "wg", label: "wireguard-go", ref: true, tcp1: []float64{2000}}
	mesh := &column{key: "meshd", label: "meshd, direct", headline: true, tcp1: []float64{1900}}
	wg6 := &column{key: "wgsix", label: "wireguard-go over IPv6", ref: true, six: true, tcp1: []float64{1000}}
	mesh6 := &column{key: "meshdsix", label: "meshd, direct, over IPv6", headline: true, six: true, tcp1: []float64{900}}
	r := &report{settings: settings{seconds: 8, runs: 1}, cols: []*column{wg, mesh, wg6, mesh6}}
	md := r.markdown()
	if want := []string{
		"| meshd, direct | 1 900 | failed | failed | 0.95 |",
		"| meshd, direct, over IPv6 | 900 | failed | failed | 0.90 |",
		"| IPv4 | 1 900 | 2 000 | 0.95 |",
		"| IPv6 | 900 | 1 000 | 0.90 |",
		"The IPv6 ratio is -5% of the IPv4 one: within the 10% issue 16 asks for. Over IPv6 meshd gave 47% of its IPv4 figure, wireguard-go 50%.",
	}; !containsAll(md, want) {
		t.Errorf("report lacks one of %q:\n%s", want, md)
	}
	mesh6.tcp1 = []float64{800}
	if md := r.markdown(); !strings.Contains(md, "The IPv6 ratio is -16% of the IPv4 one: **not** within the 10%") {
		t.Errorf("a ratio 16%% off passes:\n%s", md)
	}
	mesh6.tcp1 = []float64{1300}
	if md := r.markdown(); !strings.Contains(md, "The IPv6 ratio is +37% of the IPv4 one: better than the 10%") {
		t.Errorf("a ratio 37%% better is not told as better:\n%s", md)
	}
	wg6.tcp1 = nil
	if md := r.markdown(); !strings.Contains(md, "| IPv6 | 1 300 | n/a | n/a |") || !strings.Contains(md, "could not both be measured") {
		t.Errorf("no IPv6 reference:\n%s", md)
	}
}

// containsAll reports whether s contains every one of subs.
func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
