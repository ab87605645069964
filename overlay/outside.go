package overlay

// Inbound pipeline: peers → TUN. Each link calls its receiver (linkRx.fn)
// from its own reader goroutine with a batch of decrypted packets; batches of
// one link arrive one at a time, batches of different links concurrently.
// For one batch, in the link's goroutine:
//
//  1. Identify: the snapshot is loaded once for the batch and must still name
//     this link for this peer (a link the overlay let go is not trusted).
//  2. Per packet: parse (malformed → drop), anti-spoofing (source inside the
//     peer's allowed prefixes), destination local (our address or, with
//     forwarding, a local subnet), inbound firewall with connection tracking
//     (and the batch's flow cache, as on the way out).
//  3. Write: the accepted packets, in arrival order, go to the TUN in one
//     Write under writeMu, so batches from concurrent links never interleave
//     inside the device's write path (whose GRO tables are per call).
//
// Stage time (InWrite; latency.go): one clock read before and after the
// write.
//
// Buffers: borrowed from the link for the duration of the call. The
// accepted list (rx.out) holds slices of them only until the write returns
// and is cleared before returning. The TUN write may overwrite the header
// room (virtio-net header) and coalesce into spare capacity (GRO).
//
// Order: a link's packets reach the TUN in the order the link delivered
// them; nothing orders packets of different links.

import "github.com/meshd/meshd/internal/latency"

// linkRx is the overlay's side of one adopted link: it receives for it. A new one is made when a link is
// adopted for a peer; it is kept across Reconfigs while the link serves the
// same peer.
//
// It also holds the link's outbound batch (txOut), so that per-link scratch
// space is allocated once per link, not once per peer per Reconfig.
type linkRx struct {
	i    *Interface
	name string      // the peer this link serves
	conn PeerConn    // the link
	fn   ReceiveFunc // rx.receive, made once so SetReceiver allocates nothing later

	// Owned by the link's receive goroutine (one batch at a time).
	p   packet
	fc  flowCache
	out [][]byte

	// txOut collects the packets of the current TUN batch for this link.
	// Owned by the TUN reader goroutine.
	txOut [][]byte
}

func (rx *linkRx) receive(bufs [][]byte, offset int) {
	i := rx.i
	st := i.state.Load()
	var c batchCounts
	peer := st.peers[rx.name]
	switch {
	case peer == nil || peer.link != rx:
		c.spoofed += uint64(len(bufs))
		c.flush(&i.stats)
		return
	case offset < HeaderRoom:
		c.malformed += uint64(len(bufs))
		c.flush(&i.stats)
		return
	}
	now := i.now()
	p := &rx.p
	rx.fc.reset()
	out := rx.out[:0]
	for _, buf := range bufs {
		if len(buf) <= offset {
			c.malformed++
			continue
		}
		b := buf[offset:]
		if err := p.parse(b); err != nil {
			c.malformed++
			continue
		}
		if !prefixesContain(peer.allowed, p.src) {
			c.spoofed++
			continue
		}
		if !st.isLocal(p.dst) {
			c.notLocal++
			continue
		}
		if err := st.fw.filter(i.ct, p, b, peer, true, now, &rx.fc); err != nil {
			c.fwIn++
			continue
		}
		out = append(out, buf[:offset+p.length])
		c.bytesIn += uint64(p.length)
	}
	if len(out) > 0 {
		i.writeMu.Lock()
		var err error
		if i.devClosed {
			err = ErrClosed
		} else {
			start := latency.Now()
			_, err = i.dev.Write(out, offset)
			i.stats.lat.inWrite.Observe(latency.Now() - start)
		}
		i.writeMu.Unlock()
		if err != nil {
			c.bytesIn = 0
			if err != ErrClosed {
				i.stats.writeErrors.Add(1)
			}
		} else {
			c.packetsIn = uint64(len(out))
		}
	}
	rx.fc.reset()
	clear(out) // borrowed: keep nothing of the link's buffers
	rx.out = out[:0]
	c.flush(&i.stats)
}
