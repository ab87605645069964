package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/tunnel"
)

// eventLog collects a daemon's events (through control.Backend.Events).
type eventLog struct {
	mu  sync.Mutex
	evs []control.Event
}

func collectEvents(t *testing.T, d *testDaemon) *eventLog {
	el := &eventLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Events(ctx, func(ev control.Event) {
			el.mu.Lock()
			el.evs = append(el.evs, ev)
			el.mu.Unlock()
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return el
}

func (el *eventLog) has(kind control.EventKind, peer, contains string) bool {
	el.mu.Lock()
	defer el.mu.Unlock()
	for _, ev := range el.evs {
		if ev.Kind == kind && (peer == "" || ev.Peer == peer) && strings.Contains(ev.Message+" "+ev.To, contains) {
			return true
		}
	}
	return false
}

func peerOf(t *testing.T, d *testDaemon, name string) control.Peer {
	t.Helper()
	peers, err := d.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.Name == name {
			return p
		}
	}
	return control.Peer{}
}

func online(d *testDaemon, name string) bool {
	peers, _ := d.Peers(context.Background())
	for _, p := range peers {
		if p.Name == name {
			return p.Online
		}
	}
	return false
}

func waitReady(t *testing.T, d *testDaemon) {
	t.Helper()
	select {
	case <-d.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never became ready", d.name)
	}
}

// udpExchange sends from a's netstack to b's overlay address and port and
// reports whether b received it and a got b's answer back.
func udpExchange(t *testing.T, a, b *testDaemon, port uint16) bool {
	t.Helper()
	dst := netip.AddrPortFrom(b.self.Addrs[0].Addr(), port)
	ln, err := b.ov.Net().ListenUDPAddrPort(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		buf := make([]byte, 64)
		_ = ln.SetReadDeadline(time.Now().Add(1600 * time.Millisecond))
		n, from, err := ln.ReadFrom(buf)
		if err == nil {
			_, _ = ln.WriteTo(append([]byte("re:"), buf[:n]...), from)
		}
	}()
	defer func() { <-served }()
	c, err := a.ov.Net().DialUDPAddrPort(netip.AddrPort{}, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 5; i++ {
		if _, err := c.Write([]byte("hello")); err != nil {
			return false
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 64)
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n]) == "re:hello"
		}
	}
	return false
}

// TestTwoNodes is the wiring's integration test: two daemons in userspace
// mode, one of them also the coordinator (with its STUN/TURN server), on
// loopback. They find each other through the registry, connect with real
// ICE+DTLS links, and carry packets between their netstacks; then the
// control API, metrics, reload and revocation are exercised on that mesh.
func TestTwoNodes(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	na := m.node(t, "alpha", 1, nodeSpec{groups: []string{"lab"}})
	nb := m.node(t, "beta", 2, nodeSpec{})
	a := startDaemon(t, na, m.config(t, na, confSpec{coordinator: true, metrics: true}))
	aEvents := collectEvents(t, a)
	fwB := "[[firewall.inbound]]\nproto = \"udp\"\nport = \"7000\"\npeer = \"alpha\"\n"
	bConf := confSpec{join: []string{a.sessionAddr()}, extra: fwB}
	b := startDaemon(t, nb, m.config(t, nb, bConf))
	waitReady(t, a)
	waitReady(t, b)
	testutil.WaitFor(t, 20*time.Second, "alpha and beta linked", func() bool { return online(a, "beta") && online(b, "alpha") })
	// A link may come up relayed and move to the direct pair a moment later.
	testutil.WaitFor(t, 10*time.Second, "direct paths", func() bool {
		return peerOf(t, a, "beta").Path == control.PathDirect && peerOf(t, b, "alpha").Path == control.PathDirect
	})
	linkBefore := b.view.Load().links["alpha"]

	t.Run("data path", func(t *testing.T) {
		if !udpExchange(t, a, b, 7000) {
			t.Fatal("UDP alpha → beta:7000 (allowed by beta's firewall) did not get through")
		}
		before := b.ov.Stats().Drops.FirewallIn
		if udpExchange(t, a, b, 7001) {
			t.Fatal("UDP to beta:7001 got through although beta's firewall does not allow it")
		}
		if b.ov.Stats().Drops.FirewallIn <= before {
			t.Error("beta did not count a firewall drop for port 7001")
		}
	})

	t.Run("ping", func(t *testing.T) {
		var replies []control.PingReply
		err := a.Ping(context.Background(), "beta", 3, 20*time.Millisecond, false, func(r control.PingReply) { replies = append(replies, r) })
		if err != nil {
			t.Fatal(err)
		}
		if len(replies) != 3 {
			t.Fatalf("%d replies, want 3", len(replies))
		}
		for i, r := range replies {
			if r.Seq != i+1 || r.Error != "" || r.RTT <= 0 || r.Path != control.PathDirect || !r.Endpoint.IsValid() ||
				r.Address != netip.MustParseAddr("100.64.0.2") {
				t.Errorf("reply %d: %+v", i, r)
			}
		}
		// Through the control socket too, stopping at the first direct reply.
		cl := control.NewClient(a.ctl.Socket())
		n := 0
		err = cl.Ping(context.Background(), control.PingRequest{Peer: "beta", Count: 5, Interval: 20 * time.Millisecond, UntilDirect: true},
			func(r control.PingReply) error {
				n++
				if r.Error != "" {
					return errors.New(r.Error)
				}
				return nil
			})
		if err != nil || n != 1 {
			t.Errorf("ping --until-direct over the socket: %d replies, %v", n, err)
		}
		if err := a.Ping(context.Background(), "nobody", 1, time.Second, false, func(control.PingReply) {}); !errors.Is(err, control.ErrPeerNotFound) {
			t.Errorf("ping to an unknown peer: %v", err)
		}
	})

	t.Run("status peers why", func(t *testing.T) {
		cl := control.NewClient(a.ctl.Socket())
		ctx := context.Background()
		st, err := cl.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Name != "alpha" || st.Address != netip.MustParseAddr("100.64.0.1") || st.Version != "test" ||
			st.Coordinator.State != control.SessionConnected || st.Coordinator.Name != "alpha" ||
			st.PeerCounts.Online != 1 || st.PeerCounts.Direct != 1 || st.Cert.Fingerprint != na.cert.Fingerprint || st.Cert.DaysLeft != 0 {
			t.Errorf("status %+v", st)
		}
		p := peerOf(t, b, "alpha")
		if p.State != control.LinkUp || p.Path != control.PathDirect || p.RxPackets == 0 || p.TxPackets == 0 ||
			!slices.Equal(p.Groups, []string{"lab"}) || p.LastHandshake.IsZero() {
			t.Errorf("beta's view of alpha: %+v", p)
		}
		why, err := cl.PeerWhy(ctx, "beta")
		if err != nil {
			t.Fatal(err)
		}
		if why.State != control.LinkUp || why.Path != control.PathDirect || len(why.Pairs) == 0 || !strings.HasPrefix(why.Explanation, "direct path") {
			t.Errorf("why %+v", why)
		}
		if _, err := cl.PeerWhy(ctx, "nobody"); !errors.Is(err, control.ErrPeerNotFound) {
			t.Errorf("why nobody: %v", err)
		}
	})

	t.Run("netcheck", func(t *testing.T) {
		nc, err := b.Netcheck(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !nc.UDP || len(nc.STUN) == 0 || nc.STUN[0].Error != "" || nc.NAT != control.NATNone {
			t.Errorf("netcheck %+v", nc)
		}
		kinds := map[string]bool{}
		for _, l := range nc.Latencies {
			if l.Error == "" {
				kinds[l.Kind] = true
			}
		}
		if !kinds[control.ServerCoordinator] || !kinds[control.ServerRelay] {
			t.Errorf("latencies %+v", nc.Latencies)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		body := scrape(t, a)
		for _, want := range []string{
			`meshd_build_info{goversion="go`,
			`go_goroutines `,
			`process_start_time_seconds `,
			`meshd_peer_up{peer="beta"} 1`,
			`meshd_peer_path{path="direct",peer="beta"} 1`,
			`meshd_peer_link_state{peer="beta",state="up"} 1`,
			`meshd_coordinator_session_up 1`,
			`meshd_registry_peers 1`,
			`meshd_coordinator_sessions 2`,
			`meshd_handshakes_total`,
			`meshd_cert_expiry_seconds`,
			`meshd_packets_dropped_total{reason="firewall_in"}`,
			`meshd_peer_receive_packets_total{peer="beta"}`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})

	t.Run("events", func(t *testing.T) {
		testutil.WaitFor(t, 2*time.Second, "peer_up for beta, then direct", func() bool {
			return aEvents.has(control.EventPeerUp, "beta", "") &&
				(aEvents.has(control.EventPeerUp, "beta", "direct") || aEvents.has(control.EventPathChange, "beta", "direct"))
		})
	})

	t.Run("reload applies log level and firewall without dropping links", func(t *testing.T) {
		handshakes := b.stats.handshakes.Load()
		bConf.logLevel = "debug"
		bConf.extra = fwB + "[[firewall.inbound]]\nproto = \"udp\"\nport = \"7001\"\ngroups = [\"lab\"]\n"
		m.config(t, nb, bConf)
		res, err := b.Reload(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(res.Changed, "log.level") || !slices.Contains(res.Changed, "firewall.inbound") || len(res.NeedsRestart) != 0 {
			t.Errorf("reload result %+v", res)
		}
		if b.level.Level() != -4 {
			t.Errorf("log level %v after reload, want debug", b.level.Level())
		}
		if got := len(b.ov.Config().Firewall.Inbound); got != 2 {
			t.Errorf("%d inbound rules after reload, want 2", got)
		}
		if !udpExchange(t, a, b, 7001) {
			t.Error("port 7001 still closed after the reload allowed it")
		}
		if l := b.view.Load().links["alpha"]; l != linkBefore || l.link.State() != tunnel.StateConnected || b.stats.handshakes.Load() != handshakes {
			t.Error("the reload replaced or re-handshook the link")
		}
		if !b.log.contains("configuration reloaded") {
			t.Error("the reload was not logged")
		}
	})

	t.Run("reload refuses a bad file and keeps the running state", func(t *testing.T) {
		good, _ := os.ReadFile(b.path)
		bad := append(append([]byte{}, good...), []byte("\n[log]\nlevel = \"loud\"\n")...)
		if err := os.WriteFile(b.path, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(b.path, good, 0o600)
		res, err := b.Reload(context.Background())
		if err == nil {
			t.Fatal("a bad file was accepted")
		}
		if !strings.Contains(err.Error(), b.path+":") || res == nil || len(res.Changed) != 0 {
			t.Errorf("error %q / result %+v: want the file position and nothing applied", err, res)
		}
		if b.level.Level() != -4 || len(b.ov.Config().Firewall.Inbound) != 2 {
			t.Error("a refused reload changed the running state")
		}
		// Over the socket, a refused reload is a result with Error set.
		rr, err := control.NewClient(b.ctl.Socket()).Reload(context.Background())
		if err == nil && (rr == nil || rr.Error == "") {
			t.Errorf("reload over the socket: %+v %v", rr, err)
		}
	})

	t.Run("reload reports keys that need a restart", func(t *testing.T) {
		bConf.tunName = "meshd9"
		m.config(t, nb, bConf)
		res, err := b.Reload(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.NeedsRestart, []string{"tun.name"}) {
			t.Errorf("needs restart %v, want [tun.name]", res.NeedsRestart)
		}
		// A second reload still reports it: the running value did not change.
		res, err = b.Reload(context.Background())
		if err != nil || !slices.Equal(res.NeedsRestart, []string{"tun.name"}) {
			t.Errorf("second reload: %+v %v", res, err)
		}
	})

	t.Run("revocation by reloaded CRL closes the link", func(t *testing.T) {
		crl, err := m.ca.Revoke(nil, []*x509.Certificate{nb.cert.Cert}, "keyCompromise", 0)
		if err != nil {
			t.Fatal(err)
		}
		crlPath := filepath.Join(na.dir, "crl.pem")
		if err := os.WriteFile(crlPath, crl.PEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		m.config(t, na, confSpec{coordinator: true, metrics: true, crl: crlPath})
		res, err := a.Reload(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(res.Changed, "pki.crl") {
			t.Errorf("changed %v", res.Changed)
		}
		testutil.WaitFor(t, 10*time.Second, "alpha drops beta", func() bool {
			return a.view.Load().links["beta"] == nil
		})
		// Either the ping is refused outright (beta already left the
		// registry: ErrPeerNotFound, no reply at all) or its one reply
		// carries an error; an answer is the failure.
		var r control.PingReply
		replied := false
		err = a.Ping(context.Background(), "beta", 1, 10*time.Millisecond, false, func(x control.PingReply) { r, replied = x, true })
		if err == nil && (!replied || r.Error == "") {
			p := peerOf(t, a, "beta")
			t.Errorf("ping to a revoked peer answered: %+v (peer %+v)", r, p)
		}
		testutil.WaitFor(t, 10*time.Second, "peer_down for beta", func() bool {
			return aEvents.has(control.EventPeerDown, "beta", "")
		})
	})
}

// scrape returns d's /metrics page.
func scrape(t *testing.T, d *testDaemon) string {
	t.Helper()
	resp, err := http.Get("http://" + d.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// metricValue returns the value of the series (name and labels as
// exposed) in body.
func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}

// TestLazyLinks: with ice.lazy no link is made until a packet (or a ping)
// asks for one; the other side, lazy too, makes its link when signaled.
func TestLazyLinks(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	na := m.node(t, "alpha", 1, nodeSpec{})
	nb := m.node(t, "beta", 2, nodeSpec{})
	a := startDaemon(t, na, m.config(t, na, confSpec{coordinator: true, lazy: true}))
	fwB := "[[firewall.inbound]]\nproto = \"udp\"\npeer = \"alpha\"\n"
	b := startDaemon(t, nb, m.config(t, nb, confSpec{join: []string{a.sessionAddr()}, lazy: true, extra: fwB}))
	waitReady(t, a)
	waitReady(t, b)
	// Each side learns the other from the registry on its own schedule:
	// wait for both to list the other, then both must be idle (no link).
	testutil.WaitFor(t, 10*time.Second, "alpha and beta know each other", func() bool {
		return peerOf(t, a, "beta").Name != "" && peerOf(t, b, "alpha").Name != ""
	})
	for _, c := range []struct {
		d    *testDaemon
		peer string
	}{{a, "beta"}, {b, "alpha"}} {
		if s := peerOf(t, c.d, c.peer).State; s != control.LinkIdle {
			t.Errorf("%s's link to %s is %q before any packet, want idle", c.d.name, c.peer, s)
		}
	}
	// A packet from alpha's netstack to beta asks for the link.
	testutil.WaitFor(t, 20*time.Second, "UDP alpha → beta over a lazily made link", func() bool {
		return udpExchange(t, a, b, 7000)
	})
	if !online(a, "beta") || !online(b, "alpha") {
		t.Error("the lazy link is not up on both sides")
	}
}
