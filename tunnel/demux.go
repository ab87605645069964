package tunnel

/* Inbound pipeline: socket → links
 *
 * One reader goroutine per socket (Manager.readLoop) runs every stage for
 * one batch at a time, in sequence; nothing here takes a lock per packet,
 * starts a goroutine or sends on a channel per data record:
 *
 *   1. Read: up to rxBatchSize datagrams into the reader's own slot
 *      buffers, each at recOff = HeaderRoom-13, so that a record's
 *      plaintext lands at HeaderRoom (fast sockets split UDP_GRO
 *      super-datagrams into slots here, socket_linux.go).
 *   2. Classify (RFC 7983 first byte + epoch, muxconn.go): data records go
 *      on; STUN and pion DTLS records are screened and copied to the mux's
 *      queue; the rest is counted and dropped.
 *   3. Route: the link is looked up by source address in the manager's
 *      route table, an immutable map swapped atomically when a link's
 *      selected path changes (no lock; the last lookup is reused while the
 *      source repeats). Unknown source → dropped.
 *   4. Open in place with the link's key state and this reader's Opener
 *      (record.Opener; one per reader slot). A record of the epoch a
 *      pending rekey is about to install first proves itself against the
 *      pending keys, then installs them (keys.go). Failures are counted by
 *      reason and dropped.
 *   5. Group: each opened packet is appended, in arrival order, to its
 *      link's group for this batch.
 *   6. Deliver: one ReceiveFunc call per link per batch (Link.deliver),
 *      so the overlay writes each link's packets to the TUN in one call
 *      and the kernel can coalesce them (GRO).
 *
 * Buffers: the slots belong to the reader goroutine and are reused for
 * every batch. A ReceiveFunc borrows them for its call only; each has
 * spare capacity up to rxSlotSize, which the TUN's GRO may fill. Control
 * datagrams are copied out before the slot is reused.
 *
 * Stage times (RxWake, RxOpen, RxDeliver; latency.go): one clock read per
 * stage per batch, taken only for batches that deliver data.
 *
 * Order: a link's packets are delivered in the order its reader received
 * them. A link's packets may also arrive through another socket (the other
 * address family) or its ICE reader (relayed paths, dtlsconn.go); Link.deliver
 * serializes those batches, without ordering them against each other.
 */

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/meshd/meshd/internal/latency"
	"github.com/meshd/meshd/tunnel/record"
)

// recOff is where a received record starts in a slot buffer: its
// plaintext then starts at HeaderRoom.
const recOff = HeaderRoom - record.HeaderLen

// rxSlotSize is a slot buffer: header room, the largest UDP datagram, and
// spare room for the TUN's GRO to coalesce into.
const rxSlotSize = HeaderRoom + 1<<16 + 64

// rxBatch is a reader goroutine's working set, allocated once.
type rxBatch struct {
	bufs      [][]byte // slot buffers, rxSlotSize each
	recvViews [][]byte // bufs[i][recOff:]: where datagram i is read
	sizes     []int    // datagram sizes (-1: did not fit)
	srcs      []netip.AddrPort
	groups    []rxGroup // per-link packets of the current batch
	ngroups   int
	scratch   []byte // a record copy for proving a pending epoch
	kernelRx  int64  // the kernel's receive time of the batch (latency.go), or 0
}

// rxGroup is one link's packets of the current batch.
type rxGroup struct {
	l     *Link
	bufs  [][]byte
	bytes uint64
}

func newRxBatch(n int) *rxBatch {
	rx := &rxBatch{
		bufs:      make([][]byte, n),
		recvViews: make([][]byte, n),
		sizes:     make([]int, n),
		srcs:      make([]netip.AddrPort, n),
		scratch:   make([]byte, rxSlotSize),
	}
	for i := range rx.bufs {
		rx.bufs[i] = make([]byte, rxSlotSize)
		rx.recvViews[i] = rx.bufs[i][recOff:]
	}
	return rx
}

// group returns l's group in the current batch, adding it if needed.
func (rx *rxBatch) group(l *Link) *rxGroup {
	for i := 0; i < rx.ngroups; i++ {
		if rx.groups[i].l == l {
			return &rx.groups[i]
		}
	}
	if rx.ngroups == len(rx.groups) {
		rx.groups = append(rx.groups, rxGroup{bufs: make([][]byte, 0, len(rx.bufs))})
	}
	g := &rx.groups[rx.ngroups]
	rx.ngroups++
	g.l = l
	return g
}

// deliver hands each link its packets and resets the groups.
func (rx *rxBatch) deliver() {
	for i := 0; i < rx.ngroups; i++ {
		g := &rx.groups[i]
		if len(g.bufs) > 0 {
			g.l.deliver(g.bufs, g.bytes)
		}
		clear(g.bufs) // borrowed by the receiver only for its call
		g.bufs, g.l, g.bytes = g.bufs[:0], nil, 0
	}
	rx.ngroups = 0
}

// rxCounts are a batch's drop counts, added to the manager's counters
// once per batch.
type rxCounts struct {
	garbage, malformed, unknownSource                     uint64
	tampered, replayed, oldEpoch, unknownEpoch, truncated uint64
}

func (c *rxCounts) flush(m *counters) {
	add := func(a interface{ Add(uint64) uint64 }, v uint64) {
		if v != 0 {
			a.Add(v)
		}
	}
	add(&m.garbage, c.garbage)
	add(&m.malformed, c.malformed)
	add(&m.unknownSource, c.unknownSource)
	add(&m.tampered, c.tampered)
	add(&m.replayed, c.replayed)
	add(&m.oldEpoch, c.oldEpoch)
	add(&m.unknownEpoch, c.unknownEpoch)
	add(&m.truncated, c.truncated)
	*c = rxCounts{}
}

// count attributes an Opener's refusal.
func (c *rxCounts) count(err error) {
	switch err {
	case record.ErrAuth:
		c.tampered++
	case record.ErrReplay:
		c.replayed++
	case record.ErrOldEpoch:
		c.oldEpoch++
	case record.ErrTruncated:
		c.truncated++
	case record.ErrMalformed:
		c.malformed++
	default: // ErrUnknownEpoch, ErrClosed (keys being dropped)
		c.unknownEpoch++
	}
}

// demux runs stages 2-6 over the first n datagrams of rx, read by the
// reader of receive slot slot; read is when the read returned
// (latency.Now).
func (m *Manager) demux(rx *rxBatch, n, slot int, read int64) {
	var (
		c       rxCounts
		table   = m.routes.load()
		lastSrc netip.AddrPort
		lastL   *Link
	)
	for i := 0; i < n; i++ {
		size := rx.sizes[i]
		if size < 0 {
			c.malformed++
			continue
		}
		b := rx.recvViews[i][:size]
		src := rx.srcs[i]
		if !record.IsDataRecord(b) {
			switch m.known.screen(b, src) {
			case dropNone:
				m.muxc.push(b, src)
			case dropGarbage:
				c.garbage++
			case dropMalformed:
				c.malformed++
			case dropUnknownSource:
				c.unknownSource++
			}
			continue
		}
		if src != lastSrc || lastL == nil {
			lastSrc, lastL = src, table.links[src]
		}
		if lastL == nil {
			c.unknownSource++
			continue
		}
		openInto(rx, lastL, i, size, slot, &c)
	}
	if rx.ngroups > 0 {
		lat := &m.counters.lat
		opened := latency.Now()
		lat.rxOpen.Observe(opened - read)
		rx.deliver()
		lat.rxDeliver.Observe(latency.Now() - opened)
	}
	c.flush(&m.counters)
}

// openInto opens the record in slot buffer i for link l and, if it is
// authentic and new, adds its plaintext to l's group.
func openInto(rx *rxBatch, l *Link, i, size, slot int, c *rxCounts) {
	ks := l.keys.Load()
	if ks == nil {
		l.receiveErrors.Add(1)
		c.unknownEpoch++ // no keys yet (handshaking) or any more (closing)
		return
	}
	rec := rx.recvViews[i][:size]
	pt, err := ks.openers[slot].OpenInPlace(rec)
	if err == record.ErrUnknownEpoch {
		pt, err = ks.openPending(rec, slot, rx.scratch)
	}
	if err != nil {
		l.receiveErrors.Add(1)
		c.count(err)
		return
	}
	g := rx.group(l)
	g.bufs = append(g.bufs, rx.bufs[i][:HeaderRoom+len(pt)])
	g.bytes += uint64(len(pt))
}

// recordEpoch is the epoch field of a record header (the caller checked
// the length).
func recordEpoch(b []byte) uint16 { return binary.BigEndian.Uint16(b[3:5]) }

// routeTable maps a remote address to the link whose selected path sends
// from it. Immutable once published.
type routeTable struct {
	links map[netip.AddrPort]*Link
}

// routes is the manager's route table and how it is changed.
type routes struct {
	mu  sync.Mutex // serializes writers; readers only load
	cur atomic.Pointer[routeTable]
}

var emptyRoutes = &routeTable{}

// load returns the current table (never nil).
func (r *routes) load() *routeTable {
	if t := r.cur.Load(); t != nil {
		return t
	}
	return emptyRoutes
}

// update maps add to l (invalid: nothing) and removes the addresses in
// drop that still map to l. Control path only (it copies the table).
func (r *routes) update(l *Link, add netip.AddrPort, drop ...netip.AddrPort) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.load()
	next := &routeTable{links: make(map[netip.AddrPort]*Link, len(cur.links)+1)}
	for k, v := range cur.links {
		if v == l && k != add && slices.Contains(drop, k) {
			continue
		}
		next.links[k] = v
	}
	if add.IsValid() {
		next.links[add] = l
	}
	r.cur.Store(next)
}
