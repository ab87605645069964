package tunnel

/* Outbound pipeline: WriteBatch → socket
 *
 * WriteBatch runs every stage in the caller's goroutine (the overlay's TUN
 * reader), for one batch at a time per link (txMu, taken once per batch):
 *
 *   1. Load the link's key state and route (atomic pointers; either nil =
 *      link down, no data keys or no selected path).
 *   2. Seal each packet in place: the 13-byte record header goes into the
 *      header room in front of bufs[i][offset:], the 16-byte tag into the
 *      buffer's tail capacity (a buffer without 16 bytes of tail capacity is
 *      first copied into the link's spill arena). Sequence numbers come from
 *      the record session's atomic counter, in batch order.
 *   3. Send the whole batch:
 *      - direct path: one sendmmsg on the socket of the destination's
 *        family, runs of equal-sized records GSO-coalesced into
 *        super-datagrams (socket_linux.go), zero copies;
 *      - relayed path (our end is a TURN relay candidate), once pion has
 *        bound a channel to the peer: each record framed as TURN
 *        ChannelData in place (4 bytes of the header room); over UDP the
 *        batch leaves in one sendmmsg (GSO) on the relay socket
 *        (relayfast.go), zero copies; over TCP/TLS in one write on the
 *        stream, padded to 4 bytes (relaystream.go);
 *      - other relayed paths (vnet, before the channel is bound): one
 *        ice.Conn.Write per record; pion's TURN client wraps it.
 *
 * Buffers: bufs belong to the caller and are borrowed for the call; the
 * header room and tail capacity are overwritten. Nothing is retained (the
 * record list is cleared before returning).
 *
 * Stage times (TxSeal, TxSend; latency.go): one clock read per stage per
 * batch.
 *
 * Order: a batch's records leave in batch order. Concurrent WriteBatch
 * calls on one link are serialized; across links nothing is ordered.
 *
 * Inbound delivery (Link.deliver) is at the end of this file; the inbound
 * pipeline is in demux.go.
 */

import (
	"errors"
	"io"
	"net"
	"net/netip"

	"github.com/pion/dtls/v3"
	"github.com/pion/ice/v4"

	"github.com/meshd/meshd/internal/latency"
	"github.com/meshd/meshd/tunnel/record"
)

// HeaderRoom is the space in front of every packet, in both directions. It
// equals overlay.HeaderRoom (a test checks), which this package does not
// import.
const HeaderRoom = 64

// MaxOverhead is the most bytes a link adds to a packet on the wire beyond
// the UDP/IP headers: the data record header (13) and AEAD tag (16), and a
// TURN ChannelData header (4) on relayed paths. The daemon sizes the TUN MTU
// with it.
const MaxOverhead = record.Overhead + 4

// ReplayWindow is how far behind the newest record a data record may arrive
// and still be accepted once (record.ReplayWindow, at least 2048); the DTLS
// control channel uses the same window.
const ReplayWindow = record.ReplayWindow

// route is where a link's records go. Immutable once published.
type route struct {
	local, remote Candidate      // the selected pair
	dst           netip.AddrPort // direct: the peer's address (also the source its records come from)
	dstUDP        *net.UDPAddr   // dst for generic conns that need a net.Addr
	sock          *sock          // direct: the socket that reaches dst
	ice           *ice.Conn      // relayed: records go through the agent
	relay         relayPath      // relayed with the fast path (a UDP TURN socket or a TCP/TLS stream), or nil
}

// txState is a link's send scratch, used under txMu.
type txState struct {
	keys   *keyState // the sealer's key state
	sealer *record.Sealer
	recs   [][]byte
	arena  []byte // copies of packets without tail room for the tag
	fast   fastTx
}

// WriteBatch sends packets bufs[i][offset:] to the peer, in order, one data
// record each. It may overwrite bufs[i][:offset] (the record header goes
// just before offset) and 16 bytes of each buffer's tail capacity (the
// tag). It returns how many were handed to the network and, if not all, an
// error: one matching ErrLinkDown (and Options.LinkDownError) when the link
// cannot carry traffic now, ErrBadOffset or ErrPacketTooLarge for a bad
// packet (the packets before it were sent). offset must be at least
// HeaderRoom. Safe for concurrent use.
//
// borrowed: bufs belong to the caller and are not retained.
func (l *Link) WriteBatch(bufs [][]byte, offset int) (int, error) {
	if offset < HeaderRoom {
		return 0, ErrBadOffset
	}
	ks, rt := l.keys.Load(), l.route.Load()
	if ks == nil || rt == nil {
		l.sendErrors.Add(uint64(len(bufs)))
		return 0, l.m.errLinkDown
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	lat := &l.m.counters.lat
	start := latency.Now()
	l.txMu.Lock()
	defer l.txMu.Unlock()
	tx := &l.tx
	if tx.keys != ks {
		tx.keys, tx.sealer = ks, ks.rs.NewSealer()
	}
	tx.reserveSpill(bufs, offset)
	var (
		n     = len(bufs)
		err   error
		bytes uint64
		spill int
	)
	for i, b := range bufs {
		if offset > len(b) {
			n, err = i, ErrBadOffset
			break
		}
		size := len(b) - offset
		buf, off := b, offset
		if cap(b)-len(b) < record.TagLen {
			end := spill + chanHdrLen + record.HeaderLen + size
			buf, off = tx.arena[spill:end:end+record.TagLen], chanHdrLen+record.HeaderLen
			copy(buf[off:], b[offset:])
			spill = end + record.TagLen
		}
		rec, e := tx.sealer.SealInPlace(buf, off, size)
		if e != nil {
			n, err = i, l.sealError(e)
			break
		}
		if rt.relay != nil { // room for a ChannelData header in front
			start := off - record.HeaderLen - chanHdrLen
			rec = buf[start : start+chanHdrLen+len(rec)]
		}
		tx.recs = append(tx.recs, rec)
		bytes += uint64(size)
	}
	if len(tx.recs) > 0 {
		sealed := latency.Now()
		lat.txSeal.Observe(sealed - start)
		if e := l.sendRecords(tx, rt); e != nil {
			n, err, bytes = 0, &linkDownError{alias: l.m.opts.LinkDownError, cause: e}, 0
		}
		lat.txSend.Observe(latency.Now() - sealed)
	}
	clear(tx.recs) // borrowed: keep nothing of the caller's buffers
	tx.recs = tx.recs[:0]
	l.packetsSent.Add(uint64(n))
	l.bytesSent.Add(bytes)
	if n < len(bufs) {
		l.sendErrors.Add(uint64(len(bufs) - n))
	}
	return n, err
}

// reserveSpill sizes the spill arena for the packets of bufs that have no
// room for the tag, before any is copied (growing it later would move
// records already sealed into it).
func (tx *txState) reserveSpill(bufs [][]byte, offset int) {
	need := 0
	for _, b := range bufs {
		if cap(b)-len(b) < record.TagLen && len(b) >= offset {
			need += chanHdrLen + record.Overhead + len(b) - offset
		}
	}
	if need > len(tx.arena) {
		tx.arena = make([]byte, need)
	}
}

func (l *Link) sealError(err error) error {
	switch err {
	case record.ErrTooLarge:
		return ErrPacketTooLarge
	case record.ErrShortBuffer:
		return ErrBadOffset
	default: // ErrClosed (keys dropped), ErrRecordLimit (rekey overdue)
		return &linkDownError{alias: l.m.opts.LinkDownError, cause: err}
	}
}

// sendRecords puts the sealed records on the wire by the route.
func (l *Link) sendRecords(tx *txState, rt *route) error {
	if rt.sock != nil {
		return rt.sock.sendRecords(&tx.fast, tx.recs, rt)
	}
	skip := 0
	if rt.relay != nil {
		if ok, err := rt.relay.sendRecords(&tx.fast, tx.recs, rt.remote.Addr); ok {
			return err
		}
		skip = chanHdrLen // the room for the header the fast path did not use
	}
	for _, r := range tx.recs {
		if _, err := rt.ice.Write(r[skip:]); err != nil {
			return err
		}
	}
	return nil
}

// setRoute points the link's records at the selected pair sel of session
// s (nil: no path). Run goroutine only.
func (l *Link) setRoute(s *session, sel *pairView) {
	o := &l.o
	var next *route
	if sel != nil && s != nil && s.iceConn != nil {
		next = &route{local: sel.local, remote: sel.remote}
		if sel.local.Type == "relay" {
			next.ice = s.iceConn
			next.relay = l.m.relays.find(sel.local.Addr)
		} else if sel.remote.Addr.IsValid() {
			next.dst = sel.remote.Addr
			next.sock = l.m.socks.forDst(next.dst)
			next.dstUDP = net.UDPAddrFromAddrPort(next.dst)
			if next.sock == nil {
				next = nil // no socket of that family: nothing to send with
			}
		} else {
			next = nil
		}
	}
	cur := l.route.Load()
	if cur != nil && next != nil && cur.local == next.local && cur.remote == next.remote && cur.ice == next.ice && cur.relay == next.relay {
		return
	}
	l.route.Store(next)
	l.moveRelay(cur, next)
	// The route table maps the current direct address and the previous
	// one to the link, so that records still in flight on the path just
	// left (or sent by a peer that switches a little later) are accepted.
	var addr netip.AddrPort
	if next != nil && next.ice == nil {
		addr = next.dst
	}
	switch {
	case addr == o.routeAddrs[0]:
	case addr == o.routeAddrs[1]:
		o.routeAddrs[0], o.routeAddrs[1] = addr, o.routeAddrs[0]
	default:
		l.m.routes.update(l, addr, o.routeAddrs[1])
		o.routeAddrs[0], o.routeAddrs[1] = addr, o.routeAddrs[0]
	}
}

// stopDataPath closes the link for data: no keys, no route, no addresses
// in the route table. Run goroutine only.
func (l *Link) stopDataPath() {
	l.keys.Store(nil)
	l.moveRelay(l.route.Swap(nil), nil)
	if a := l.o.routeAddrs; a[0].IsValid() || a[1].IsValid() {
		l.m.routes.update(l, netip.AddrPort{}, a[0], a[1])
		l.o.routeAddrs = [2]netip.AddrPort{}
	}
}

// moveRelay detaches the link from the relay socket of route cur and
// attaches it to the one of next (either nil: none), so that the socket's
// reader delivers the peer's records to it (relayfast.go). Run goroutine
// only.
func (l *Link) moveRelay(cur, next *route) {
	if cur != nil && cur.relay != nil && (next == nil || next.relay != cur.relay || next.remote.Addr != cur.remote.Addr) {
		cur.relay.detach(l, cur.remote.Addr)
	}
	if next != nil && next.relay != nil {
		next.relay.attach(l, next.remote.Addr)
	}
}

// receiver is the installed ReceiveFunc (boxed for atomic.Pointer).
type receiver struct {
	fn func(bufs [][]byte, offset int)
}

// SetReceiver installs where the link delivers what it receives: packet i
// is bufs[i][offset:] with offset == HeaderRoom. nil discards. Safe for
// concurrent use. The function is called from the socket reader (or, on a
// relayed path, the session's ICE reader) that received the batch, one
// batch at a time for this link.
//
// borrowed: the buffers belong to the link and are valid during the call
// only; the function may overwrite them, including their spare capacity.
func (l *Link) SetReceiver(fn func(bufs [][]byte, offset int)) {
	if fn == nil {
		l.recv.Store(nil)
		return
	}
	l.recv.Store(&receiver{fn: fn})
}

// deliver hands one batch of opened packets to the receiver. rxMu makes
// batches of this link arriving through different readers take turns, as
// the overlay expects; it is taken once per batch.
func (l *Link) deliver(bufs [][]byte, bytes uint64) {
	l.packetsReceived.Add(uint64(len(bufs)))
	l.bytesReceived.Add(bytes)
	r := l.recv.Load()
	if r == nil {
		return
	}
	l.rxMu.Lock()
	r.fn(bufs, HeaderRoom)
	l.rxMu.Unlock()
}

// isConnClosed reports whether a dtls.Conn.Read error means the session is
// over (closed locally, close_notify or a fatal alert from the peer, or the
// transport gone) rather than one bad record.
func isConnClosed(err error) bool {
	var fe *dtls.FatalError
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, dtls.ErrConnClosed) || errors.As(err, &fe)
}
