package tunnel

/* Relayed records on a batched socket (TURN over UDP)
 *
 * pion's TURN client owns a UDP TURN allocation: it allocates, creates
 * permissions, binds channels and refreshes them, all through the relay
 * socket that relayNet opened (relayConn). This file takes the data records
 * of a link whose selected pair starts at that allocation off pion's
 * one-datagram-per-call path, once pion has bound a channel to the peer:
 *
 * Learning (any goroutine that writes or reads the relay socket, control
 * datagrams only):
 *   - an Allocate success response read from the server gives the
 *     allocation's relayed address, which is the local relay candidate's
 *     address (Manager.relays.find maps a route to its socket);
 *   - a ChannelBind request pion writes gives channel number ↔ peer
 *     address; the first ChannelData pion itself writes on that channel
 *     shows the server accepted the bind (pion sends ChannelData only on a
 *     bound channel), and from then on the channel is ready.
 *
 * Send (WriteBatch, the caller's goroutine, under the link's txMu):
 *   records are sealed with chanHdrLen bytes of header room in front of
 *   them; on a ready channel the 4-byte ChannelData header is written there
 *   in place and the batch leaves in one sendmmsg on the relay socket,
 *   runs of equal-sized messages GSO-coalesced (socket_linux.go), zero
 *   copies, zero allocations. Before the channel is ready, records go
 *   through ice.Conn as before (pion wraps them in Send indications).
 *
 * Receive (pion's TURN read loop, which calls relayConn.ReadFrom; the only
 *   reader of the socket):
 *   1. once a link has attached to the socket, the reader switches to
 *      batched reads (recvmmsg, UDP_GRO) into its own slot buffers, each
 *      datagram at recOff-chanHdrLen so that a record inside ChannelData
 *      lands at recOff and its plaintext at HeaderRoom;
 *   2. ChannelData from the server on a channel whose peer a link is
 *      attached for, carrying a data record: opened in place with this
 *      reader's own Opener for the link's key state (a record of an epoch
 *      not installed yet goes the slow way below, which can install it);
 *   3. each link's packets are delivered as one batch (Link.deliver);
 *   4. every other datagram is queued, in order, and handed to pion one
 *      per ReadFrom call (copied into pion's buffer) before the next read.
 *
 * Buffers: slot buffers belong to the reader and are reused for every
 * batch; a ReceiveFunc borrows them for its call only. Send buffers are
 * the caller's (borrowed, as in datapath.go).
 *
 * Order: a link's records leave in batch order on one path; a switch
 * between the slow and the fast path happens between batches. Received
 * records of one socket are delivered in arrival order; the ones that go
 * the slow way (through pion and the ICE reader) may overtake or trail
 * them by a batch.
 *
 * TURN over TCP and TLS has the same fast path in relaystream.go; the
 * learning (relayLearn) and the reader's Openers are shared.
 */

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/pion/transport/v5"

	"github.com/meshd/meshd/internal/stunwire"
	"github.com/meshd/meshd/tunnel/record"
)

const (
	// chanHdrLen is a TURN ChannelData header: channel number, length.
	chanHdrLen = 4
	// relayRxBatch is how many datagrams a relay socket's reader handles
	// per batch. Smaller than the shared socket's: a node may hold one
	// active relay socket per relayed link, and every slot is rxSlotSize.
	relayRxBatch = 32
	// minChannel and maxChannel bound TURN channel numbers (RFC 8656
	// 12: 0x4000 through 0x4FFF).
	minChannel, maxChannel = 0x4000, 0x4fff
)

// relayChan is one channel of an allocation.
type relayChan struct {
	num   uint16
	peer  netip.AddrPort
	ready bool // pion has sent ChannelData on it (the server accepted it)
}

// relayLink is a link whose route sends to peer through this socket.
type relayLink struct {
	peer netip.AddrPort
	l    *Link
}

// relayTable is what a relay socket knows about its allocation. Immutable
// once published.
type relayTable struct {
	relayed netip.AddrPort // the allocation's relayed address (invalid: not seen)
	server  netip.AddrPort // the TURN server (where the Allocate answer came from)
	chans   []relayChan    // at most maxRelayPeers
	links   []relayLink    // at most maxRelayPeers
}

// link returns the link attached for peer, or nil.
func (t *relayTable) link(peer netip.AddrPort) *Link {
	for i := range t.links {
		if t.links[i].peer == peer {
			return t.links[i].l
		}
	}
	return nil
}

// channel returns the entry for channel num, or nil.
func (t *relayTable) channel(num uint16) *relayChan {
	for i := range t.chans {
		if t.chans[i].num == num {
			return &t.chans[i]
		}
	}
	return nil
}

// peer returns the entry bound to peer, or nil.
func (t *relayTable) peer(ap netip.AddrPort) *relayChan {
	for i := range t.chans {
		if t.chans[i].peer == ap {
			return &t.chans[i]
		}
	}
	return nil
}

var emptyRelayTable = &relayTable{}

// fastRelayNet gives relayNet UDP sockets with the fast path: what its
// ListenPacket returns on the host's network is a *relaySocket.
type fastRelayNet struct {
	transport.Net
}

// ListenPacket wraps the host's UDP sockets; others (vnet) pass through.
func (n fastRelayNet) ListenPacket(network, address string) (net.PacketConn, error) {
	pc, err := n.Net.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	uc, ok := pc.(*net.UDPConn)
	if !ok || !fastSocketsSupported {
		return pc, nil
	}
	return &relaySocket{UDPConn: uc, fast: relayFast{uc: uc}}, nil
}

// relaySocket is a TURN client's UDP socket with the fast data path: pion
// reads and writes it as a net.PacketConn (through relayConn, which
// filters and gates); data records of attached links bypass pion.
type relaySocket struct {
	*net.UDPConn
	fast relayFast
}

// WriteTo learns from pion's datagrams (observeWrite) and sends them.
func (s *relaySocket) WriteTo(p []byte, addr net.Addr) (int, error) {
	if s.fast.serverSeen.Load() == nil {
		if ap, ok := addrPortOf(addr); ok {
			s.fast.serverSeen.CompareAndSwap(nil, &ap)
		}
	}
	s.fast.observeWrite(p)
	return s.UDPConn.WriteTo(p, addr)
}

// ReadFrom returns the next datagram that is not a data record of an
// attached link; those are delivered on the way (see the file comment).
// pion's TURN read loop is the only caller.
func (s *relaySocket) ReadFrom(p []byte) (int, net.Addr, error) {
	var (
		n   int
		src netip.AddrPort
		err error
	)
	if s.fast.active() {
		n, src, err = s.fast.read(p)
	} else {
		n, src, err = s.UDPConn.ReadFromUDPAddrPort(p)
		src = unmapAddrPort(src)
	}
	if err != nil {
		return n, nil, err
	}
	s.fast.observeRead(p[:n], src)
	return n, net.UDPAddrFromAddrPort(src), nil
}

// find returns the fast path of the open relay socket or TURN stream
// whose allocation has the relayed address relayed, or nil.
func (g *relayGuard) find(relayed netip.AddrPort) relayPath {
	if !relayed.IsValid() {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.live {
		if s, ok := c.PacketConn.(*relaySocket); ok && s.fast.table().relayed == relayed {
			return &s.fast
		}
	}
	for s := range g.streams {
		if s.fast.table().relayed == relayed {
			return s
		}
	}
	return nil
}

// relayFast is a relay socket's fast data path (see the file comment).
type relayFast struct {
	// Immutable after fastRelayNet.ListenPacket.
	uc *net.UDPConn // the socket

	// serverSeen is the first destination pion wrote to: its TURN server
	// (a TURN client writes nowhere else). Only an answer from there can
	// teach the relayed address.
	serverSeen atomic.Pointer[netip.AddrPort]

	// relayLearn's mu also serializes the creation of fc.
	relayLearn
	fc      atomic.Pointer[fastConn] // batched I/O on uc, made when a link first attaches
	bufSize int                      // socket buffers for fc (Options.SocketBuffer rules)

	// Owned by the reader (pion's TURN read loop).
	rx   *rxBatch
	frx  *fastRx
	rfc  *fastConn    // fc as the reader set it up (UDP_GRO on)
	q    []int        // datagrams of rx for pion, in arrival order
	qi   int          // next of q to hand over
	opns relayOpeners // this reader's Openers, one per key state seen
}

// relayPath is the fast data path of one TURN client's transport (a UDP
// relay socket, relayFast, or a TCP/TLS stream, turnStream) for the links
// whose route starts at its allocation. The route holds it; the methods
// are safe for concurrent use.
type relayPath interface {
	// sendRecords sends records to peer as ChannelData and reports
	// whether it did (false: no ready channel; the caller sends the slow
	// way). Each recs[i] starts with chanHdrLen bytes of room for the
	// header. Called under the link's txMu. borrowed: recs are not
	// retained.
	sendRecords(tx *fastTx, recs [][]byte, peer netip.AddrPort) (bool, error)
	// attach makes l the receiver of peer's records; detach stops that
	// (invalid peer: any peer). Control path (the link's run goroutine).
	attach(l *Link, peer netip.AddrPort)
	detach(l *Link, peer netip.AddrPort)
}

var (
	_ relayPath = (*relayFast)(nil)
	_ relayPath = (*turnStream)(nil)
)

// relayLearn is what a TURN client's transport has learnt of its
// allocation from pion's own traffic, and the links attached to it.
type relayLearn struct {
	mu  sync.Mutex // serializes changes of tab
	tab atomic.Pointer[relayTable]
}

// relayOpener is a reader's Opener for one key state.
type relayOpener struct {
	ks *keyState
	op *record.Opener
}

// relayOpeners are one reader's Openers, one per key state seen.
type relayOpeners []relayOpener

func (f *relayLearn) table() *relayTable {
	if t := f.tab.Load(); t != nil {
		return t
	}
	return emptyRelayTable
}

// update publishes a changed copy of the table. fn returns false to keep
// the current one.
func (f *relayLearn) update(fn func(t *relayTable) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur := f.table()
	next := &relayTable{
		relayed: cur.relayed, server: cur.server,
		chans: append([]relayChan(nil), cur.chans...), links: append([]relayLink(nil), cur.links...),
	}
	if fn(next) {
		f.tab.Store(next)
	}
}

// observeWrite learns from a datagram (or stream frame) pion writes to
// the server: a ChannelBind request's channel and peer, and a channel's
// first ChannelData. Cheap for anything else (a first-byte check and a
// table lookup).
func (f *relayLearn) observeWrite(p []byte) {
	if len(p) < chanHdrLen {
		return
	}
	if p[0]&0xc0 == 0x40 { // ChannelData (RFC 7983: 64-79)
		num := binary.BigEndian.Uint16(p)
		if c := f.table().channel(num); c == nil || c.ready {
			return
		}
		f.update(func(t *relayTable) bool {
			c := t.channel(num)
			if c == nil || c.ready {
				return false
			}
			c.ready = true
			return true
		})
		return
	}
	num, peer, ok := parseChannelBind(p)
	if !ok {
		return
	}
	f.update(func(t *relayTable) bool {
		if c := t.channel(num); c != nil {
			if c.peer == peer {
				return false // a refresh
			}
			c.peer, c.ready = peer, false
			return true
		}
		if c := t.peer(peer); c != nil { // rebound to another number
			c.num, c.ready = num, false
			return true
		}
		if len(t.chans) >= maxRelayPeers {
			return false
		}
		t.chans = append(t.chans, relayChan{num: num, peer: peer})
		return true
	})
}

// observeRead learns the relayed address from the server's Allocate
// success response (a control datagram from the server).
func (f *relayFast) observeRead(p []byte, from netip.AddrPort) {
	if srv := f.serverSeen.Load(); srv == nil || *srv != from {
		return // not the server: relayConn drops it as foreign
	}
	f.learnAllocation(p, from)
}

// learnAllocation learns the relayed address from p if it is an Allocate
// success response, which the caller knows came from server.
func (f *relayLearn) learnAllocation(p []byte, server netip.AddrPort) {
	relayed, ok := parseAllocateSuccess(p)
	if !ok {
		return
	}
	f.update(func(t *relayTable) bool {
		t.relayed, t.server = relayed, server
		t.chans = t.chans[:0] // a new allocation: no channels yet
		return true
	})
}

// attach makes l the receiver of records from peer on this socket and
// readies the batched socket. Control path (setRoute).
func (f *relayFast) attach(l *Link, peer netip.AddrPort) {
	f.mu.Lock()
	if f.fc.Load() == nil {
		bufSize := l.m.opts.SocketBuffer
		if bufSize == 0 {
			bufSize = defaultSocketBuffer
		}
		if fc, err := newFastConn(f.uc, max(bufSize, 0), false); err == nil {
			f.fc.Store(fc)
		}
	}
	f.mu.Unlock()
	f.setLink(l, peer)
}

// detach stops delivering records from peer to l (invalid peer: from
// any peer). Control path.
func (f *relayLearn) detach(l *Link, peer netip.AddrPort) {
	f.update(func(t *relayTable) bool {
		n := len(t.links)
		t.links = slices.DeleteFunc(t.links, func(r relayLink) bool {
			return r.l == l && (r.peer == peer || !peer.IsValid())
		})
		return len(t.links) != n
	})
}

// setLink makes l the link for peer's records, whether or not a channel
// is bound to peer yet.
func (f *relayLearn) setLink(l *Link, peer netip.AddrPort) {
	f.update(func(t *relayTable) bool {
		for i := range t.links {
			if t.links[i].peer == peer {
				if t.links[i].l == l {
					return false
				}
				t.links[i].l = l
				return true
			}
		}
		if len(t.links) >= maxRelayPeers {
			return false
		}
		t.links = append(t.links, relayLink{peer: peer, l: l})
		return true
	})
}

// sendRecords sends records through the allocation to peer as ChannelData
// in one sendmmsg and reports whether it did (false: no ready channel or
// no batched socket; the caller sends the slow way). Each recs[i] starts
// with chanHdrLen bytes of room for the header.
//
// borrowed: recs are not retained.
func (f *relayFast) sendRecords(tx *fastTx, recs [][]byte, peer netip.AddrPort) (bool, error) {
	fc := f.fc.Load()
	if fc == nil {
		return false, nil
	}
	t := f.table()
	c := t.peer(peer)
	if c == nil || !c.ready || !t.server.IsValid() {
		return false, nil
	}
	for _, r := range recs {
		putChannelHeader(r, c.num)
	}
	return true, fc.send(tx, recs, t.server)
}

// putChannelHeader writes the ChannelData header for channel num into the
// first chanHdrLen bytes of frame, which carries the rest as its data.
func putChannelHeader(frame []byte, num uint16) {
	binary.BigEndian.PutUint16(frame[0:2], num)
	binary.BigEndian.PutUint16(frame[2:4], uint16(len(frame)-chanHdrLen))
}

// active reports whether the reader should read in batches.
func (f *relayFast) active() bool { return f.fc.Load() != nil }

// read returns the next datagram that is not a data record handled here,
// copied into p, reading a new batch when the queue is empty. Reader only.
func (f *relayFast) read(p []byte) (int, netip.AddrPort, error) {
	for f.qi >= len(f.q) {
		if err := f.readBatch(); err != nil {
			return 0, netip.AddrPort{}, err
		}
	}
	i := f.q[f.qi]
	f.qi++
	size := f.rx.sizes[i]
	if size < 0 {
		size = 0 // truncated: pion sees an empty datagram and drops it
	}
	n := copy(p, f.rx.recvViews[i][:size])
	return n, f.rx.srcs[i], nil
}

// readBatch reads one batch, handles its data records and queues the rest.
func (f *relayFast) readBatch() error {
	if f.rx == nil {
		f.rfc = f.fc.Load()
		f.rfc.enableGRO()
		f.rx = newRxBatch(relayRxBatch)
		for i := range f.rx.bufs {
			f.rx.recvViews[i] = f.rx.bufs[i][recOff-chanHdrLen:]
		}
		f.frx = f.rfc.newRx(relayRxBatch)
		f.q = make([]int, 0, relayRxBatch)
	}
	f.q, f.qi = f.q[:0], 0
	n, err := f.rfc.readBatch(f.frx, f.rx)
	if err != nil {
		return err
	}
	f.demux(n)
	return nil
}

// demux handles the first n datagrams of the reader's batch.
func (f *relayFast) demux(n int) {
	var (
		rx    = f.rx
		t     = f.table()
		c     rxCounts
		lastL *Link
	)
	for i := 0; i < n; i++ {
		l, rec := t.dataRecord(rx, i)
		if l == nil {
			f.q = append(f.q, i)
			continue
		}
		if l != lastL && lastL != nil {
			c.flush(&lastL.m.counters)
		}
		lastL = l
		if !f.open(l, i, rec, &c) {
			f.q = append(f.q, i)
		}
	}
	if lastL != nil {
		c.flush(&lastL.m.counters)
	}
	rx.deliver()
}

// dataRecord returns the link and the record of datagram i if it is
// ChannelData from the server, on a channel with an attached link,
// carrying a data record; nil otherwise.
func (t *relayTable) dataRecord(rx *rxBatch, i int) (*Link, []byte) {
	size := rx.sizes[i]
	if size < chanHdrLen+record.HeaderLen || rx.srcs[i] != t.server {
		return nil, nil
	}
	return t.channelRecord(rx.recvViews[i][:size])
}

// channelRecord returns the link and the record of ChannelData b (a
// datagram, or a frame with its padding) if it is on a channel with an
// attached link and carries a data record; nil otherwise.
func (t *relayTable) channelRecord(b []byte) (*Link, []byte) {
	if len(b) < chanHdrLen+record.HeaderLen || b[0]&0xc0 != 0x40 {
		return nil, nil
	}
	length := int(binary.BigEndian.Uint16(b[2:4]))
	if length > len(b)-chanHdrLen {
		return nil, nil // pion counts it
	}
	rec := b[chanHdrLen : chanHdrLen+length]
	if !record.IsDataRecord(rec) {
		return nil, nil
	}
	ch := t.channel(binary.BigEndian.Uint16(b[0:2]))
	if ch == nil {
		return nil, nil
	}
	l := t.link(ch.peer)
	if l == nil {
		return nil, nil
	}
	return l, rec
}

// open opens rec (datagram i's record, at recOff in its slot) for l and
// adds its plaintext to l's group. It returns false for a record to hand
// to the slow path (an epoch not installed yet, which the ICE reader can
// install); other failures are counted and dropped.
func (f *relayFast) open(l *Link, i int, rec []byte, c *rxCounts) bool {
	return f.opns.open(f.rx, l, i, rec, c)
}

// open opens rec, which is at recOff in rx's slot i, for l and adds its
// plaintext to l's group. It returns false for a record to hand to the
// slow path (an epoch not installed yet, which the ICE reader can
// install); other failures are counted and dropped.
func (o *relayOpeners) open(rx *rxBatch, l *Link, i int, rec []byte, c *rxCounts) bool {
	ks := l.keys.Load()
	if ks == nil {
		l.receiveErrors.Add(1)
		c.unknownEpoch++
		return true
	}
	op := o.get(ks)
	pt, err := op.OpenInPlace(rec)
	if err == record.ErrUnknownEpoch {
		return false
	}
	if err != nil {
		l.receiveErrors.Add(1)
		c.count(err)
		return true
	}
	g := rx.group(l)
	g.bufs = append(g.bufs, rx.bufs[i][:HeaderRoom+len(pt)])
	g.bytes += uint64(len(pt))
	return true
}

// get returns the reader's Opener for ks, making one the first time
// (once per session and reader, not per record).
func (o *relayOpeners) get(ks *keyState) *record.Opener {
	opns := *o
	for i := range opns {
		if opns[i].ks == ks {
			return opns[i].op
		}
	}
	// Keep the list short: drop key states no link uses any more.
	keep := opns[:0]
	for _, o := range opns {
		if o.ks.l.keys.Load() == o.ks {
			keep = append(keep, o)
		}
	}
	clear(opns[len(keep):])
	*o = append(keep, relayOpener{ks: ks, op: ks.rs.NewOpener()})
	return (*o)[len(*o)-1].op
}

// parseChannelBind returns the channel number and peer of a ChannelBind
// request; ok is false for anything else or a malformed message.
func parseChannelBind(p []byte) (num uint16, peer netip.AddrPort, ok bool) {
	if typ, ok := stunwire.Type(p); !ok || typ != stunwire.TypeChannelBindRequest {
		return 0, netip.AddrPort{}, false
	}
	var haveNum bool
	stunwire.WalkAttrs(p, func(typ uint16, v []byte) {
		switch typ {
		case stunwire.AttrChannelNumber:
			if len(v) >= 2 {
				num, haveNum = binary.BigEndian.Uint16(v), true
			}
		case stunwire.AttrXORPeerAddress:
			peer, _ = stunwire.XORAddr(p, v)
		}
	})
	if !haveNum || num < minChannel || num > maxChannel || !peer.IsValid() {
		return 0, netip.AddrPort{}, false
	}
	return num, peer, true
}

// parseAllocateSuccess returns the XOR-RELAYED-ADDRESS of an Allocate
// success response.
func parseAllocateSuccess(p []byte) (netip.AddrPort, bool) {
	if typ, ok := stunwire.Type(p); !ok || typ != stunwire.TypeAllocateSuccess {
		return netip.AddrPort{}, false
	}
	var relayed netip.AddrPort
	stunwire.WalkAttrs(p, func(typ uint16, v []byte) {
		if typ == stunwire.AttrXORRelayedAddress && !relayed.IsValid() {
			relayed, _ = stunwire.XORAddr(p, v)
		}
	})
	return relayed, relayed.IsValid()
}
