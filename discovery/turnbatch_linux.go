//go:build linux

package discovery

/* Batched UDP I/O for the TURN relay's fast path (turnfast.go)
 *
 * recvmmsg into a reader's slot buffers (each datagram at a fixed offset,
 * so a ChannelData header can be put in front of it in place) and sendmmsg
 * of a run of datagrams to one destination, runs of equal-sized datagrams
 * GSO-coalesced with UDP_SEGMENT. Raw syscalls with preallocated headers:
 * neither direction allocates. The same technique as tunnel's fast socket,
 * without UDP_GRO (relay traffic from many peers rarely coalesces).
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
	batchIOSupported = true
	gsoMaxSegments   = 64
	maxUDPPayload    = 1<<16 - 1 - 8 - 40
)

var gsoControlSize = unix.CmsgSpace(2)

type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// batchConn is a UDP socket read and written in batches.
type batchConn struct {
	uc  *net.UDPConn
	rc  syscall.RawConn
	v6  bool // AF_INET6: IPv4 destinations are sent v4-mapped
	gso atomic.Bool
}

func newBatchConn(uc *net.UDPConn) (*batchConn, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &batchConn{uc: uc, rc: rc}
	var serr error
	err = rc.Control(func(fd uintptr) {
		dom, e := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if e != nil {
			serr = e
			return
		}
		c.v6 = dom == unix.AF_INET6
		if _, e := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT); e == nil {
			c.gso.Store(true)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// setBuffers asks for kernel buffers of size bytes (best effort).
func (c *batchConn) setBuffers(size int) {
	_ = c.rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, size)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, size)
		}
	})
}

// rxBatch is one reader's receive state. Not safe for concurrent use.
type rxBatch struct {
	bufs  [][]byte // slot buffers
	off   int      // where each datagram is read in its slot
	sizes []int    // -1: truncated
	srcs  []netip.AddrPort

	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	fn    func(fd uintptr) bool
	n     int
	errno syscall.Errno
}

func newRxBatch(n, slotSize, off int) *rxBatch {
	r := &rxBatch{
		bufs: make([][]byte, n), off: off, sizes: make([]int, n), srcs: make([]netip.AddrPort, n),
		hdrs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n),
	}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, slotSize)
	}
	r.fn = r.recvmmsg
	return r
}

func (r *rxBatch) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), 0, 0, 0)
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

// read fills r with datagrams, datagram i at r.bufs[i][r.off:], and
// returns how many.
func (c *batchConn) read(r *rxBatch) (int, error) {
	for i, b := range r.bufs {
		v := b[r.off:]
		r.iovs[i].Base = &v[0]
		r.iovs[i].SetLen(len(v))
		h := &r.hdrs[i]
		h.hdr.Iov = &r.iovs[i]
		h.hdr.SetIovlen(1)
		h.hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.hdr.Namelen = unix.SizeofSockaddrInet6
		h.hdr.Control = nil
		h.hdr.SetControllen(0)
		h.hdr.Flags = 0
		h.n = 0
	}
	if err := c.rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	for i := 0; i < r.n; i++ {
		r.sizes[i] = int(r.hdrs[i].n)
		if r.hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0 {
			r.sizes[i] = -1
		}
		r.srcs[i] = sockaddrAddrPort(&r.names[i])
	}
	return r.n, nil
}

func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
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

// txBatch is one sender's scratch. Not safe for concurrent use.
type txBatch struct {
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	oob   []byte
	first []int
	sa4   unix.RawSockaddrInet4
	sa6   unix.RawSockaddrInet6

	fn                 func(fd uintptr) bool
	start, count, sent int
	errno              syscall.Errno
}

func newTxBatch(n int) *txBatch {
	t := &txBatch{
		hdrs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n),
		oob: make([]byte, n*gsoControlSize), first: make([]int, n),
	}
	t.fn = t.sendmmsg
	return t
}

func (t *txBatch) sendmmsg(fd uintptr) bool {
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

// send sends every datagram of msgs (at most len(t.hdrs)) to dst,
// GSO-coalescing runs of equal-sized ones. borrowed: msgs are not retained.
func (c *batchConn) send(t *txBatch, msgs [][]byte, dst netip.AddrPort) error {
	return c.sendGSO(t, msgs, dst, c.gso.Load())
}

func (c *batchConn) sendGSO(t *txBatch, msgs [][]byte, dst netip.AddrPort, gso bool) error {
	if len(msgs) == 0 {
		return nil
	}
	var name *byte
	var namelen uint32
	if c.v6 {
		t.sa6.Family = unix.AF_INET6
		t.sa6.Addr = dst.Addr().As16()
		p := (*[2]byte)(unsafe.Pointer(&t.sa6.Port))
		p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
		name, namelen = (*byte)(unsafe.Pointer(&t.sa6)), unix.SizeofSockaddrInet6
	} else {
		a := dst.Addr().Unmap()
		if !a.Is4() {
			return errRelayFamily
		}
		t.sa4.Family = unix.AF_INET
		t.sa4.Addr = a.As4()
		p := (*[2]byte)(unsafe.Pointer(&t.sa4.Port))
		p[0], p[1] = byte(dst.Port()>>8), byte(dst.Port())
		name, namelen = (*byte)(unsafe.Pointer(&t.sa4)), unix.SizeofSockaddrInet4
	}
	nm, i := 0, 0
	for i < len(msgs) {
		seg := len(msgs[i])
		k, total := 1, seg
		if gso {
			for i+k < len(msgs) && k < gsoMaxSegments {
				l := len(msgs[i+k])
				if l > seg || l == 0 || total+l > maxUDPPayload {
					break
				}
				total += l
				k++
				if l < seg {
					break
				}
			}
		}
		for j := 0; j < k; j++ {
			m := msgs[i+j]
			if len(m) > 0 {
				t.iovs[i+j].Base = &m[0]
			} else {
				t.iovs[i+j].Base = nil
			}
			t.iovs[i+j].SetLen(len(m))
		}
		h := &t.hdrs[nm]
		h.hdr.Name, h.hdr.Namelen = name, namelen
		h.hdr.Iov = &t.iovs[i]
		h.hdr.SetIovlen(k)
		h.hdr.Flags = 0
		if k > 1 {
			cm := t.oob[nm*gsoControlSize : (nm+1)*gsoControlSize]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&cm[0]))
			ch.Level, ch.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(cm[unix.CmsgLen(0):], uint16(seg))
			h.hdr.Control = &cm[0]
			h.hdr.SetControllen(gsoControlSize)
		} else {
			h.hdr.Control = nil
			h.hdr.SetControllen(0)
		}
		t.first[nm] = i
		nm++
		i += k
	}
	t.start, t.count = 0, nm
	for t.start < t.count {
		if err := c.rc.Write(t.fn); err != nil {
			return err
		}
		if t.errno != 0 {
			e := t.errno
			rest := msgs[t.first[t.start]:]
			switch {
			case e == unix.EIO && gso:
				c.gso.Store(false)
				return c.sendGSO(t, rest, dst, false)
			case e == unix.EINVAL && gso:
				return c.sendGSO(t, rest, dst, false)
			}
			return os.NewSyscallError("sendmmsg", e)
		}
		t.start += t.sent
	}
	return nil
}
