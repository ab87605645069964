//go:build linux

package udpbatch

/* Batched UDP I/O on Linux
 *
 * Receive (one goroutine owns an Rx):
 *   - recvmmsg straight into the caller's buffers, one datagram per
 *     buffer; each message's source is parsed from its sockaddr (no
 *     net.Addr), and its control messages are left in the Rx for the
 *     caller (UDP_GRO segment size, SO_RXQ_OVFL: see ParseControl).
 *
 * Send (the caller's goroutine, with a Tx it owns for the call):
 *   - consecutive records of equal length (the last of a run may be
 *     shorter) become one message with one iovec per record and a
 *     UDP_SEGMENT control message: the kernel cuts the payload at the
 *     segment size, so the records go out as separate datagrams without
 *     being copied together; at most GSOMaxSegments per message;
 *   - all messages go out with sendmmsg, looping over partial sends;
 *   - EIO (the device cannot checksum-offload, which UDP_SEGMENT needs)
 *     turns GSO off for the socket; EINVAL on a GSO message (segment above
 *     the path MTU) resends that call without GSO.
 */

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// Supported reports whether New can succeed on this platform.
	Supported = true
	// GSOMaxSegments is the kernel's UDP_MAX_SEGMENTS on the oldest
	// kernels with UDP_SEGMENT.
	GSOMaxSegments = 64
	// maxUDPPayload4/6 are the largest UDP payloads (EMSGSIZE beyond).
	maxUDPPayload4 = 1<<16 - 1 - 20 - 8
	maxUDPPayload6 = 1<<16 - 1 - 8
)

// sizeofTimespec is the size of the SCM_TIMESTAMPNS payload (the
// platform's struct timespec).
const sizeofTimespec = int(unsafe.Sizeof(unix.Timespec{}))

// gsoControlSize is the space of one UDP_SEGMENT control message.
var gsoControlSize = unix.CmsgSpace(2)

// mmsghdr is struct mmsghdr; Go's padding matches C's on 32 and 64 bits.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// Conn is one UDP socket read and written in batches.
type Conn struct {
	rc syscall.RawConn
	v6 bool // an AF_INET6 socket (v4 destinations are sent v4-mapped)
	// GSO is whether Send coalesces with UDP_SEGMENT: probed by New,
	// turned off by Send on EIO.
	GSO atomic.Bool
}

// New prepares uc for batched I/O: its address family read and
// UDP_SEGMENT probed.
func New(uc *net.UDPConn) (*Conn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &Conn{rc: rc}
	var sockErr error
	err = rc.Control(func(fd uintptr) {
		dom, e := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if e != nil {
			sockErr = e
			return
		}
		c.v6 = dom == unix.AF_INET6
		if _, e := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT); e == nil {
			c.GSO.Store(true)
		}
	})
	if err == nil {
		err = sockErr
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// RawConn returns the socket's raw connection (for socket options).
func (c *Conn) RawConn() syscall.RawConn { return c.rc }

// V6 reports whether the socket is AF_INET6 (IPv4 destinations are sent
// v4-mapped).
func (c *Conn) V6() bool { return c.v6 }

// SetBuffers asks for kernel buffers of size bytes: forced past
// rmem_max/wmem_max with CAP_NET_ADMIN, else up to them (best effort).
func (c *Conn) SetBuffers(size int) {
	_ = c.rc.Control(func(fd uintptr) {
		s := int(fd)
		if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
		if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, size)
		}
	})
}

// Rx is one reader's receive scratch. Not safe for concurrent use.
type Rx struct {
	hdrs    []mmsghdr
	iovs    []unix.Iovec
	names   []unix.RawSockaddrInet6
	oob     []byte
	oobSize int

	// recvmmsg call state, for the bound callback.
	fn    func(fd uintptr) bool
	vlen  int
	n     int
	errno syscall.Errno
}

// NewRx returns scratch for reading up to n datagrams per call, with
// oobSize bytes of control messages each (0: none).
func NewRx(n, oobSize int) *Rx {
	r := &Rx{
		hdrs:    make([]mmsghdr, n),
		iovs:    make([]unix.Iovec, n),
		names:   make([]unix.RawSockaddrInet6, n),
		oob:     make([]byte, n*oobSize),
		oobSize: oobSize,
	}
	r.fn = r.recvmmsg
	return r
}

func (r *Rx) recvmmsg(fd uintptr) bool {
	var done bool
	done, r.n, r.errno = mmsg(unix.SYS_RECVMMSG, fd, r.hdrs[:r.vlen])
	return done
}

// mmsg runs recvmmsg or sendmmsg (trap) over hdrs, retrying on EINTR. done
// is false on EAGAIN (the RawConn waits for the socket and calls again).
func mmsg(trap, fd uintptr, hdrs []mmsghdr) (done bool, n int, errno syscall.Errno) {
	if len(hdrs) == 0 {
		return true, 0, 0
	}
	for {
		r, _, e := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false, 0, 0
		case 0:
			return true, int(r), 0
		}
		return true, 0, e
	}
}

// Recv reads up to len(bufs) datagrams (at most the n of NewRx), datagram
// i into bufs[i], and returns how many arrived; Size, Src and Control
// describe each. Every buffer must be non-empty.
func (c *Conn) Recv(r *Rx, bufs [][]byte) (int, error) {
	for i, b := range bufs {
		r.iovs[i].Base = &b[0]
		r.iovs[i].SetLen(len(b))
		h := &r.hdrs[i]
		h.hdr.Iov = &r.iovs[i]
		h.hdr.SetIovlen(1)
		h.hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.hdr.Namelen = unix.SizeofSockaddrInet6
		if r.oobSize > 0 {
			h.hdr.Control = &r.oob[i*r.oobSize]
			h.hdr.SetControllen(r.oobSize)
		} else {
			h.hdr.Control = nil
			h.hdr.SetControllen(0)
		}
		h.hdr.Flags = 0
		h.n = 0
	}
	r.vlen = len(bufs)
	if err := c.rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	return r.n, nil
}

// Size returns the length of datagram i of the last Recv, -1 if it did
// not fit its buffer (truncated).
func (r *Rx) Size(i int) int {
	if r.hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0 {
		return -1
	}
	return int(r.hdrs[i].n)
}

// Src returns the source of datagram i of the last Recv (v4-mapped
// addresses come back as IPv4).
func (r *Rx) Src(i int) netip.AddrPort { return sockaddrToAddrPort(&r.names[i]) }

// Control returns the control messages of datagram i of the last Recv.
// borrowed: valid until the next Recv.
func (r *Rx) Control(i int) []byte {
	if r.oobSize == 0 {
		return nil
	}
	return r.oob[i*r.oobSize : i*r.oobSize+int(r.hdrs[i].hdr.Controllen)]
}

// Control is what ParseControl found in one datagram's control messages.
type Control struct {
	GROSize int    // UDP_GRO segment size; 0 if not coalesced
	Ovfl    uint32 // SO_RXQ_OVFL drop counter
	HasOvfl bool   // Ovfl was present
	// RxTime is when the kernel received the datagram (SO_TIMESTAMPNS),
	// in nanoseconds since the Unix epoch (CLOCK_REALTIME); 0 if absent.
	RxTime int64
}

// ParseControl reads the UDP_GRO, SO_RXQ_OVFL and SO_TIMESTAMPNS control
// messages of oob, stopping at the first malformed header.
func ParseControl(oob []byte) Control {
	var c Control
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
			c.GROSize = int(binary.NativeEndian.Uint16(data[:2]))
			if len(data) >= 4 {
				c.GROSize = int(binary.NativeEndian.Uint32(data[:4]))
			}
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			c.Ovfl, c.HasOvfl = binary.NativeEndian.Uint32(data[:4]), true
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= sizeofTimespec:
			var ts unix.Timespec
			copy(unsafe.Slice((*byte)(unsafe.Pointer(&ts)), sizeofTimespec), data)
			c.RxTime = ts.Nano()
		}
		next := unix.CmsgSpace(l - unix.SizeofCmsghdr)
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return c
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

// Tx is a sender's scratch; the zero value is ready and grows to the
// largest batch sent. Not safe for concurrent use.
type Tx struct {
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

// NewTx returns a Tx already sized for batches of n records.
func NewTx(n int) *Tx {
	t := &Tx{}
	t.grow(n)
	return t
}

func (t *Tx) sendmmsg(fd uintptr) bool {
	var done bool
	done, t.sent, t.errno = mmsg(unix.SYS_SENDMMSG, fd, t.hdrs[t.start:t.count])
	return done
}

// grow makes room for n records.
func (t *Tx) grow(n int) {
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

// Send sends every record to dst as its own datagram, GSO-coalescing runs
// of equal-sized records while c.GSO is on. borrowed: recs are not
// retained.
func (c *Conn) Send(t *Tx, recs [][]byte, dst netip.AddrPort) error {
	return c.SendGSO(t, recs, dst, c.GSO.Load())
}

// SendGSO is Send with GSO on or off for this call (tests force either).
func (c *Conn) SendGSO(t *Tx, recs [][]byte, dst netip.AddrPort, gso bool) error {
	if len(recs) == 0 {
		return nil
	}
	t.grow(len(recs))
	var name *byte
	var namelen uint32
	maxPayload := maxUDPPayload4
	if c.v6 {
		t.sa6.Family = unix.AF_INET6
		t.sa6.Addr = dst.Addr().As16()
		p := (*[2]byte)(unsafe.Pointer(&t.sa6.Port))
		p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
		name, namelen = (*byte)(unsafe.Pointer(&t.sa6)), unix.SizeofSockaddrInet6
		maxPayload = maxUDPPayload6
	} else {
		a := dst.Addr().Unmap()
		if !a.Is4() {
			return ErrFamily
		}
		t.sa4.Family = unix.AF_INET
		t.sa4.Addr = a.As4()
		p := (*[2]byte)(unsafe.Pointer(&t.sa4.Port))
		p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
		name, namelen = (*byte)(unsafe.Pointer(&t.sa4)), unix.SizeofSockaddrInet4
	}
	msgs, i := 0, 0
	for i < len(recs) {
		seg := len(recs[i])
		k := 1
		if gso {
			k = gsoRun(recs[i:], maxPayload)
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
			putSegment(t.oob[msgs*gsoControlSize:(msgs+1)*gsoControlSize], seg)
			h.hdr.Control = &t.oob[msgs*gsoControlSize]
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
		if err := c.rc.Write(t.fn); err != nil {
			return err
		}
		if t.errno != 0 {
			e := t.errno
			rest := recs[t.first[t.start]:]
			switch {
			case e == unix.EIO && gso:
				c.GSO.Store(false)
				return c.SendGSO(t, rest, dst, false)
			case e == unix.EINVAL && gso:
				return c.SendGSO(t, rest, dst, false)
			}
			return os.NewSyscallError("sendmmsg", e)
		}
		t.start += t.sent
	}
	return nil
}

// gsoRun returns how many records from recs[0] go out as one GSO message:
// those of recs[0]'s length, then at most one shorter record, up to
// GSOMaxSegments and maxPayload bytes in all; an empty record is never
// coalesced.
func gsoRun(recs [][]byte, maxPayload int) int {
	seg := len(recs[0])
	k, total := 1, seg
	for k < len(recs) && k < GSOMaxSegments {
		l := len(recs[k])
		if l > seg || l == 0 || total+l > maxPayload {
			break
		}
		total += l
		k++
		if l < seg {
			break // a shorter record ends the run
		}
	}
	return k
}

// putSegment writes a UDP_SEGMENT control message of segment size seg
// into c (gsoControlSize bytes).
func putSegment(c []byte, seg int) {
	ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	ch.Level, ch.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	ch.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(seg))
}
