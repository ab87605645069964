//go:build linux

package tunnel

/* Batched UDP I/O on Linux (the fast socket)
 *
 * The same techniques as golang.zx2c4.com/wireguard/conn's StdNetBind
 * (recvmmsg/sendmmsg, UDP_GRO on receive, UDP_SEGMENT on send, socket
 * buffers forced past rmem_max when allowed), written against raw syscalls
 * so that neither direction allocates: StdNetBind allocates an Endpoint per
 * received packet and x/net parses a net.UDPAddr per message, it copies every
 * packet of a GSO batch into the first buffer, and it can only bind ":port",
 * while meshd binds the configured listen address.
 *
 * Receive (one reader goroutine per socket owns a fastRx):
 *   - UDP_GRO on: recvmmsg into groMsgs coalesced buffers (64 KiB each, up
 *     to 64 segments); the segments are then copied, one per slot, into the
 *     reader's per-packet buffers at recOff, gsoSize bytes at a time. More
 *     segments than slots wait in the fastRx for the next call.
 *   - UDP_GRO off: recvmmsg straight into the per-packet buffers.
 *   Each message's source address is parsed from its sockaddr (no net.Addr),
 *   and SO_RXQ_OVFL reports the socket's kernel drop counter.
 *
 * Send (the caller's goroutine, with a fastTx it owns for the call):
 *   internal/udpbatch's sendmmsg with runs of equal-sized records coalesced
 *   by UDP_SEGMENT, and its fallbacks (EIO turns GSO off for the socket,
 *   EINVAL resends the call without GSO). recvmmsg, sockaddr and control
 *   message parsing come from there too; the GRO splitting is this file's.
 */

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/meshd/meshd/internal/udpbatch"
)

const (
	// groMsgs is how many coalesced messages one recvmmsg reads when
	// UDP_GRO is on.
	groMsgs = 8
	// groBufSize holds the largest coalesced message (64 KiB of payload).
	groBufSize = 1 << 16
	// ipv6PreferSrcPublic is IPV6_PREFER_SRC_PUBLIC (linux/in6.h): source
	// address selection prefers public (stable) addresses to temporary ones.
	ipv6PreferSrcPublic = 0x0002
	// oobSize holds the control messages of one received datagram: UDP_GRO
	// (int), SO_RXQ_OVFL (uint32) and SO_TIMESTAMPNS (struct timespec),
	// with room to spare.
	oobSize = 128
)

// fastConn is one UDP socket read and written in batches.
type fastConn struct {
	conn *net.UDPConn
	bc   *udpbatch.Conn
	rc   syscall.RawConn
	v6   bool          // an AF_INET6 socket (v4 destinations are sent v4-mapped)
	gro  bool          // UDP_GRO is on
	gso  *atomic.Bool  // &bc.GSO
	ovfl atomic.Uint32 // the socket's SO_RXQ_OVFL drop counter, as last seen
}

const fastSocketsSupported = true

// newFastConn prepares c for batched I/O: SO_RXQ_OVFL on, GSO probed, and
// UDP_GRO on if gro is set (else see enableGRO). bufSize > 0 sizes the
// kernel buffers (forced past rmem_max with CAP_NET_ADMIN, else up to it).
func newFastConn(c *net.UDPConn, bufSize int, gro bool) (*fastConn, error) {
	bc, err := udpbatch.New(c)
	if err != nil {
		return nil, fmt.Errorf("tunnel: prepare UDP socket: %w", err)
	}
	f := &fastConn{conn: c, bc: bc, rc: bc.RawConn(), v6: bc.V6(), gso: &bc.GSO}
	if bufSize > 0 {
		bc.SetBuffers(bufSize)
	}
	err = f.rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
		// The kernel's receive time of each datagram, for the RxWake
		// stage (latency.go).
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
		if f.v6 {
			// Checks and records leave from the stable address offered as
			// the host candidate, not a rotating temporary one (ifaces.go).
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_ADDR_PREFERENCES, ipv6PreferSrcPublic)
		}
		if gro {
			f.gro = setGRO(int(fd))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("tunnel: prepare UDP socket: %w", err)
	}
	return f, nil
}

// setGRO turns UDP_GRO on for socket s and reports whether it is on.
func setGRO(s int) bool {
	if unix.SetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO, 1) != nil {
		return false
	}
	v, e := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_GRO)
	return e == nil && v == 1
}

// enableGRO turns UDP_GRO on for a socket made without it. Only the
// socket's reader may call it, before its first newRx (gro is the
// reader's to read).
func (f *fastConn) enableGRO() {
	_ = f.rc.Control(func(fd uintptr) { f.gro = setGRO(int(fd)) })
}

// bufferSizes returns the kernel's receive and send buffer sizes.
func (f *fastConn) bufferSizes() (rcv, snd int) {
	_ = f.rc.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	return rcv, snd
}

// fastRx is a reader goroutine's receive scratch. Not safe for concurrent
// use.
type fastRx struct {
	rx *udpbatch.Rx

	// GRO: coalesced messages and how far they have been handed out.
	gro    [][]byte
	msgLen [groMsgs]int
	msgSeg [groMsgs]int // segment size; the whole message when not coalesced
	msgSrc [groMsgs]netip.AddrPort
	msgN   int // messages read
	msgI   int // message being split
	segOff int // offset of the next segment in gro[msgI]
}

func (f *fastConn) newRx(slots int) *fastRx {
	n := slots
	if f.gro {
		n = groMsgs
	}
	r := &fastRx{rx: udpbatch.NewRx(n, oobSize)}
	if f.gro {
		r.gro = make([][]byte, groMsgs)
		for i := range r.gro {
			r.gro[i] = make([]byte, groBufSize)
		}
	}
	return r
}

// readBatch fills rx with up to len(rx.bufs) datagrams, each at
// rx.bufs[i][recOff:recOff+rx.sizes[i]], and returns how many. A size of
// -1 marks a datagram that did not fit (dropped as malformed).
// rx.kernelRx is the kernel's receive time of the first datagram if this
// call read from the socket, else 0.
func (f *fastConn) readBatch(r *fastRx, rx *rxBatch) (int, error) {
	rx.kernelRx = 0
	if !f.gro {
		bufs := rx.recvViews
		n, err := f.bc.Recv(r.rx, bufs)
		if err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			rx.srcs[i] = r.rx.Src(i)
			rx.sizes[i] = r.rx.Size(i)
			c := f.parseControl(r.rx.Control(i))
			if i == 0 {
				rx.kernelRx = c.RxTime
			}
		}
		return n, nil
	}
	if r.msgI >= r.msgN {
		n, err := f.bc.Recv(r.rx, r.gro)
		if err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			r.msgLen[i] = r.rx.Size(i) // -1: truncated
			r.msgSrc[i] = r.rx.Src(i)
			c := f.parseControl(r.rx.Control(i))
			if i == 0 {
				rx.kernelRx = c.RxTime
			}
			seg := c.GROSize
			if seg <= 0 || seg > r.msgLen[i] {
				seg = r.msgLen[i]
			}
			r.msgSeg[i] = seg
		}
		r.msgN, r.msgI, r.segOff = n, 0, 0
	}
	out := 0
	for out < len(rx.bufs) && r.msgI < r.msgN {
		i := r.msgI
		rx.srcs[out] = r.msgSrc[i]
		if r.msgLen[i] <= 0 {
			rx.sizes[out] = r.msgLen[i] // 0 (empty datagram) or -1 (truncated)
			out++
			r.msgI++
			continue
		}
		seg := min(r.msgSeg[i], r.msgLen[i]-r.segOff)
		copy(rx.recvViews[out], r.gro[i][r.segOff:r.segOff+seg])
		rx.sizes[out] = seg
		out++
		r.segOff += seg
		if r.segOff >= r.msgLen[i] {
			r.msgI++
			r.segOff = 0
		}
	}
	return out, nil
}

// parseControl records SO_RXQ_OVFL and returns the datagram's control
// messages (UDP_GRO segment size, 0 if not coalesced; receive time).
func (f *fastConn) parseControl(oob []byte) udpbatch.Control {
	c := udpbatch.ParseControl(oob)
	if c.HasOvfl && c.Ovfl != f.ovfl.Load() {
		f.ovfl.Store(c.Ovfl)
	}
	return c
}

// fastTx is a sender's scratch (one per link, used under its txMu); the
// zero value is ready.
type fastTx = udpbatch.Tx

// send sends every record to dst, GSO-coalescing runs of equal-sized
// records. borrowed: recs are not retained.
func (f *fastConn) send(t *fastTx, recs [][]byte, dst netip.AddrPort) error {
	return f.sendRecords(t, recs, dst, f.gso.Load())
}

func (f *fastConn) sendRecords(t *fastTx, recs [][]byte, dst netip.AddrPort, gso bool) error {
	if err := f.bc.SendGSO(t, recs, dst, gso); err != udpbatch.ErrFamily {
		return err
	}
	return errWrongFamily
}

// writeTo sends one datagram (control traffic: STUN, DTLS handshakes).
func (f *fastConn) writeTo(b []byte, dst netip.AddrPort) (int, error) {
	if f.v6 && dst.Addr().Is4() {
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	return f.conn.WriteToUDPAddrPort(b, dst)
}

// overflows returns the socket's kernel receive-queue drop counter.
func (f *fastConn) overflows() uint32 { return f.ovfl.Load() }

// offloads reports whether UDP_SEGMENT and UDP_GRO are in use.
func (f *fastConn) offloads() (gso, gro bool) { return f.gso.Load(), f.gro }
