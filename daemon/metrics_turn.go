package daemon

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the coordinator's embedded TURN server beyond its peer policy
// (docs/metrics.md): the 401s it answered and what its fast path
// forwarded, so an operator (and the lab) can see whether relayed bytes
// took the fast path, per client transport.
var (
	coordTURNAuthRefusedDesc = prometheus.NewDesc("meshd_coordinator_turn_auth_refused_total",
		"TURN requests the embedded server answered 401 for a bad, expired or forged credential, on any of its listeners.", nil, nil)
	coordTURNFastPacketsDesc = prometheus.NewDesc("meshd_coordinator_turn_fast_packets_total",
		"Datagrams the embedded TURN server's fast path forwarded, by the client's transport (udp, tcp, tls) and direction (to_peer, to_client).",
		[]string{"transport", "direction"}, nil)
	coordTURNFastBytesDesc = prometheus.NewDesc("meshd_coordinator_turn_fast_bytes_total",
		"Payload bytes of those datagrams (ChannelData headers and padding not counted), by transport and direction.",
		[]string{"transport", "direction"}, nil)
)

func describeCoordTURN(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{coordTURNAuthRefusedDesc, coordTURNFastPacketsDesc, coordTURNFastBytesDesc} {
		ch <- d
	}
}

// collectCoordTURN reports the embedded TURN server's counters when this
// node is a coordinator.
func (d *Daemon) collectCoordTURN(ch chan<- prometheus.Metric) {
	if d.coord == nil {
		return
	}
	c := func(desc *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), l...)
	}
	c(coordTURNAuthRefusedDesc, d.coord.TURNAuthRefused())
	for _, f := range d.coord.TURNFastStats() {
		c(coordTURNFastPacketsDesc, f.Frames, f.Transport, f.Direction)
		c(coordTURNFastBytesDesc, f.Bytes, f.Transport, f.Direction)
	}
}
