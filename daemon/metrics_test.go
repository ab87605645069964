package daemon

import (
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/tunnel"
)

// TestMetricLinkStates: meshd_peer_link_state has a series for every state
// a peer can be in, so exactly one of a peer's series is 1, offline and
// idle peers included (offline peers used to export all zeros).
func TestMetricLinkStates(t *testing.T) {
	var states []control.LinkState
	for _, p := range []peerPlan{{Name: "x", Excluded: "revoked"}, {Name: "x", Idle: true}, {Name: "x"}} {
		states = append(states, peerDoc(&p, nil).State)
	}
	for s := tunnel.StateNew; s <= tunnel.StateClosed; s++ {
		states = append(states, linkState(s))
	}
	for _, s := range states {
		if !slices.Contains(metricLinkStates, s) {
			t.Errorf("state %q has no meshd_peer_link_state series", s)
		}
	}
}

// TestLinkTotalsPlus: retired totals add field by field.
func TestLinkTotalsPlus(t *testing.T) {
	a := linkTotals{rxBytes: 1, txBytes: 2, rxPackets: 3, txPackets: 4, sessions: 5, failures: 6}
	if got, want := a.plus(a), (linkTotals{2, 4, 6, 8, 10, 12}); got != want {
		t.Errorf("plus = %+v, want %+v", got, want)
	}
}

// TestMetricsSurviveRelink: per-peer `_total` counters never go backwards
// within a process. When the peer goes away its link is closed (the
// counters keep what it counted, and meshd_peer_link_state says offline),
// and when it comes back the new link's counts add to them.
func TestMetricsSurviveRelink(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	na := m.node(t, "alpha", 1, nodeSpec{})
	nb := m.node(t, "beta", 2, nodeSpec{})
	a := startDaemon(t, na, m.config(t, na, confSpec{coordinator: true, metrics: true}))
	bPath := m.config(t, nb, confSpec{join: []string{a.sessionAddr()}, extra: "[[firewall.inbound]]\nproto = \"udp\"\nport = \"7000\"\npeer = \"alpha\"\n"})
	b := startDaemon(t, nb, bPath)
	testutil.WaitFor(t, 20*time.Second, "alpha and beta linked", func() bool { return online(a, "beta") && online(b, "alpha") })
	if !udpExchange(t, a, b, 7000) {
		t.Fatal("no traffic between alpha and beta")
	}
	const rx = `meshd_peer_receive_packets_total{peer="beta"}`
	first := metricValue(t, scrape(t, a), rx)
	if first <= 0 {
		t.Fatalf("%s = %v after an exchange", rx, first)
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "alpha closes its link to beta", func() bool {
		return a.view.Load().links["beta"] == nil && peerOf(t, a, "beta").State == control.LinkOffline
	})
	body := scrape(t, a)
	if v := metricValue(t, body, rx); v < first {
		t.Errorf("%s went from %v to %v when the link closed", rx, first, v)
	}
	if v := metricValue(t, body, `meshd_peer_link_state{peer="beta",state="offline"}`); v != 1 {
		t.Errorf("offline beta: link_state offline = %v\n%s", v, body)
	}

	b = startDaemon(t, nb, bPath)
	testutil.WaitFor(t, 20*time.Second, "alpha and beta linked again", func() bool { return online(a, "beta") && online(b, "alpha") })
	if v := metricValue(t, scrape(t, a), rx); v < first {
		t.Errorf("%s went from %v to %v when the link was re-established", rx, first, v)
	}
}

// TestMetricsDatapathStages: after an exchange over a link, every stage of
// meshd_datapath_stage_seconds has counted batches, on both nodes.
func TestMetricsDatapathStages(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	na := m.node(t, "alpha", 1, nodeSpec{})
	nb := m.node(t, "beta", 2, nodeSpec{})
	a := startDaemon(t, na, m.config(t, na, confSpec{coordinator: true, metrics: true}))
	b := startDaemon(t, nb, m.config(t, nb, confSpec{join: []string{a.sessionAddr()}, metrics: true,
		extra: "[[firewall.inbound]]\nproto = \"udp\"\nport = \"7000\"\npeer = \"alpha\"\n"}))
	testutil.WaitFor(t, 20*time.Second, "alpha and beta linked", func() bool { return online(a, "beta") && online(b, "alpha") })
	if !udpExchange(t, a, b, 7000) {
		t.Fatal("no traffic between alpha and beta")
	}
	stages := []string{"rx_open", "rx_deliver", "rx_tun_write", "tx_route", "tx_seal", "tx_send", "tx_total"}
	if runtime.GOOS == "linux" {
		stages = append(stages, "rx_wake") // kernel receive timestamps
	}
	for _, d := range []*testDaemon{a, b} {
		body := scrape(t, d)
		for _, st := range stages {
			series := `meshd_datapath_stage_seconds_count{stage="` + st + `"}`
			if v := metricValue(t, body, series); v < 1 {
				t.Errorf("%s: %s = %v after an exchange", d.node.name, series, v)
			}
		}
	}
}
