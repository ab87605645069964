package tunnel

import (
	"time"

	"github.com/meshd/meshd/internal/latency"
)

/* Where a packet waits in the tunnel: one observation per batch
 *
 * Inbound (a reader of the node's UDP sockets, demux.go: direct paths;
 * what relayed paths receive through a TURN client socket or pion is not
 * counted here):
 *   RxWake     the kernel received the batch's first datagram (its
 *              SO_TIMESTAMPNS receive timestamp; fast Linux sockets only)
 *              → the reader's recvmmsg returned it: the netpoller wake-up
 *              and the scheduler's latency. Only batches that a recvmmsg
 *              just returned count (not GRO segments kept for the next
 *              batch).
 *   RxOpen     recvmmsg returned → every record of the batch classified,
 *              routed and opened.
 *   RxDeliver  the receivers' calls for the batch (the overlay's checks and
 *              its TUN write).
 *
 * Outbound (Link.WriteBatch, datapath.go):
 *   TxSeal     WriteBatch entered → every record sealed (includes waiting
 *              for txMu).
 *   TxSend     the sealed batch handed to the kernel (sendmmsg).
 *
 * A batch under light load is one packet, so the figures are a lone
 * packet's; under load a stage's figure is the whole batch's time. Each
 * stage costs one monotonic clock read per batch (RxWake one wall-clock
 * read more) and a few atomic adds; nothing is allocated.
 */

// Latency is a snapshot of the data path's stage histograms since
// NewManager (see the stages above).
type Latency struct {
	RxWake, RxOpen, RxDeliver latency.Snapshot
	TxSeal, TxSend            latency.Snapshot
}

// latencyStages are the live histograms.
type latencyStages struct {
	rxWake, rxOpen, rxDeliver, txSeal, txSend latency.Histogram
}

// Latency returns the stage histograms so far.
func (m *Manager) Latency() Latency {
	s := &m.counters.lat
	return Latency{
		RxWake: s.rxWake.Snapshot(), RxOpen: s.rxOpen.Snapshot(), RxDeliver: s.rxDeliver.Snapshot(),
		TxSeal: s.txSeal.Snapshot(), TxSend: s.txSend.Snapshot(),
	}
}

// observeWake records the wait from the kernel's receive time kernelRx
// (nanoseconds since the Unix epoch; 0: unknown) to now.
func (s *latencyStages) observeWake(kernelRx int64) {
	if kernelRx != 0 {
		s.rxWake.Observe(time.Now().UnixNano() - kernelRx)
	}
}
