// Package overlaytest holds in-memory doubles for the overlay's two edges:
// Pipe, a pair of connected PeerConns (direct-call or queue-backed), and
// TUN, a batch-capable channel TUN device. It also builds test packets
// (Packet). They are for tests and benchmarks of overlay and of the packages
// that wire it up; nothing here touches the kernel.
//
// wireguard's tuntest.ChannelTUN was considered for the TUN double: it reads
// and writes one packet per call (BatchSize 1) and allocates a copy per
// written packet, so it cannot exercise batching or measure a zero-allocation
// path. TUN here keeps its shape (inbound/outbound channels) with batches.
package overlaytest
