package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshd/meshd/control"
)

// The Prometheus endpoint ([metrics], off by default). Every metric is read
// from the components' snapshots at scrape time by one collector, so the
// data path pays nothing for it: no per-packet metric updates exist.

type metricDescs struct {
	info, peerRxBytes, peerTxBytes, peerRxPackets, peerTxPackets *prometheus.Desc
	peerUp, peerState, peerPath, peerRTT, peerAttempts           *prometheus.Desc
	peerFailures, handshakes, handshakeFailures, drops           *prometheus.Desc
	overlayPackets, overlayBytes, sessionUp, failovers           *prometheus.Desc
	registryPeers, certExpiry, reloads, coordSessions            *prometheus.Desc
	coordRecords, coordMembers, pathChanges, buildInfo           *prometheus.Desc
	coordTURNRefused, candidatesDropped                          *prometheus.Desc
}

func newMetricDescs() *metricDescs {
	peer := []string{"peer"}
	n := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("meshd_"+name, help, labels, nil)
	}
	return &metricDescs{
		info:              n("info", "Constant 1, labelled with the node name and software version.", "node", "version"),
		buildInfo:         n("build_info", "Constant 1, labelled with the meshd version and the Go version it was built with.", "version", "goversion"),
		peerRxBytes:       n("peer_receive_bytes_total", "Bytes received from the peer over its link.", peer...),
		peerTxBytes:       n("peer_transmit_bytes_total", "Bytes sent to the peer over its link.", peer...),
		peerRxPackets:     n("peer_receive_packets_total", "Packets received from the peer over its link.", peer...),
		peerTxPackets:     n("peer_transmit_packets_total", "Packets sent to the peer over its link.", peer...),
		peerUp:            n("peer_up", "1 if the link to the peer carries traffic.", peer...),
		peerState:         n("peer_link_state", "1 for the link's current state.", "peer", "state"),
		peerPath:          n("peer_path", "1 for the path the link currently uses (direct, relay, none).", "peer", "path"),
		peerRTT:           n("peer_rtt_seconds", "Round-trip time of the link's selected ICE pair.", peer...),
		peerAttempts:      n("peer_sessions_total", "Link sessions started (offers made or accepted).", peer...),
		peerFailures:      n("peer_session_failures_total", "Link sessions that failed.", peer...),
		handshakes:        n("handshakes_total", "Link sessions that came up (ICE and DTLS handshake done)."),
		handshakeFailures: n("handshake_failures_total", "Link sessions that failed, by reason.", "reason"),
		drops:             n("packets_dropped_total", "Packets dropped, by reason.", "reason"),
		overlayPackets:    n("overlay_packets_total", "Packets between the TUN and the links.", "direction"),
		overlayBytes:      n("overlay_bytes_total", "IP bytes between the TUN and the links.", "direction"),
		sessionUp:         n("coordinator_session_up", "1 if a coordinator session is up."),
		failovers:         n("coordinator_failovers_total", "Coordinator sessions established after a lost one."),
		registryPeers:     n("registry_peers", "Peers in the registry (excluding this node)."),
		certExpiry:        n("cert_expiry_seconds", "Seconds until the node certificate expires (negative: expired)."),
		reloads:           n("reloads_total", "Configuration reloads, by result.", "result"),
		coordSessions:     n("coordinator_sessions", "Node sessions this coordinator serves."),
		coordRecords:      n("coordinator_registry_records", "Registry entries this coordinator holds (tombstones included)."),
		coordMembers:      n("coordinator_members", "Live coordinators in the gossip cluster."),
		coordTURNRefused:  n("coordinator_turn_peers_refused_total", "Relay permissions and relayed datagrams the embedded TURN server refused by its peer-address policy."),
		candidatesDropped: n("ice_candidates_dropped_total", "Remote ICE candidates refused: beyond the per-session bound or a peer's pace."),
		pathChanges:       n("path_changes_total", "Selected-path changes of connected links, by reason (path_failed, direct_found, ipv6_preferred, better_relay, peer_moved, ice_selected).", "reason"),
	}
}

// collector reads the daemon's snapshots at scrape time.
type collector struct {
	d     *Daemon
	descs *metricDescs
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	m := c.descs
	for _, d := range []*prometheus.Desc{m.info, m.buildInfo, m.peerRxBytes, m.peerTxBytes, m.peerRxPackets, m.peerTxPackets,
		m.peerUp, m.peerState, m.peerPath, m.peerRTT, m.peerAttempts, m.peerFailures, m.handshakes,
		m.handshakeFailures, m.drops, m.overlayPackets, m.overlayBytes, m.sessionUp, m.failovers,
		m.registryPeers, m.certExpiry, m.reloads, m.coordSessions, m.coordRecords, m.coordMembers, m.pathChanges,
		m.coordTURNRefused, m.candidatesDropped} {
		ch <- d
	}
	describeRelay(ch)
	describeCoordTURN(ch)
	describeLatency(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d, m := c.d, c.descs
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(m.info, 1, d.name, d.version)
	gauge(m.buildInfo, 1, d.version, runtime.Version())
	paths := []control.Path{control.PathDirect, control.PathRelay}
	v := d.view.Load()
	for i := range v.peers {
		p := &v.peers[i]
		lc := v.links[p.Name]
		doc := peerDoc(p, lc)
		// Per-peer totals: the links closed so far plus the current one, so
		// they never go backwards when a link is re-established.
		t := v.retired[p.Name]
		if lc != nil {
			t = t.plus(lc.totals())
		}
		counter(m.peerRxBytes, t.rxBytes, p.Name)
		counter(m.peerTxBytes, t.txBytes, p.Name)
		counter(m.peerRxPackets, t.rxPackets, p.Name)
		counter(m.peerTxPackets, t.txPackets, p.Name)
		counter(m.peerAttempts, t.sessions, p.Name)
		counter(m.peerFailures, t.failures, p.Name)
		gauge(m.peerUp, b2f(doc.Online), p.Name)
		for _, s := range metricLinkStates {
			gauge(m.peerState, b2f(doc.State == s), p.Name, string(s))
		}
		for _, pa := range paths {
			gauge(m.peerPath, b2f(doc.Path == pa), p.Name, string(pa))
		}
		gauge(m.peerPath, b2f(doc.Path == control.PathNone), p.Name, "none")
		gauge(m.peerRTT, doc.RTT.Seconds(), p.Name)
	}
	counter(m.handshakes, d.stats.handshakes.Load())
	for reason, n := range d.stats.failureSnapshot() {
		counter(m.handshakeFailures, n, reason)
	}
	for reason, n := range d.stats.pathChangeSnapshot() {
		counter(m.pathChanges, n, reason)
	}
	for reason, n := range d.drops() {
		counter(m.drops, n, reason)
	}
	counter(m.candidatesDropped, d.tm.Stats().CandidatesDropped)
	os := d.ov.Stats()
	counter(m.overlayPackets, os.PacketsIn, "in")
	counter(m.overlayPackets, os.PacketsOut, "out")
	counter(m.overlayBytes, os.BytesIn, "in")
	counter(m.overlayBytes, os.BytesOut, "out")
	if cl := d.client.Load(); cl != nil {
		st := cl.Status()
		gauge(m.sessionUp, b2f(st.Connected))
		counter(m.failovers, st.Failovers)
		gauge(m.registryPeers, float64(st.Peers))
	} else {
		gauge(m.sessionUp, 0)
	}
	gauge(m.certExpiry, d.cred().Cert.Cert.NotAfter.Sub(d.now()).Seconds())
	counter(m.reloads, d.stats.reloads.Load(), "ok")
	counter(m.reloads, d.stats.reloadsFailed.Load(), "failed")
	if d.coord != nil {
		cs := d.coord.Stats()
		gauge(m.coordSessions, float64(cs.Sessions))
		gauge(m.coordRecords, float64(cs.Records))
		gauge(m.coordMembers, float64(cs.Members))
		counter(m.coordTURNRefused, d.coord.TURNPeersRefused())
	}
	d.collectRelay(ch)
	d.collectCoordTURN(ch)
	d.collectLatency(ch)
}

// metricLinkStates are the values of meshd_peer_link_state's state label:
// every state peerDoc reports, so exactly one series per peer is 1
// (docs/metrics.md lists them).
var metricLinkStates = []control.LinkState{control.LinkIdle, control.LinkOffline, control.LinkNew,
	control.LinkChecking, control.LinkHandshaking, control.LinkUp, control.LinkFailed, control.LinkClosed}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// metricsServer serves /metrics on its own registry (no global state).
type metricsServer struct {
	log  *slog.Logger
	addr netip.AddrPort
	reg  *prometheus.Registry
	srv  *http.Server
	wg   sync.WaitGroup

	mu sync.Mutex // guards ln
	ln net.Listener
}

func newMetricsServer(d *Daemon, addr netip.AddrPort) *metricsServer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{d: d, descs: newMetricDescs()},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return &metricsServer{
		log:  d.log.With("component", "metrics"),
		addr: addr,
		reg:  reg,
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
	}
}

func (m *metricsServer) start() error {
	ln, err := net.Listen("tcp", m.addr.String())
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.ln = ln
	m.mu.Unlock()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			// Not fatal for the node: scrapes fail and Prometheus alerts.
			m.log.Error("metrics endpoint stopped", "listen", ln.Addr().String(), "error", err)
		}
	}()
	return nil
}

// listenAddr returns the listening address, or nil before start.
func (m *metricsServer) listenAddr() net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ln == nil {
		return nil
	}
	return m.ln.Addr()
}

func (m *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := m.srv.Shutdown(ctx); err != nil {
		_ = m.srv.Close()
	}
	m.wg.Wait()
}

// MetricsAddr returns the metrics endpoint's address, or nil when metrics
// are off or not started.
func (d *Daemon) MetricsAddr() net.Addr {
	if d.metrics == nil {
		return nil
	}
	return d.metrics.listenAddr()
}
