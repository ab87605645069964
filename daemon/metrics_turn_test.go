package daemon

import (
	"runtime"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestMetricsCoordinatorTURN: a coordinator's metrics endpoint shows what
// its embedded TURN server's fast path forwarded, per client transport and
// direction: two relay-only nodes linked through it move the UDP series
// both ways; the TCP and TLS series and the 401 count are there at zero.
func TestMetricsCoordinatorTURN(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the embedded TURN server's fast path needs batched UDP I/O (Linux)")
	}
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	nc := m.node(t, "coord", 1, nodeSpec{})
	na := m.node(t, "alpha", 2, nodeSpec{})
	nb := m.node(t, "beta", 3, nodeSpec{})
	c := startDaemon(t, nc, m.config(t, nc, confSpec{coordinator: true, metrics: true}))
	join := []string{c.sessionAddr()}
	fw := "[[firewall.inbound]]\nproto = \"udp\"\nport = \"7000\"\npeer = \"any\"\n"
	a := startDaemon(t, na, m.config(t, na, confSpec{join: join, relayOnly: true, extra: fw}))
	b := startDaemon(t, nb, m.config(t, nb, confSpec{join: join, relayOnly: true, extra: fw}))
	testutil.WaitFor(t, 30*time.Second, "alpha and beta linked through the coordinator's TURN", func() bool {
		return online(a, "beta") && online(b, "alpha")
	})
	series := func(name, transport, dir string) string {
		return name + `{direction="` + dir + `",transport="` + transport + `"}`
	}
	testutil.WaitFor(t, 20*time.Second, "UDP through the embedded TURN server's fast path, both ways", func() bool {
		if !udpExchange(t, a, b, 7000) || !udpExchange(t, b, a, 7000) {
			return false
		}
		body := scrape(t, c)
		for _, dir := range []string{"to_peer", "to_client"} {
			if metricValue(t, body, series("meshd_coordinator_turn_fast_packets_total", "udp", dir)) < 1 ||
				metricValue(t, body, series("meshd_coordinator_turn_fast_bytes_total", "udp", dir)) < 1 {
				return false
			}
		}
		return true
	})
	body := scrape(t, c)
	for _, transport := range []string{"tcp", "tls"} {
		for _, dir := range []string{"to_peer", "to_client"} {
			if v := metricValue(t, body, series("meshd_coordinator_turn_fast_packets_total", transport, dir)); v != 0 {
				t.Errorf("%s %s: %v datagrams, with no client on that transport", transport, dir, v)
			}
		}
	}
	if v := metricValue(t, body, "meshd_coordinator_turn_auth_refused_total"); v != 0 {
		t.Errorf("%v requests refused 401, with every credential good", v)
	}
}
