package overlay

import "github.com/meshd/meshd/internal/latency"

// Where a packet waits in the overlay: one observation per batch, one clock
// read per stage (inside.go, outside.go).
//
// Outbound (the TUN reader):
//
//	OutRoute  the TUN read returned → the batch parsed, routed and
//	          filtered, about to be handed to the links.
//	OutTotal  the TUN read returned → every link's WriteBatch returned
//	          (the tunnel's TxSeal and TxSend are inside it).
//
// Inbound (a link's receiver):
//
//	InWrite   the accepted packets' TUN write.
//
// The wait before a TUN read returns (the kernel queued the packet → the
// reader runs) has no kernel timestamp to measure it by.

// Latency is a snapshot of the overlay's stage histograms since New.
type Latency struct {
	OutRoute, OutTotal, InWrite latency.Snapshot
}

// latencyStages are the live histograms.
type latencyStages struct {
	outRoute, outTotal, inWrite latency.Histogram
}

// Latency returns the stage histograms so far.
func (i *Interface) Latency() Latency {
	s := &i.stats.lat
	return Latency{OutRoute: s.outRoute.Snapshot(), OutTotal: s.outTotal.Snapshot(), InWrite: s.inWrite.Snapshot()}
}
