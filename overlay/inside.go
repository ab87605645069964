package overlay

// Outbound pipeline: TUN → peers. One goroutine (readLoop) runs every stage
// in sequence for one batch at a time:
//
//  1. Read: up to BatchSize packets from the device into in.bufs, each at
//     offset HeaderRoom (the kernel TUN splits TSO super-packets here).
//  2. Per packet: parse (malformed → drop), MTU check (too big → drop +
//     ICMP), route lookup by longest prefix in the snapshot loaded once for
//     the batch (no route → drop + ICMP unreachable), outbound firewall with
//     connection tracking (the batch's flow cache skips the lookup for
//     consecutive packets of one flow), link present (else drop as link
//     down).
//  3. Group: each packet is appended to its peer's link's txOut list in TUN
//     order.
//  4. Send: one PeerConn.WriteBatch per link with packets, links in the
//     order they first appeared in the batch.
//  5. ICMP errors produced in step 2 go back into the TUN in one write.
//
// Stage times (OutRoute, OutTotal; latency.go): one clock read per stage
// per batch.
//
// Buffers: in.bufs belong to the reader goroutine and are reused for every
// batch. PeerConn.WriteBatch borrows them for the call only and may write
// its record header into the HeaderRoom in front and its tag into the tail
// capacity. Nothing survives a batch except counters and conntrack entries.
//
// Order: packets to one peer keep their TUN order (within a batch by the
// grouping, across batches because one goroutine sends them in sequence).
// Packets to different peers are not ordered with respect to each other.

import (
	"errors"
	"fmt"
	"os"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/meshd/meshd/internal/latency"
)

// insideState is the TUN reader goroutine's working set, allocated once.
type insideState struct {
	bufs     [][]byte
	sizes    []int
	icmpBufs [][]byte
	icmpOut  [][]byte
	touched  []*linkRx
	p        packet
	fc       flowCache
	icmpRate tokenBucket
}

func (in *insideState) init(batch int) {
	in.bufs = make([][]byte, batch)
	for k := range in.bufs {
		in.bufs[k] = make([]byte, HeaderRoom+maxPacket+TailRoom)
	}
	in.sizes = make([]int, batch)
	in.icmpBufs = make([][]byte, maxICMPPerBatch)
	for k := range in.icmpBufs {
		in.icmpBufs[k] = make([]byte, icmpBufSize)
	}
	in.icmpOut = make([][]byte, 0, maxICMPPerBatch)
	in.touched = make([]*linkRx, 0, batch)
	in.icmpRate.credit = icmpBurst * (int64(1e9) / icmpRate)
}

func isOSClosed(err error) bool { return errors.Is(err, os.ErrClosed) }

func (i *Interface) readLoop() {
	defer i.wg.Done()
	in := &i.in
	failures := 0
	for {
		n, err := i.dev.Read(in.bufs, in.sizes, HeaderRoom)
		if n > 0 {
			i.handleInside(in, n, latency.Now())
		}
		if err == nil {
			failures = 0
			continue
		}
		if i.isClosedErr(err) {
			return
		}
		i.stats.readErrors.Add(1)
		if errors.Is(err, tun.ErrTooManySegments) {
			continue // one oversized GSO packet lost; the device is fine
		}
		failures++
		if failures == 1 {
			i.log.Warn("TUN read failed", "device", i.name, "error", err)
		}
		if failures >= maxConsecutiveReadErrors {
			i.fatal(fmt.Errorf("overlay: %d TUN reads in a row failed on %s: %w", failures, i.name, err))
			return
		}
	}
}

// handleInside runs stages 2-5 for the n packets in in.bufs, read at read
// (latency.Now).
func (i *Interface) handleInside(in *insideState, n int, read int64) {
	st := i.state.Load()
	now := i.now()
	mtu := int(i.mtu.Load())
	var c batchCounts
	p := &in.p
	in.fc.reset()
	for j := 0; j < n; j++ {
		size := in.sizes[j]
		if size <= 0 || size > maxPacket {
			c.malformed++
			continue
		}
		b := in.bufs[j][HeaderRoom : HeaderRoom+size]
		if err := p.parse(b); err != nil {
			c.malformed++
			continue
		}
		if p.length > mtu {
			c.tooBig++
			if p.df {
				i.queueICMP(in, b, p, icmpTooBig, mtu, now)
			}
			continue
		}
		peer, _ := st.routes.lookup(p.dst)
		if peer == nil {
			c.noRoute++
			i.queueICMP(in, b, p, icmpUnreachable, mtu, now)
			continue
		}
		if err := st.fw.filter(i.ct, p, b, peer, false, now, &in.fc); err != nil {
			c.fwOut++
			continue
		}
		l := peer.link
		if l == nil {
			c.linkDown++
			i.wantLink(peer)
			continue
		}
		if len(l.txOut) == 0 {
			in.touched = append(in.touched, l)
		}
		l.txOut = append(l.txOut, in.bufs[j][:HeaderRoom+p.length])
	}
	if len(in.touched) > 0 {
		i.stats.lat.outRoute.Observe(latency.Now() - read)
	}
	for _, l := range in.touched {
		sent, _ := l.conn.WriteBatch(l.txOut, HeaderRoom)
		sent = min(max(sent, 0), len(l.txOut))
		for _, b := range l.txOut[:sent] {
			c.bytesOut += uint64(len(b) - HeaderRoom)
		}
		c.packetsOut += uint64(sent)
		// Whatever the error (ErrLinkDown or another), the rest is lost.
		c.linkDown += uint64(len(l.txOut) - sent)
		clear(l.txOut)
		l.txOut = l.txOut[:0]
	}
	if len(in.touched) > 0 {
		i.stats.lat.outTotal.Observe(latency.Now() - read)
	}
	in.fc.reset()     // do not keep old snapshots' peers alive
	clear(in.touched) // nor links the overlay let go
	in.touched = in.touched[:0]
	if len(in.icmpOut) > 0 {
		c.icmpSent += i.writeICMP(in.icmpOut)
		clear(in.icmpOut)
		in.icmpOut = in.icmpOut[:0]
	}
	c.flush(&i.stats)
}

// queueICMP builds an ICMP error about packet b into the next free ICMP
// buffer, within the rate limit.
func (i *Interface) queueICMP(in *insideState, b []byte, p *packet, kind, mtu int, now int64) {
	if len(in.icmpOut) == cap(in.icmpOut) || !shouldAnswer(p) || !in.icmpRate.allow(now) {
		return
	}
	buf := in.icmpBufs[len(in.icmpOut)]
	if n := buildICMPError(buf, b, p, kind, mtu); n > 0 {
		in.icmpOut = append(in.icmpOut, buf[:HeaderRoom+n])
	}
}

// writeICMP writes ICMP errors into the TUN and returns how many.
//
// A kernel TUN write never waits for us, so we wait for writeMu. A userspace
// netstack may answer a write inline and block until this very goroutine
// reads the answer, while holding writeMu on behalf of a link: there we only
// try the lock, and ICMP errors (best effort anyway) are skipped when a link
// is writing.
func (i *Interface) writeICMP(bufs [][]byte) uint64 {
	if i.kind == devManaged {
		i.writeMu.Lock()
	} else if !i.writeMu.TryLock() {
		return 0
	}
	defer i.writeMu.Unlock()
	if i.devClosed {
		return 0
	}
	if _, err := i.dev.Write(bufs, HeaderRoom); err != nil {
		i.stats.writeErrors.Add(1)
		return 0
	}
	return uint64(len(bufs))
}
