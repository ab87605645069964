package discovery

/* The embedded TURN server's forwarding fast path (UDP)
 *
 * pion's TURN server keeps the protocol: authentication, allocations,
 * permissions, channel binds, refreshes, Data and Send indications, and
 * everything an external client (coturn's tools, browsers) sends. It
 * forwards one datagram per call, though, with a goroutine per allocation
 * and several allocations per datagram. This file forwards the bulk of a
 * relayed link, ChannelData on bound channels over UDP, in batches,
 * beneath pion's sockets (turnstream.go does the same for clients on the
 * TCP and TLS listeners, with this file's bindings and relay sockets):
 *
 * Learning (control datagrams only, on their way through the wrappers):
 *   - an Allocate success response pion writes to client C names the relay
 *     port (XOR-RELAYED-ADDRESS): C's allocation is that relay socket;
 *   - a ChannelBind request read from C is remembered by transaction ID;
 *     pion's success response to it (authenticated, permitted by
 *     peerPolicy) binds (C, channel) ↔ (relay socket, peer) for the
 *     permission lifetime; a CreatePermission success response for the
 *     peer's address, or a new ChannelBind, extends it. A relay socket pion
 *     closes (allocation deleted or expired) takes its bindings with it.
 *
 * Client → peer (pion's listener read loop, the only reader of the
 * listener): a batch is read with recvmmsg; each ChannelData on a bound
 * channel is sent on, runs to one peer with one sendmmsg (GSO for equal
 * sizes) from the relay socket; every other datagram is queued and handed
 * to pion one per ReadFrom, in order.
 *
 * Peer → client (pion's per-allocation relay read loop, the only reader of
 * its relay socket): a batch is read with recvmmsg into slots with 4 bytes
 * of room in front; each datagram from a bound peer gets its ChannelData
 * header in place and runs to one client leave with one sendmmsg (GSO)
 * from the listener; the rest goes to pion as above.
 *
 * Nothing here allocates per datagram. Buffers are the readers' own slots,
 * reused per batch. Order: datagrams of one direction of one binding keep
 * their order; fast and pion-handled datagrams may interleave differently
 * within a batch.
 */

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/stunwire"
)

const (
	// turnPermissionLifetime is how long a bound channel forwards after
	// its last ChannelBind or CreatePermission answer (RFC 8656: 300 s;
	// a little less, so that the fast path never outlives pion's state).
	turnPermissionLifetime = 290 * time.Second
	// turnFastBatch is how many datagrams one reader handles per batch.
	turnFastBatch = 64
	// turnSlotSize holds the largest datagram pion relays (its relay
	// buffer is 1600 bytes) and a ChannelData header in front.
	turnSlotSize = 4 + 2048
	// turnMaxPending bounds remembered ChannelBind/CreatePermission
	// requests awaiting an answer.
	turnMaxPending = 4096
	// turnMaxBindings bounds the bindings the fast path holds.
	turnMaxBindings = 65536
	// turnSocketBuffer is the kernel buffer size asked for the listener
	// and each relay socket that carries a binding.
	turnSocketBuffer = 4 << 20

	maxPeersPerPermission  = 8
	minChannel, maxChannel = 0x4000, 0x4fff
)

var errRelayFamily = errors.New("discovery: TURN relay: destination of the other address family")

// clientID names a TURN client: by its address on the UDP listener, or by
// its stream (a TCP or TLS connection, turnstream.go).
type clientID struct {
	addr   netip.AddrPort  // UDP: the client's address; zero for a stream
	stream *turnStreamConn // stream: the client's connection; nil for UDP
}

// turnBinding is one bound channel. Immutable once published.
type turnBinding struct {
	client clientID
	ch     uint16
	relay  *turnRelaySock
	peer   netip.AddrPort
	until  time.Time
}

type clientKey struct {
	client clientID
	ch     uint16
}

type peerKey struct {
	relay *turnRelaySock
	peer  netip.AddrPort
}

// turnTable is the fast path's bindings. Immutable once published.
type turnTable struct {
	byClient map[clientKey]*turnBinding
	byPeer   map[peerKey]*turnBinding
}

// pendingReq is a ChannelBind or CreatePermission request awaiting pion's
// answer.
type pendingReq struct {
	client clientID
	ch     uint16           // ChannelBind: the channel
	peers  []netip.AddrPort // ChannelBind: the peer; CreatePermission: the peers (port ignored)
}

// turnFast is the embedded server's fast path over its UDP listener.
type turnFast struct {
	ln     *turnListener
	policy *peerPolicy

	tab atomic.Pointer[turnTable]

	// mu guards the following (control path only).
	mu      sync.Mutex
	pending map[[12]byte]pendingReq
	relays  map[relayKey]*turnRelaySock // open relay sockets by family and port
	clients map[clientID]*turnRelaySock // client → its allocation's relay socket

	// fwd counts what the fast path forwarded, by the client's transport
	// and direction (TURNFastStats).
	fwd [numTURNTransports][2]turnFwdCount
}

// turnTransport is how a client reaches the embedded server.
type turnTransport uint8

const (
	turnUDP turnTransport = iota
	turnTCP
	turnTLS
	numTURNTransports
)

func (t turnTransport) String() string {
	switch t {
	case turnUDP:
		return "udp"
	case turnTCP:
		return "tcp"
	case turnTLS:
		return "tls"
	}
	return "unknown"
}

// Directions of turnFast.fwd.
const (
	dirToPeer   = 0 // from a client's allocation out to its peer
	dirToClient = 1 // from the peer back to the client
)

// turnFwdCount is one transport's and direction's fast-path totals.
type turnFwdCount struct{ frames, bytes atomic.Uint64 }

// transport is how the client reaches the server.
func (id clientID) transport() turnTransport {
	switch {
	case id.stream == nil:
		return turnUDP
	case id.stream.tls != nil:
		return turnTLS
	}
	return turnTCP
}

// count adds a run of datagrams forwarded for client in direction dir,
// payload bytes of them (ChannelData headers not counted).
func (f *turnFast) count(client clientID, dir int, run int, payload int) {
	c := &f.fwd[client.transport()][dir]
	c.frames.Add(uint64(run))
	c.bytes.Add(uint64(payload))
}

// TURNForward is what the embedded TURN server's fast path forwarded for
// the clients of one transport in one direction since Start.
type TURNForward struct {
	Transport string // "udp", "tcp" (TURN over TCP) or "tls" (TURN over TLS)
	Direction string // "to_peer" (client → peer) or "to_client" (peer → client)
	Frames    uint64 // datagrams (to a stream client: ChannelData frames)
	Bytes     uint64 // their payload bytes, ChannelData headers and padding not counted
}

// TURNFastStats returns the embedded TURN server's fast-path totals, one
// per transport and direction (udp, tcp, tls × to_peer, to_client); nil
// without an embedded server or its fast path. What pion forwards itself
// (before a channel is bound, Send and Data indications, RFC 6062 data
// connections) is not in them.
func (c *Coordinator) TURNFastStats() []TURNForward {
	if c.turn == nil {
		return nil
	}
	return c.turn.fast.stats()
}

// stats are f's totals (TURNFastStats); nil for a nil f.
func (f *turnFast) stats() []TURNForward {
	if f == nil {
		return nil
	}
	out := make([]TURNForward, 0, 2*numTURNTransports)
	for t := range numTURNTransports {
		for dir, name := range [2]string{dirToPeer: "to_peer", dirToClient: "to_client"} {
			out = append(out, TURNForward{Transport: t.String(), Direction: name,
				Frames: f.fwd[t][dir].frames.Load(), Bytes: f.fwd[t][dir].bytes.Load()})
		}
	}
	return out
}

// newTURNFast returns the fast path of one embedded server, or nil where
// batched I/O is unavailable (pion then forwards everything).
func newTURNFast(policy *peerPolicy) *turnFast {
	if !batchIOSupported {
		return nil
	}
	f := &turnFast{
		policy:  policy,
		pending: make(map[[12]byte]pendingReq),
		relays:  make(map[relayKey]*turnRelaySock),
		clients: make(map[clientID]*turnRelaySock),
	}
	f.tab.Store(&turnTable{})
	return f
}

// wrapListener wraps the UDP listener uc for pion; ok is false when it
// cannot be read in batches (it is then used as it is). Called once, before
// pion starts.
func (f *turnFast) wrapListener(uc *net.UDPConn) (net.PacketConn, bool) {
	bc, err := newBatchConn(uc)
	if err != nil {
		return nil, false
	}
	bc.setBuffers(turnSocketBuffer)
	f.ln = &turnListener{UDPConn: uc, bc: bc, f: f, r: turnReader{tx: newTxBatch(turnFastBatch)}}
	return f.ln, true
}

// wrapRelay wraps a relay socket pion will own; other conns pass through.
func (f *turnFast) wrapRelay(pc net.PacketConn) net.PacketConn {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return pc
	}
	bc, err := newBatchConn(uc)
	if err != nil {
		return pc
	}
	s := &turnRelaySock{UDPConn: uc, bc: bc, f: f, r: turnReader{toClient: true, tx: newTxBatch(turnFastBatch)}}
	f.mu.Lock()
	f.relays[relayKeyOf(uc.LocalAddr().(*net.UDPAddr).AddrPort())] = s
	f.mu.Unlock()
	return s
}

// relayKey names a relay socket: a dual-stack relay may hold an IPv4 and
// an IPv6 socket on one port.
type relayKey struct {
	v6   bool
	port uint16
}

func relayKeyOf(ap netip.AddrPort) relayKey {
	return relayKey{v6: !ap.Addr().Unmap().Is4(), port: ap.Port()}
}

// relayClosed forgets a relay socket and its bindings.
func (f *turnFast) relayClosed(s *turnRelaySock) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := relayKeyOf(s.LocalAddr().(*net.UDPAddr).AddrPort())
	if f.relays[key] == s {
		delete(f.relays, key)
	}
	for c, r := range f.clients {
		if r == s {
			delete(f.clients, c)
		}
	}
	f.updateLocked(func(b *turnBinding) bool { return b.relay != s }, nil)
}

// updateLocked publishes a table with the bindings keep accepts, plus add.
func (f *turnFast) updateLocked(keep func(*turnBinding) bool, add *turnBinding) {
	cur := f.tab.Load()
	next := &turnTable{byClient: make(map[clientKey]*turnBinding, len(cur.byClient)+1), byPeer: make(map[peerKey]*turnBinding, len(cur.byPeer)+1)}
	now := time.Now()
	for k, b := range cur.byClient {
		if keep(b) && now.Before(b.until) {
			next.byClient[k] = b
			next.byPeer[peerKey{b.relay, b.peer}] = b
		}
	}
	if add != nil && len(next.byClient) < turnMaxBindings {
		if old := next.byClient[clientKey{add.client, add.ch}]; old != nil {
			delete(next.byPeer, peerKey{old.relay, old.peer})
		}
		if old := next.byPeer[peerKey{add.relay, add.peer}]; old != nil {
			delete(next.byClient, clientKey{old.client, old.ch})
		}
		next.byClient[clientKey{add.client, add.ch}] = add
		next.byPeer[peerKey{add.relay, add.peer}] = add
	}
	f.tab.Store(next)
}

// observeRequest remembers a ChannelBind or CreatePermission request
// from client (read from the listener or a stream, on its way to pion).
func (f *turnFast) observeRequest(p []byte, client clientID) {
	typ, ok := stunwire.Type(p)
	if !ok || (typ != stunwire.TypeChannelBindRequest && typ != stunwire.TypeCreatePermissionRequest) {
		return
	}
	req := pendingReq{client: client}
	var haveCh bool
	stunwire.WalkAttrs(p, func(t uint16, v []byte) {
		switch t {
		case stunwire.AttrChannelNumber:
			if len(v) >= 2 {
				req.ch, haveCh = binary.BigEndian.Uint16(v), true
			}
		case stunwire.AttrXORPeerAddress:
			if ap, ok := stunwire.XORAddr(p, v); ok && len(req.peers) < maxPeersPerPermission {
				req.peers = append(req.peers, ap)
			}
		}
	})
	if len(req.peers) == 0 {
		return
	}
	if typ == stunwire.TypeChannelBindRequest && (!haveCh || req.ch < minChannel || req.ch > maxChannel || len(req.peers) != 1) {
		return
	}
	var id [12]byte
	copy(id[:], p[8:20])
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) >= turnMaxPending {
		clear(f.pending) // answers older than the newest few thousand requests are long lost
	}
	f.pending[id] = req
}

// observeAnswer learns from a response pion writes to client.
func (f *turnFast) observeAnswer(p []byte, client clientID) {
	typ, ok := stunwire.Type(p)
	if !ok {
		return
	}
	switch typ {
	case stunwire.TypeAllocateSuccess:
		var relayed netip.AddrPort
		stunwire.WalkAttrs(p, func(t uint16, v []byte) {
			if t == stunwire.AttrXORRelayedAddress && !relayed.IsValid() {
				relayed, _ = stunwire.XORAddr(p, v)
			}
		})
		if !relayed.IsValid() {
			return
		}
		f.mu.Lock()
		if s := f.relays[relayKeyOf(relayed)]; s != nil {
			f.clients[client] = s
		}
		f.mu.Unlock()
	case stunwire.TypeChannelBindSuccess, stunwire.TypeCreatePermissionSuccess:
		var id [12]byte
		copy(id[:], p[8:20])
		f.mu.Lock()
		defer f.mu.Unlock()
		req, ok := f.pending[id]
		if !ok || req.client != client {
			return
		}
		delete(f.pending, id)
		s := f.clients[client]
		if s == nil {
			return
		}
		until := time.Now().Add(turnPermissionLifetime)
		if typ == stunwire.TypeChannelBindSuccess {
			peer := req.peers[0]
			if !f.policy.permitAddr(net.UDPAddrFromAddrPort(peer)) {
				return
			}
			s.activate()
			f.updateLocked(func(*turnBinding) bool { return true },
				&turnBinding{client: client, ch: req.ch, relay: s, peer: peer, until: until})
			return
		}
		// CreatePermission: refresh the bindings of the permitted peers.
		cur := f.tab.Load()
		for _, b := range cur.byClient {
			if b.client != client {
				continue
			}
			for _, ap := range req.peers {
				// The policy is checked again: the host's own addresses
				// and mesh ports it depends on change over time.
				if ap.Addr() == b.peer.Addr() && f.policy.permitAddr(net.UDPAddrFromAddrPort(b.peer)) {
					nb := *b
					nb.until = until
					f.updateLocked(func(*turnBinding) bool { return true }, &nb)
				}
			}
		}
	}
}

// turnListener is the UDP listener as pion sees it.
type turnListener struct {
	*net.UDPConn
	bc *batchConn
	f  *turnFast

	r turnReader // owned by pion's listener read loop
}

// WriteTo learns from pion's answers and sends them.
func (l *turnListener) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok && len(p) >= stunwire.HeaderLen && p[0] < 2 {
		ap := ua.AddrPort()
		l.f.observeAnswer(p, clientID{addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())})
	}
	return l.UDPConn.WriteTo(p, addr)
}

// ReadFrom returns the next datagram for pion, forwarding ChannelData of
// bound channels on the way (see the file comment).
func (l *turnListener) ReadFrom(p []byte) (int, net.Addr, error) {
	b, src, err := l.r.next(l.bc, 0, l.forward)
	if err != nil {
		return 0, nil, err
	}
	l.f.observeRequest(b, clientID{addr: src})
	return copy(p, b), net.UDPAddrFromAddrPort(src), nil
}

func (l *turnListener) forward(n int) {
	r := &l.r
	tab := l.f.tab.Load()
	now := time.Now()
	for i := 0; i < n; i++ {
		size := r.rx.sizes[i]
		b := r.rx.bufs[i]
		if size < 0 {
			continue // truncated: pion would drop it too
		}
		if size < 4 || b[0]&0xc0 != 0x40 {
			r.q = append(r.q, i)
			continue
		}
		length := int(binary.BigEndian.Uint16(b[2:4]))
		bd := tab.byClient[clientKey{clientID{addr: r.rx.srcs[i]}, binary.BigEndian.Uint16(b[0:2])}]
		if bd == nil || length > size-4 || !now.Before(bd.until) {
			r.q = append(r.q, i)
			continue
		}
		r.push(l.f, bd, b[4:4+length])
	}
	r.flush(l.f)
}

// turnRelaySock is a relay socket as pion sees it.
type turnRelaySock struct {
	*net.UDPConn
	bc     *batchConn
	f      *turnFast
	once   sync.Once
	closed sync.Once

	r turnReader // owned by pion's allocation read loop
}

// activate sizes the socket's buffers once it carries a binding.
func (s *turnRelaySock) activate() {
	s.once.Do(func() { s.bc.setBuffers(turnSocketBuffer) })
}

// Close forgets the socket's bindings and closes it.
func (s *turnRelaySock) Close() error {
	s.closed.Do(func() { s.f.relayClosed(s) })
	return s.UDPConn.Close()
}

// ReadFrom returns the next datagram for pion, forwarding datagrams of
// bound peers to their clients on the way.
func (s *turnRelaySock) ReadFrom(p []byte) (int, net.Addr, error) {
	b, src, err := s.r.next(s.bc, 4, s.forward)
	if err != nil {
		return 0, nil, err
	}
	return copy(p, b), net.UDPAddrFromAddrPort(src), nil
}

func (s *turnRelaySock) forward(n int) {
	r := &s.r
	tab := s.f.tab.Load()
	now := time.Now()
	for i := 0; i < n; i++ {
		size := r.rx.sizes[i]
		if size < 0 {
			continue // truncated: pion would drop it too
		}
		bd := tab.byPeer[peerKey{s, r.rx.srcs[i]}]
		if bd == nil || !now.Before(bd.until) {
			r.q = append(r.q, i)
			continue
		}
		b := r.rx.bufs[i][:4+size]
		binary.BigEndian.PutUint16(b[0:2], bd.ch)
		binary.BigEndian.PutUint16(b[2:4], uint16(size))
		r.push(s.f, bd, b)
	}
	r.flush(s.f)
}

// turnReader is one fast-path reader's batch state: the listener's or a
// relay socket's. Owned by the goroutine that reads that socket (pion's
// read loop for it).
type turnReader struct {
	toClient bool // immutable: a relay socket's reader, whose runs go from the listener to clients

	rx    *rxBatch
	q     []int // indexes in rx of the datagrams left for pion, in order
	qi    int   // the next of q to hand to pion
	tx    *txBatch
	run   [][]byte // borrowed: slots of rx forwarded together to runTo
	runTo *turnBinding
	sw    []byte // a relay socket's reader: frames to a stream client, written at once
}

// next returns the next datagram for pion and its source, reading batches
// from bc (datagrams at headroom bytes into their slots) and handing each
// to forward, which queues what it does not forward. borrowed: b is a
// slot of r.rx, valid until the next call.
func (r *turnReader) next(bc *batchConn, headroom int, forward func(n int)) (b []byte, src netip.AddrPort, err error) {
	if r.rx == nil {
		r.rx = newRxBatch(turnFastBatch, turnSlotSize, headroom)
		r.q = make([]int, 0, turnFastBatch)
		r.run = make([][]byte, 0, turnFastBatch)
	}
	for r.qi >= len(r.q) {
		n, err := bc.read(r.rx)
		if err != nil {
			return nil, netip.AddrPort{}, err
		}
		r.q, r.qi = r.q[:0], 0
		forward(n)
	}
	i := r.q[r.qi]
	r.qi++
	size := max(r.rx.sizes[i], 0)
	return r.rx.bufs[i][headroom : headroom+size], r.rx.srcs[i], nil
}

// push adds datagram b to the run for bd, sending a run to another
// binding first.
func (r *turnReader) push(f *turnFast, bd *turnBinding, b []byte) {
	if r.runTo != bd || len(r.run) == turnFastBatch {
		r.flush(f)
		r.runTo = bd
	}
	r.run = append(r.run, b)
}

// runBytes is the payload length of run, each datagram hdr bytes of
// ChannelData header and its payload.
func runBytes(run [][]byte, hdr int) int {
	n := 0
	for _, b := range run {
		n += len(b) - hdr
	}
	return n
}

// flush sends the run with one sendmmsg: to the peer from the binding's
// relay socket, or, for a relay socket's reader, to the client from the
// listener, or to a stream client as padded frames in one write
// (turnstream.go).
func (r *turnReader) flush(f *turnFast) {
	if len(r.run) > 0 && r.runTo != nil {
		bd := r.runTo
		switch {
		case !r.toClient:
			if bd.relay.bc.send(r.tx, r.run, bd.peer) == nil {
				f.count(bd.client, dirToPeer, len(r.run), runBytes(r.run, 0))
			}
		case bd.client.stream != nil:
			if bd.client.stream.writeFrames(&r.sw, r.run) == nil {
				f.count(bd.client, dirToClient, len(r.run), runBytes(r.run, 4))
			}
		case f.ln != nil:
			if f.ln.bc.send(r.tx, r.run, bd.client.addr) == nil {
				f.count(bd.client, dirToClient, len(r.run), runBytes(r.run, 4))
			}
		}
	}
	clear(r.run)
	r.run, r.runTo = r.run[:0], nil
}
