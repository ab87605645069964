package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshd/meshd/internal/latency"
)

// datapathStageDesc is the data path's stage histograms (tunnel.Latency,
// overlay.Latency): where a packet waits between the UDP socket and the TUN,
// one observation per batch.
var datapathStageDesc = prometheus.NewDesc("meshd_datapath_stage_seconds",
	"Time a batch of packets spends in each data-path stage (rx_wake, rx_open, rx_deliver, rx_tun_write, tx_route, tx_seal, tx_send, tx_total).",
	[]string{"stage"}, nil)

func describeLatency(ch chan<- *prometheus.Desc) { ch <- datapathStageDesc }

// collectLatency reports the stage histograms of the tunnel and the
// overlay.
func (d *Daemon) collectLatency(ch chan<- prometheus.Metric) {
	t, o := d.tm.Latency(), d.ov.Latency()
	for _, s := range []struct {
		stage string
		snap  latency.Snapshot
	}{
		{"rx_wake", t.RxWake}, {"rx_open", t.RxOpen}, {"rx_deliver", t.RxDeliver}, {"rx_tun_write", o.InWrite},
		{"tx_route", o.OutRoute}, {"tx_seal", t.TxSeal}, {"tx_send", t.TxSend}, {"tx_total", o.OutTotal},
	} {
		ch <- constHistogram(datapathStageDesc, s.snap, s.stage)
	}
}

// constHistogram turns a snapshot into a Prometheus histogram (cumulative
// buckets in seconds; the overflow bucket is +Inf, which the count holds).
func constHistogram(desc *prometheus.Desc, s latency.Snapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, latency.Buckets-1)
	var cum uint64
	for k := 0; k < latency.Buckets-1; k++ {
		cum += s.Counts[k]
		buckets[latency.Bound(k).Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(desc, s.Count(), s.Sum.Seconds(), buckets, labels...)
}
