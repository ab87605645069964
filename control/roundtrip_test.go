package control_test

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/control/controltest"
	"github.com/meshd/meshd/internal/testutil"
)

var (
	t0   = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	addr = netip.MustParseAddr
	ap   = netip.MustParseAddrPort
	pfx  = netip.MustParsePrefix
)

// samplePeers fills every Peer field: one direct, one relayed, one offline.
func samplePeers() []control.Peer {
	return []control.Peer{
		{
			Name: "nas", Address: addr("100.64.0.2"), Address6: addr("fd7a:115c:a1e0::2"),
			Online: true, State: control.LinkUp, Since: t0.Add(-time.Hour),
			Path: control.PathDirect, LocalCandidate: control.CandidateHost, RemoteCandidate: control.CandidateSrflx,
			Endpoint: ap("203.0.113.5:51820"), RTT: 1234 * time.Microsecond,
			RxBytes: 1 << 30, TxBytes: 5 << 20, RxPackets: 800000, TxPackets: 4000,
			LastHandshake: t0.Add(-3 * time.Minute), Groups: []string{"home", "storage"},
			Subnets: []netip.Prefix{pfx("192.168.1.0/24")},
		},
		{
			Name: "vps", Address: addr("100.64.0.3"), Online: true, State: control.LinkUp,
			Path: control.PathRelay, LocalCandidate: control.CandidateRelay, RemoteCandidate: control.CandidateSrflx,
			Endpoint: ap("198.51.100.77:40000"), Relay: "198.51.100.20:3478", RTT: 42 * time.Millisecond,
			RxBytes: 2048, TxBytes: 4096, RxPackets: 2, TxPackets: 4, LastHandshake: t0,
		},
		{
			Name: "laptop", Address: addr("100.64.0.4"), Online: false, State: control.LinkFailed,
			LastError: "ice: no candidate pair succeeded",
		},
	}
}

func TestRoundTripEveryEndpoint(t *testing.T) {
	testutil.LeakCheck(t)
	b := controltest.New()
	_, sock := controltest.Serve(t, b)
	c := control.NewClient(sock)
	ctx := context.Background()

	notAfter := time.Now().Add(10*24*time.Hour + time.Hour).UTC().Truncate(time.Second)
	st := control.Status{
		Name: "laptop", Address: addr("100.64.0.1"), Address6: addr("fd7a:115c:a1e0::1"),
		Version: "1.2.3", Uptime: 3*time.Hour + 12*time.Minute,
		Cert: control.CertInfo{NotAfter: notAfter, Fingerprint: "ab12"},
		Coordinator: control.CoordinatorInfo{State: control.SessionConnected, Name: "coord-a",
			Address: "198.51.100.10:7000", Since: t0, LastError: "previous: eof"},
		PublicEndpoints: []netip.AddrPort{ap("203.0.113.9:51820"), ap("[2001:db8::9]:51820")},
		NAT:             control.NATEndpointIndependent,
		Drops:           map[string]uint64{"firewall": 12, "no_route": 3},
	}
	b.SetStatus(st)
	b.SetPeers(samplePeers())

	t.Run("status", func(t *testing.T) {
		got, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := st
		want.SchemaVersion = 1
		want.Peers = samplePeers()
		want.PeerCounts = control.PeerCounts{Total: 3, Online: 2, Direct: 1, Relay: 1}
		want.Cert.DaysLeft = 10
		want.Cert.Warning = "certificate expires in 10 days (" + notAfter.Format(time.DateOnly) + "); renew it before then"
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("status round trip:\n got %+v\nwant %+v", *got, want)
		}
	})

	t.Run("peers", func(t *testing.T) {
		got, err := c.Peers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, samplePeers()) {
			t.Errorf("peers round trip:\n got %+v\nwant %+v", got, samplePeers())
		}
	})

	t.Run("why", func(t *testing.T) {
		why := control.PeerWhy{
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
			Explanation: "the remote side's NAT maps each destination to a new port",
		}
		b.SetPeerWhy(why)
		got, err := c.PeerWhy(ctx, "vps")
		if err != nil {
			t.Fatal(err)
		}
		why.SchemaVersion = 1
		if !reflect.DeepEqual(*got, why) {
			t.Errorf("why round trip:\n got %+v\nwant %+v", *got, why)
		}
		if _, err := c.PeerWhy(ctx, "ghost"); !errors.Is(err, control.ErrPeerNotFound) {
			t.Errorf("why of unknown peer: %v, want ErrPeerNotFound", err)
		}
	})

	t.Run("netcheck", func(t *testing.T) {
		nc := control.Netcheck{
			UDP: true,
			STUN: []control.STUNProbe{
				{Server: "198.51.100.10:3478", Reflexive: ap("203.0.113.9:40000"), Latency: 12 * time.Millisecond},
				{Server: "198.51.100.11:3478", Reflexive: ap("203.0.113.9:40001"), Latency: 20 * time.Millisecond},
				{Server: "stun.invalid:3478", Error: "no answer"},
			},
			MappingVariesByDest: true, NAT: control.NATAddressPortDependent,
			Latencies: []control.ServerLatency{
				{Name: "coord-a", Kind: control.ServerCoordinator, Address: "198.51.100.10:7000", Latency: 12 * time.Millisecond},
				{Name: "turn-a", Kind: control.ServerRelay, Address: "198.51.100.20:3478", Error: "timeout"},
			},
			Verdict: "hard NAT: direct paths to other NATed nodes will need the relay",
		}
		b.SetNetcheck(nc)
		got, err := c.Netcheck(ctx)
		if err != nil {
			t.Fatal(err)
		}
		nc.SchemaVersion = 1
		if !reflect.DeepEqual(*got, nc) {
			t.Errorf("netcheck round trip:\n got %+v\nwant %+v", *got, nc)
		}
	})

	t.Run("reload", func(t *testing.T) {
		res := control.ReloadResult{Changed: []string{"firewall", "peers"}, NeedsRestart: []string{"listen"}}
		b.SetReload(res, nil)
		got, err := c.Reload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res.SchemaVersion = 1
		if !reflect.DeepEqual(*got, res) {
			t.Errorf("reload round trip:\n got %+v\nwant %+v", *got, res)
		}

		b.SetReload(control.ReloadResult{}, errors.New("meshd.toml:12:3: unknown key \"listn\""))
		got, err = c.Reload(ctx)
		if !errors.Is(err, control.ErrReloadFailed) || got == nil || got.Error == "" {
			t.Fatalf("refused reload: %+v, %v; want the result and ErrReloadFailed", got, err)
		}
		want := `reload failed: meshd.toml:12:3: unknown key "listn" (the running configuration is unchanged)`
		if err.Error() != want {
			t.Errorf("reload error %q, want %q", err, want)
		}
	})

	t.Run("ping", func(t *testing.T) {
		replies := []control.PingReply{
			{Peer: "vps", Address: addr("100.64.0.3"), Path: control.PathRelay, Relay: "198.51.100.20:3478",
				Endpoint: ap("198.51.100.77:40000"), RTT: 40 * time.Millisecond},
			{Peer: "vps", Address: addr("100.64.0.3"), Error: "timeout"},
			{Peer: "vps", Address: addr("100.64.0.3"), Path: control.PathDirect,
				Endpoint: ap("198.51.100.77:40001"), RTT: 12300 * time.Microsecond},
		}
		b.SetPingReplies("vps", replies)
		var got []control.PingReply
		err := c.Ping(ctx, control.PingRequest{Peer: "vps", Count: 10, Interval: 10 * time.Millisecond, UntilDirect: true},
			func(r control.PingReply) error { got = append(got, r); return nil })
		if err != nil {
			t.Fatal(err)
		}
		var want []control.PingReply
		for i, r := range replies {
			r.SchemaVersion, r.Seq = 1, i+1
			want = append(want, r)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ping until direct:\n got %+v\nwant %+v", got, want)
		}

		got = nil
		err = c.Ping(ctx, control.PingRequest{Peer: "vps", Count: 5, Interval: 10 * time.Millisecond},
			func(r control.PingReply) error { got = append(got, r); return nil })
		if err != nil || len(got) != 5 || got[4].Seq != 5 || got[2].Path != control.PathDirect || got[4].Error != "timeout" {
			t.Errorf("ping without until-direct: %v, %d replies (%+v); want all 5", err, len(got), got)
		}

		if err := c.Ping(ctx, control.PingRequest{Peer: "ghost"}, func(control.PingReply) error { return nil }); !errors.Is(err, control.ErrPeerNotFound) {
			t.Errorf("ping unknown peer: %v, want ErrPeerNotFound", err)
		}
		stop := errors.New("enough")
		n := 0
		err = c.Ping(ctx, control.PingRequest{Peer: "vps", Count: 100, Interval: 10 * time.Millisecond},
			func(control.PingReply) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Errorf("ping whose callback stops it: %v after %d replies, want the callback's error after 1", err, n)
		}
		testutil.WaitFor(t, 5*time.Second, "backend ping to stop after the client left", func() bool { return b.ActivePings() == 0 })
	})

	t.Run("events", func(t *testing.T) {
		ectx, cancel := context.WithCancel(ctx)
		defer cancel()
		evs := []control.Event{
			{Time: t0, Kind: control.EventPeerUp, Peer: "nas", Message: "link up"},
			{Time: t0.Add(time.Second), Kind: control.EventPathChange, Peer: "nas", From: "relay", To: "direct"},
			{Time: t0.Add(2 * time.Second), Kind: control.EventCoordinatorFailover, From: "coord-a", To: "coord-b"},
		}
		got := make(chan control.Event, len(evs))
		done := make(chan error, 1)
		go func() { done <- c.Events(ectx, func(e control.Event) error { got <- e; return nil }) }()
		testutil.WaitFor(t, 5*time.Second, "events subscriber", func() bool { return b.Subscribers() == 1 })
		for _, e := range evs {
			b.Emit(e)
		}
		for i, e := range evs {
			g := <-got
			e.SchemaVersion = 1
			if !reflect.DeepEqual(g, e) {
				t.Errorf("event %d:\n got %+v\nwant %+v", i, g, e)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Events after cancel: %v, want nil", err)
		}
		testutil.WaitFor(t, 5*time.Second, "backend Events to return", func() bool { return b.Subscribers() == 0 })
	})
}

func TestCertStatus(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tests := []struct {
		name     string
		notAfter time.Time
		days     int
		warning  string
	}{
		{"unknown", time.Time{}, 0, ""},
		{"a year", now.Add(365 * day), 365, ""},
		{"exactly 30 days", now.Add(30 * day), 30, ""},
		{"29 days and change", now.Add(29*day + time.Hour), 29,
			"certificate expires in 29 days (2025-01-30); renew it before then"},
		{"one day", now.Add(day + time.Minute), 1,
			"certificate expires in 1 day (2025-01-02); renew it before then"},
		{"hours", now.Add(3 * time.Hour), 0,
			"certificate expires in 0 days (2025-01-01); renew it before then"},
		{"expired", now.Add(-3*day - time.Hour), -3,
			"certificate expired on 2024-12-29; peers refuse it until it is renewed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := control.CertStatus(control.CertInfo{NotAfter: tt.notAfter, Warning: "stale"}, now)
			if got.DaysLeft != tt.days || got.Warning != tt.warning {
				t.Errorf("CertStatus = %d days, %q; want %d, %q", got.DaysLeft, got.Warning, tt.days, tt.warning)
			}
		})
	}
}
