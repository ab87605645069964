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
 *   - consecutive records of equal length (the last of a run may be
 *     shorter) become one message with one iovec per record and a
 *     UDP_SEGMENT control message: the kernel cuts the payload at the
 *     segment size, so the records go out as separate datagrams without
 *     being copied together; at most gsoMaxSegments per message;
 *   - all messages go out with sendmmsg, looping over partial sends;
 *   - EIO (the device cannot checksum-offload, which UDP_SEGMENT needs)
 *     turns GSO off for the socket; EINVAL on a GSO message (segment above
 *     the path MTU) resends that call without GSO.
 */

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// groMsgs is how many coalesced messages one recvmmsg reads when
	// UDP_GRO is on.
	groMsgs = 8
	// groBufSize holds the largest coalesced message (64 KiB of payload).
	groBufSize = 1 << 16
	// gsoMaxSegments is the kernel's UDP_MAX_SEGMENTS on the oldest kernels
	// with UDP_SEGMENT.
	gsoMaxSegments = 64
	// oobSize holds the control messages of one received datagram: UDP_GRO
	// (int) and SO_RXQ_OVFL (uint32), with room to spare.
	oobSize = 64
	// maxUDPPayload4/6 are the largest UDP payloads (EMSGSIZE beyond).
	maxUDPPayload4 = 1<<16 - 1 - 20 - 8
	maxUDPPayload6 = 1<<16 - 1 - 8
)

// gsoControlSize is the space of one UDP_SEGMENT control message.
var gsoControlSize = unix.CmsgSpace(2)

// mmsghdr is struct mmsghdr; Go's padding matches C's on 32 and 64 bits.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// fastConn is one UDP socket read and written in batches.
type fastConn struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	v6   bool // an AF_INET6 socket (v4 destinations are sent v4-mapped)
	gro  bool // UDP_GRO is on
	gso  atomic.Bool
	ovfl atomic.Uint32 // the socket's SO_RXQ_OVFL drop counter, as last seen
}

const fastSocketsSupported = true

// newFastConn prepares c for batched I/O: SO_RXQ_OVFL on, GSO probed, and
// UDP_GRO on if gro is set (else see enableGRO). bufSize > 0 sizes the
// kernel buffers (forced past rmem_max with CAP_NET_ADMIN, else up to it).
func newFastConn(c *net.UDPConn, bufSize int, gro bool) (*fastConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	f := &fastConn{conn: c, rc: rc}
	var sockErr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		dom, e := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_DOMAIN)
		if e != nil {
			sockErr = e
			return
		}
		f.v6 = dom == unix.AF_INET6
		if bufSize > 0 {
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufSize) != nil {
				_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, bufSize)
			}
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufSize) != nil {
				_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, bufSize)
			}
		}
		_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
		if _, e := unix.GetsockoptInt(s, unix.IPPROTO_UDP, unix.UDP_SEGMENT); e == nil {
			f.gso.Store(true)
		}
		if gro {
			f.gro = setGRO(s)
		}
	})
	if err == nil {
		err = sockErr
	}
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
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	oob   []byte

	// GRO: coalesced messages and how far they have been handed out.
	gro    [][]byte
	msgLen [groMsgs]int
	msgSeg [groMsgs]int // segment size; the whole message when not coalesced
	msgSrc [groMsgs]netip.AddrPort
	msgN   int // messages read
	msgI   int // message being split
	segOff int // offset of the next segment in gro[msgI]

	// recvmmsg call state, for the bound callback.
	fn    func(fd uintptr) bool
	vlen  int
	n     int
	errno syscall.Errno
}

func (f *fastConn) newRx(slots int) *fastRx {
	n := slots
	if f.gro {
		n = groMsgs
	}
	r := &fastRx{
		hdrs:  make([]mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		oob:   make([]byte, n*oobSize),
	}
	if f.gro {
		r.gro = make([][]byte, groMsgs)
		for i := range r.gro {
			r.gro[i] = make([]byte, groBufSize)
		}
	}
	r.fn = r.recvmmsg
	return r
}

func (r *fastRx) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.vlen), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			r.n, r.errno = int(n), 0
		default:
			r.n, r.errno = 0, e
		}
		return true
	}
}

// recv reads up to len(bufs) messages, message i into bufs[i]. It returns
// how many arrived.
func (f *fastConn) recv(r *fastRx, bufs [][]byte) (int, error) {
	for i, b := range bufs {
		r.iovs[i].Base = &b[0]
		r.iovs[i].SetLen(len(b))
		h := &r.hdrs[i]
		h.hdr.Iov = &r.iovs[i]
		h.hdr.SetIovlen(1)
		h.hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.hdr.Namelen = unix.SizeofSockaddrInet6
		h.hdr.Control = &r.oob[i*oobSize]
		h.hdr.SetControllen(oobSize)
		h.hdr.Flags = 0
		h.n = 0
	}
	r.vlen = len(bufs)
	if err := f.rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	return r.n, nil
}

// readBatch fills rx with up to len(rx.bufs) datagrams, each at
// rx.bufs[i][recOff:recOff+rx.sizes[i]], and returns how many. A size of
// -1 marks a datagram that did not fit (dropped as malformed).
func (f *fastConn) readBatch(r *fastRx, rx *rxBatch) (int, error) {
	if !f.gro {
		bufs := rx.recvViews
		n, err := f.recv(r, bufs)
		if err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			h := &r.hdrs[i]
			rx.srcs[i] = sockaddrToAddrPort(&r.names[i])
			rx.sizes[i] = int(h.n)
			if h.hdr.Flags&unix.MSG_TRUNC != 0 {
				rx.sizes[i] = -1
			}
			f.parseControl(r.oob[i*oobSize : i*oobSize+int(h.hdr.Controllen)])
		}
		return n, nil
	}
	if r.msgI >= r.msgN {
		n, err := f.recv(r, r.gro)
		if err != nil {
			return 0, err
		}
		for i := 0; i < n; i++ {
			h := &r.hdrs[i]
			r.msgLen[i] = int(h.n)
			r.msgSrc[i] = sockaddrToAddrPort(&r.names[i])
			seg := f.parseControl(r.oob[i*oobSize : i*oobSize+int(h.hdr.Controllen)])
			if seg <= 0 || seg > r.msgLen[i] {
				seg = r.msgLen[i]
			}
			r.msgSeg[i] = seg
			if h.hdr.Flags&unix.MSG_TRUNC != 0 {
				r.msgLen[i], r.msgSeg[i] = -1, -1
			}
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

// parseControl records SO_RXQ_OVFL and returns the UDP_GRO segment size (0
// if the datagram was not coalesced).
func (f *fastConn) parseControl(oob []byte) int {
	seg := 0
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		data := oob[unix.CmsgLen(0):l]
		switch {
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 2:
			// The kernel writes an int; its low 16 bits hold the size.
			seg = int(binary.NativeEndian.Uint16(data[:2]))
			if len(data) >= 4 {
				seg = int(binary.NativeEndian.Uint32(data[:4]))
			}
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			if v := binary.NativeEndian.Uint32(data[:4]); v != f.ovfl.Load() {
				f.ovfl.Store(v)
			}
		}
		next := unix.CmsgSpace(l - unix.SizeofCmsghdr)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return seg
}

// sockaddrToAddrPort decodes a received source address (v4-mapped
// addresses come back as IPv4).
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&s4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// fastTx is a sender's scratch (one per link, used under its txMu).
type fastTx struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	oob   []byte
	first []int // index of each message's first record
	sa4   unix.RawSockaddrInet4
	sa6   unix.RawSockaddrInet6

	fn    func(fd uintptr) bool
	start int
	count int
	sent  int
	errno syscall.Errno
}

func (t *fastTx) sendmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&t.hdrs[t.start])), uintptr(t.count-t.start), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			t.sent, t.errno = int(n), 0
		default:
			t.sent, t.errno = 0, e
		}
		return true
	}
}

// grow makes room for n records.
func (t *fastTx) grow(n int) {
	if t.fn == nil {
		t.fn = t.sendmmsg
	}
	if cap(t.hdrs) < n {
		t.hdrs = make([]mmsghdr, n)
		t.iovs = make([]unix.Iovec, n)
		t.oob = make([]byte, n*gsoControlSize)
		t.first = make([]int, n)
	}
	t.hdrs, t.iovs, t.first = t.hdrs[:n], t.iovs[:n], t.first[:n]
}

// send sends every record to dst, GSO-coalescing runs of equal-sized
// records. borrowed: recs are not retained.
func (f *fastConn) send(t *fastTx, recs [][]byte, dst netip.AddrPort) error {
	return f.sendRecords(t, recs, dst, f.gso.Load())
}

func (f *fastConn) sendRecords(t *fastTx, recs [][]byte, dst netip.AddrPort, gso bool) error {
	if len(recs) == 0 {
		return nil
	}
	t.grow(len(recs))
	var name *byte
	var namelen uint32
	maxPayload := maxUDPPayload4
	if f.v6 {
		t.sa6.Family = unix.AF_INET6
		t.sa6.Addr = dst.Addr().As16()
		p := (*[2]byte)(unsafe.Pointer(&t.sa6.Port))
		p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
		name, namelen = (*byte)(unsafe.Pointer(&t.sa6)), unix.SizeofSockaddrInet6
		maxPayload = maxUDPPayload6
	} else {
		if !dst.Addr().Unmap().Is4() {
			return errWrongFamily
		}
		t.sa4.Family = unix.AF_INET
		t.sa4.Addr = dst.Addr().Unmap().As4()
		p := (*[2]byte)(unsafe.Pointer(&t.sa4.Port))
		p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
		name, namelen = (*byte)(unsafe.Pointer(&t.sa4)), unix.SizeofSockaddrInet4
	}
	msgs, i := 0, 0
	for i < len(recs) {
		seg := len(recs[i])
		k, total := 1, seg
		if gso {
			for i+k < len(recs) && k < gsoMaxSegments {
				l := len(recs[i+k])
				if l > seg || l == 0 || total+l > maxPayload {
					break
				}
				total += l
				k++
				if l < seg {
					break // a shorter record ends the run
				}
			}
		}
		for j := 0; j < k; j++ {
			r := recs[i+j]
			if len(r) > 0 {
				t.iovs[i+j].Base = &r[0]
			} else {
				t.iovs[i+j].Base = nil
			}
			t.iovs[i+j].SetLen(len(r))
		}
		h := &t.hdrs[msgs]
		h.hdr.Name, h.hdr.Namelen = name, namelen
		h.hdr.Iov = &t.iovs[i]
		h.hdr.SetIovlen(k)
		h.hdr.Flags = 0
		if k > 1 {
			c := t.oob[msgs*gsoControlSize : (msgs+1)*gsoControlSize]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			ch.Level, ch.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(seg))
			h.hdr.Control = &c[0]
			h.hdr.SetControllen(gsoControlSize)
		} else {
			h.hdr.Control = nil
			h.hdr.SetControllen(0)
		}
		t.first[msgs] = i
		msgs++
		i += k
	}
	t.start, t.count = 0, msgs
	for t.start < t.count {
		if err := f.rc.Write(t.fn); err != nil {
			return err
		}
		if t.errno != 0 {
			e := t.errno
			rest := recs[t.first[t.start]:]
			switch {
			case e == unix.EIO && gso:
				f.gso.Store(false)
				return f.sendRecords(t, rest, dst, false)
			case e == unix.EINVAL && gso:
				return f.sendRecords(t, rest, dst, false)
			}
			return os.NewSyscallError("sendmmsg", e)
		}
		t.start += t.sent
	}
	return nil
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
