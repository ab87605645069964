package overlay

import "sync/atomic"

// Stats is a snapshot of the Interface's counters since New.
type Stats struct {
	PacketsIn  uint64 // packets from peers written to the TUN
	BytesIn    uint64 // their IP bytes
	PacketsOut uint64 // packets from the TUN handed to peer links
	BytesOut   uint64 // their IP bytes

	Drops Drops // packets dropped, by reason

	ICMPSent       uint64 // ICMP errors (unreachable, too big) written to the TUN
	TUNReadErrors  uint64 // failed TUN reads (the packets are lost)
	TUNWriteErrors uint64 // failed TUN write batches (the packets are lost)

	Flows        int    // entries in the connection-tracking table
	FlowsEvicted uint64 // live flows dropped because the table was full
	// FlowsUntracked counts new flows not tracked because the table was
	// full and their peer already held the most entries (the packet itself
	// was allowed by the rules; replies must match rules of their own).
	FlowsUntracked uint64
}

// Drops counts dropped packets by reason. Each field matches one drop error
// in errors.go.
type Drops struct {
	NoRoute     uint64 // ErrNoRoute: no peer route for the destination
	NotLocal    uint64 // ErrNotLocal: a peer sent to an address that is not ours
	Spoofed     uint64 // ErrSpoofedSource: source not allowed for the sending peer, or from a link the overlay no longer knows
	FirewallIn  uint64 // ErrNoMatchingRule on receive
	FirewallOut uint64 // ErrNoMatchingRule on send
	Malformed   uint64 // ErrMalformed
	LinkDown    uint64 // the peer's link is missing, down, or failed the write
	TooBig      uint64 // ErrTooBig: larger than the MTU
}

// Total returns the sum of all drop counters.
func (d Drops) Total() uint64 {
	return d.NoRoute + d.NotLocal + d.Spoofed + d.FirewallIn + d.FirewallOut + d.Malformed + d.LinkDown + d.TooBig
}

// counters are the live counters. The data path adds a batch's worth at
// once (batchCounts.flush), so a batch costs a handful of atomic adds, not
// one per packet.
type counters struct {
	packetsIn, bytesIn, packetsOut, bytesOut atomic.Uint64

	noRoute, notLocal, spoofed, fwIn, fwOut, malformed, linkDown, tooBig atomic.Uint64

	icmpSent, readErrors, writeErrors atomic.Uint64

	lat latencyStages // the data path's stage histograms (latency.go)
}

// batchCounts accumulates one batch's counts on the stack of the goroutine
// handling it.
type batchCounts struct {
	packetsIn, bytesIn, packetsOut, bytesOut uint64

	noRoute, notLocal, spoofed, fwIn, fwOut, malformed, linkDown, tooBig uint64

	icmpSent uint64
}

func addNZ(c *atomic.Uint64, v uint64) {
	if v != 0 {
		c.Add(v)
	}
}

func (b *batchCounts) flush(c *counters) {
	addNZ(&c.packetsIn, b.packetsIn)
	addNZ(&c.bytesIn, b.bytesIn)
	addNZ(&c.packetsOut, b.packetsOut)
	addNZ(&c.bytesOut, b.bytesOut)
	addNZ(&c.noRoute, b.noRoute)
	addNZ(&c.notLocal, b.notLocal)
	addNZ(&c.spoofed, b.spoofed)
	addNZ(&c.fwIn, b.fwIn)
	addNZ(&c.fwOut, b.fwOut)
	addNZ(&c.malformed, b.malformed)
	addNZ(&c.linkDown, b.linkDown)
	addNZ(&c.tooBig, b.tooBig)
	addNZ(&c.icmpSent, b.icmpSent)
	*b = batchCounts{}
}

func (c *counters) snapshot() Stats {
	return Stats{
		PacketsIn:  c.packetsIn.Load(),
		BytesIn:    c.bytesIn.Load(),
		PacketsOut: c.packetsOut.Load(),
		BytesOut:   c.bytesOut.Load(),
		Drops: Drops{
			NoRoute:     c.noRoute.Load(),
			NotLocal:    c.notLocal.Load(),
			Spoofed:     c.spoofed.Load(),
			FirewallIn:  c.fwIn.Load(),
			FirewallOut: c.fwOut.Load(),
			Malformed:   c.malformed.Load(),
			LinkDown:    c.linkDown.Load(),
			TooBig:      c.tooBig.Load(),
		},
		ICMPSent:       c.icmpSent.Load(),
		TUNReadErrors:  c.readErrors.Load(),
		TUNWriteErrors: c.writeErrors.Load(),
	}
}
