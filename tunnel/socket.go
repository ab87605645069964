package tunnel

/* The node's UDP sockets
 *
 * One UDP port serves every link, so a firewall needs one hole. The manager
 * opens one socket per address family on it (openSockets):
 *
 *   ListenAddr ::            an IPv4 socket and an IPv6-only socket, same port;
 *                            on a host without IPv6 (no AF_INET6 sockets:
 *                            ipv6.disable=1) the IPv4 socket alone, and
 *                            socketSet.noV6 says why (logged once at info)
 *   ListenAddr other / zero  one socket of that family (zero: 0.0.0.0)
 *   Options.PacketConn       that conn;  Options.Net (pion vnet): one from it
 *
 * A *net.UDPConn on Linux becomes a fastConn (socket_linux.go: batched
 * recvmmsg/sendmmsg, UDP_GRO/UDP_SEGMENT, buffers forced past rmem_max when
 * CAP_NET_ADMIN allows); any other conn (vnet, test doubles, other systems)
 * is read and written one datagram at a time through the same stages.
 *
 * Each socket has one reader goroutine (Manager.readLoop) that fills an
 * rxBatch and hands it to the demultiplexer (demux.go) in the same
 * goroutine; senders write from their own goroutines (WriteBatch, and pion's
 * mux through muxConn).
 */

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"

	"github.com/pion/ice/v4"
	"github.com/pion/transport/v5"

	"github.com/meshd/meshd/internal/latency"
)

// defaultSocketBuffer is the kernel buffer size requested per socket when
// Options.SocketBuffer is 0: room for several full GSO bursts, so that a
// burst does not overflow the receive queue while the reader is busy.
const defaultSocketBuffer = 8 << 20

// rxBatchSize is how many datagrams a fast socket's reader handles per
// batch (wireguard/conn's IdealBatchSize).
const rxBatchSize = 128

// Receive slots: each goroutine that opens records has its own Opener per
// key state (record.Opener is single-goroutine). Socket readers use slots
// 0 and 1, the session's ICE reader (relayed paths) slot 2.
const (
	slotICE  = 2
	rxSlotsN = 3
)

// errWrongFamily is returned when a socket is asked to reach an address of
// the other family.
var errWrongFamily = errors.New("tunnel: no socket of the destination's address family")

// sock is one of the node's UDP sockets.
type sock struct {
	slot int
	fast *fastConn                // batched Linux socket, or nil
	pc   net.PacketConn           // generic conn when fast is nil
	apr  ice.AddrPortReaderWriter // pc's allocation-free form, if it has one
}

// socketSet is the node's sockets and which one serves each family.
type socketSet struct {
	socks  []*sock
	v4, v6 *sock
	local  *net.UDPAddr // the address the mux and Manager.LocalAddr report
	noV6   error        // why a dual-stack bind has no IPv6 socket, or nil
}

// openSockets opens (or adopts) the node's sockets as the file comment
// describes.
func openSockets(opts *Options) (*socketSet, error) {
	bufSize := opts.SocketBuffer
	if bufSize == 0 {
		bufSize = defaultSocketBuffer
	}
	if bufSize < 0 {
		bufSize = 0
	}
	if opts.PacketConn != nil {
		return adoptConn(opts.PacketConn, bufSize)
	}
	addr := opts.ListenAddr
	if !addr.IsValid() {
		addr = netip.IPv4Unspecified()
	}
	if opts.Net != nil {
		network := "udp4"
		switch {
		case addr.Is6() && addr.IsUnspecified():
			network = "udp"
		case addr.Is6() && !addr.Is4In6():
			network = "udp6"
		}
		laddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr.Unmap(), uint16(opts.ListenPort)))
		pc, err := listenPacket(opts.Net, network, laddr)
		if err != nil {
			return nil, err
		}
		return adoptConn(pc, bufSize)
	}
	if addr.Is6() && addr.IsUnspecified() {
		listen := opts.listenUDP
		if listen == nil {
			listen = net.ListenUDP
		}
		return openDualStack(listen, opts.ListenPort, bufSize)
	}
	network := "udp4"
	if addr.Is6() && !addr.Is4In6() {
		network = "udp6"
	}
	laddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr.Unmap(), uint16(opts.ListenPort)))
	uc, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, fmt.Errorf("tunnel: listen on %s: %w", laddr, err)
	}
	return adoptConn(uc, bufSize)
}

func listenPacket(n transport.Net, network string, laddr *net.UDPAddr) (net.PacketConn, error) {
	pc, err := n.ListenPacket(network, laddr.String())
	if err != nil {
		return nil, fmt.Errorf("tunnel: listen on %s: %w", laddr, err)
	}
	return pc, nil
}

// openDualStack opens an IPv6-only and an IPv4 socket on one port, or the
// IPv4 socket alone when the host has no IPv6 (ipv6Unavailable).
func openDualStack(listen func(string, *net.UDPAddr) (*net.UDPConn, error), port, bufSize int) (*socketSet, error) {
	for tries := 0; ; tries++ {
		c6, err := listen("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: port})
		if err != nil && ipv6Unavailable(err) {
			return openV4Only(listen, port, bufSize, err)
		}
		if err != nil {
			return nil, fmt.Errorf("tunnel: listen on [::]:%d: %w", port, err)
		}
		p := c6.LocalAddr().(*net.UDPAddr).Port
		c4, err := listen("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: p})
		if err != nil {
			_ = c6.Close()
			if port == 0 && errors.Is(err, syscall.EADDRINUSE) && tries < 16 {
				continue
			}
			return nil, fmt.Errorf("tunnel: listen on 0.0.0.0:%d: %w", p, err)
		}
		s6, err := newSock(c6, bufSize, 0)
		if err == nil {
			var s4 *sock
			if s4, err = newSock(c4, bufSize, 1); err == nil {
				return &socketSet{
					socks: []*sock{s6, s4}, v4: s4, v6: s6,
					local: &net.UDPAddr{IP: net.IPv6unspecified, Port: p},
				}, nil
			}
		}
		_ = c4.Close()
		_ = c6.Close()
		return nil, err
	}
}

// ipv6Unavailable reports whether err from opening an IPv6 socket means
// the host has no IPv6 at all: the kernel booted with ipv6.disable=1 (no
// AF_INET6 sockets), or a stack built without it. A host whose IPv6 is off
// by sysctl (disable_ipv6=1) still opens the socket; it then has no IPv6
// address to offer, which netcheck reports.
func ipv6Unavailable(err error) bool {
	return errors.Is(err, syscall.EAFNOSUPPORT) || errors.Is(err, syscall.EPROTONOSUPPORT) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

// openV4Only is the dual-stack bind's fallback on a host without IPv6.
func openV4Only(listen func(string, *net.UDPAddr) (*net.UDPConn, error), port, bufSize int, why error) (*socketSet, error) {
	c4, err := listen("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: port})
	if err != nil {
		return nil, fmt.Errorf("tunnel: listen on 0.0.0.0:%d: %w", port, err)
	}
	s4, err := newSock(c4, bufSize, 0)
	if err != nil {
		_ = c4.Close()
		return nil, err
	}
	return &socketSet{
		socks: []*sock{s4}, v4: s4,
		local: &net.UDPAddr{IP: net.IPv4zero, Port: c4.LocalAddr().(*net.UDPAddr).Port},
		noV6:  why,
	}, nil
}

// adoptConn wraps one conn, serving both families (v4-mapped on a
// dual-stack IPv6 socket; a single-family socket refuses the other family
// when sending).
func adoptConn(pc net.PacketConn, bufSize int) (*socketSet, error) {
	local, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		_ = pc.Close()
		return nil, fmt.Errorf("%w: the socket's local address is %T, want *net.UDPAddr", ErrInvalidOptions, pc.LocalAddr())
	}
	s, err := newSock(pc, bufSize, 0)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	return &socketSet{socks: []*sock{s}, v4: s, v6: s, local: local}, nil
}

func newSock(pc net.PacketConn, bufSize, slot int) (*sock, error) {
	s := &sock{slot: slot}
	if uc, ok := pc.(*net.UDPConn); ok {
		if fastSocketsSupported {
			f, err := newFastConn(uc, bufSize, true)
			if err != nil {
				return nil, err
			}
			s.fast = f
			return s, nil
		}
		if bufSize > 0 {
			// Best effort: the kernel caps these at net.core.[rw]mem_max.
			_ = uc.SetReadBuffer(bufSize)
			_ = uc.SetWriteBuffer(bufSize)
		}
	}
	s.pc = pc
	s.apr, _ = pc.(ice.AddrPortReaderWriter)
	if uc, ok := pc.(*net.UDPConn); ok {
		s.apr = udpConnAddrPort{uc}
	}
	return s, nil
}

// udpConnAddrPort gives a *net.UDPConn the AddrPort methods (its own are
// named ...UDPAddrPort).
type udpConnAddrPort struct{ c *net.UDPConn }

func (u udpConnAddrPort) ReadFromAddrPort(b []byte) (int, netip.AddrPort, error) {
	return u.c.ReadFromUDPAddrPort(b)
}
func (u udpConnAddrPort) WriteToAddrPort(b []byte, ap netip.AddrPort) (int, error) {
	return u.c.WriteToUDPAddrPort(b, ap)
}

// batchSize is how many datagrams the socket's reader handles at once.
func (s *sock) batchSize() int {
	if s.fast != nil {
		return rxBatchSize
	}
	return 1
}

// forDst returns the socket that reaches ap, or nil.
func (ss *socketSet) forDst(ap netip.AddrPort) *sock {
	if ap.Addr().Unmap().Is4() {
		return ss.v4
	}
	return ss.v6
}

// writeTo sends one datagram to ap (control traffic).
func (ss *socketSet) writeTo(b []byte, ap netip.AddrPort) (int, error) {
	s := ss.forDst(ap)
	if s == nil {
		return 0, errWrongFamily
	}
	return s.writeTo(b, ap)
}

func (s *sock) writeTo(b []byte, ap netip.AddrPort) (int, error) {
	if s.fast != nil {
		return s.fast.writeTo(b, ap)
	}
	if s.apr != nil {
		return s.apr.WriteToAddrPort(b, ap)
	}
	return s.pc.WriteTo(b, net.UDPAddrFromAddrPort(ap))
}

// sendRecords sends sealed records to the route's destination: one
// sendmmsg with GSO on a fast socket, one write per record otherwise.
// borrowed: recs are not retained.
func (s *sock) sendRecords(tx *fastTx, recs [][]byte, rt *route) error {
	if s.fast != nil {
		return s.fast.send(tx, recs, rt.dst)
	}
	for _, r := range recs {
		var err error
		if s.apr != nil {
			_, err = s.apr.WriteToAddrPort(r, rt.dst)
		} else {
			_, err = s.pc.WriteTo(r, rt.dstUDP)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readBatch fills rx with datagrams and returns how many.
func (s *sock) readBatch(frx *fastRx, rx *rxBatch) (int, error) {
	if s.fast != nil {
		return s.fast.readBatch(frx, rx)
	}
	b := rx.recvViews[0]
	var (
		n   int
		ap  netip.AddrPort
		err error
	)
	if s.apr != nil {
		n, ap, err = s.apr.ReadFromAddrPort(b)
	} else {
		var addr net.Addr
		n, addr, err = s.pc.ReadFrom(b)
		if err == nil {
			ua, ok := addr.(*net.UDPAddr)
			if !ok {
				return 0, nil // not UDP: nothing this node can answer
			}
			ap = ua.AddrPort()
		}
	}
	if err != nil {
		return 0, err
	}
	rx.sizes[0], rx.srcs[0] = n, unmapAddrPort(ap)
	return 1, nil
}

func (s *sock) close() error {
	if s.fast != nil {
		return s.fast.conn.Close()
	}
	return s.pc.Close()
}

func (ss *socketSet) close() {
	for _, s := range ss.socks {
		_ = s.close()
	}
}

// overflows sums the kernel's receive-queue drops of the fast sockets.
func (ss *socketSet) overflows() uint64 {
	var n uint64
	for _, s := range ss.socks {
		if s.fast != nil {
			n += uint64(s.fast.overflows())
		}
	}
	return n
}

// describe returns log attributes: offloads and buffer sizes.
func (ss *socketSet) describe() []any {
	for _, s := range ss.socks {
		if s.fast != nil {
			gso, gro := s.fast.offloads()
			rcv, snd := s.fast.bufferSizes()
			return []any{"batched", true, "gso", gso, "gro", gro, "rcvbuf", rcv, "sndbuf", snd}
		}
	}
	return []any{"batched", false}
}

// readLoop is a socket's reader goroutine: read a batch, demultiplex it,
// repeat, until the socket closes.
func (m *Manager) readLoop(s *sock) {
	rx := newRxBatch(s.batchSize())
	var frx *fastRx
	if s.fast != nil {
		frx = s.fast.newRx(len(rx.bufs))
	}
	failures := 0
	for {
		n, err := s.readBatch(frx, rx)
		if n > 0 {
			read := latency.Now()
			m.counters.lat.observeWake(rx.kernelRx)
			m.demux(rx, n, s.slot, read)
		}
		if err == nil {
			failures = 0
			continue
		}
		if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || m.isClosing() {
			return
		}
		failures++
		m.counters.readErrors.Add(1)
		if failures >= 100 {
			m.log.Error("the shared UDP socket keeps failing; no more packets are read from it", "error", err)
			return
		}
	}
}
