package discovery

/* The coordinators' gossip transport (memberlist UDP + TCP)
 *
 * memberlist's NetTransport reads every UDP datagram into a fresh 64 KiB
 * buffer, so each datagram anyone sends to the public gossip port, even one
 * byte of garbage that the label or encryption check drops right after,
 * costs 64 KiB of heap. gossipNet is NetTransport with that one difference:
 *
 * Packets (one goroutine, udpLoop, the only reader of the UDP socket):
 *   - read into one 64 KiB buffer owned by the loop and reused for every
 *     datagram; empty datagrams are dropped;
 *   - copy the datagram into a fresh slice of exactly its size and hand
 *     that to memberlist (it keeps Packet.Buf), in arrival order.
 *
 * Streams (one goroutine, tcpLoop): accept TCP connections and hand them
 * to memberlist; accept errors back off from 5 ms to 1 s, as NetTransport's.
 *
 * Sends and dials run on the caller's goroutine: WriteTo goes out of the
 * bound UDP socket (so peers see the gossip port as the source), dials are
 * plain TCP. Shutdown closes both sockets and waits for both loops.
 */

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

const (
	// gossipReadSize holds any UDP datagram (NetTransport's udpPacketBufSize).
	gossipReadSize = 65536
	// gossipRecvBuf is the socket receive buffer asked for
	// (NetTransport's udpRecvBufSize).
	gossipRecvBuf = 2 << 20
	// gossipBindTries: binding port 0 takes a TCP port and then the same UDP
	// port, which another socket may already hold; memberlist retries 10 times.
	gossipBindTries = 10
	// Accept errors back off between these (NetTransport's tcpListen).
	gossipAcceptBackoffMin = 5 * time.Millisecond
	gossipAcceptBackoffMax = time.Second
)

// gossipNet is a memberlist.NodeAwareTransport on one address: a UDP socket
// and a TCP listener on the same port.
type gossipNet struct {
	// Immutable after listenGossip.
	bind     string // the bind host as given; "0.0.0.0" advertises a private IP
	tcp      *net.TCPListener
	udp      *net.UDPConn
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	log      *slog.Logger

	quit chan struct{} // closed by Shutdown; unblocks the loops' hand-offs
	once sync.Once
	wg   sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*gossipNet)(nil)

// listenGossip binds TCP and UDP on host:port (port 0 picks one port free
// for both) and starts the read and accept loops, as memberlist expects of a
// transport it is given. host is an IP literal; "" and "0.0.0.0" listen on
// every address of both families, as NetTransport does. log must not be nil.
func listenGossip(host string, port int, log *slog.Logger) (*gossipNet, error) {
	ip := net.ParseIP(host)
	if host != "" && ip == nil {
		return nil, fmt.Errorf("discovery: gossip bind address %q is not an IP address", host)
	}
	tries := 1
	if port == 0 {
		tries = gossipBindTries
	}
	var err error
	for range tries {
		var g *gossipNet
		if g, err = bindGossip(ip, port); err == nil {
			g.bind, g.log = host, log
			g.wg.Add(2)
			go g.udpLoop()
			go g.tcpLoop()
			return g, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, err
}

func bindGossip(ip net.IP, port int) (*gossipNet, error) {
	tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
	if err != nil {
		return nil, fmt.Errorf("discovery: gossip TCP listener: %w", err)
	}
	port = tcp.Addr().(*net.TCPAddr).Port
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
	if err != nil {
		_ = tcp.Close()
		return nil, fmt.Errorf("discovery: gossip UDP listener: %w", err)
	}
	// Best effort, as the other sockets' buffers: Linux clamps a size above
	// net.core.rmem_max instead of failing, and where a kernel refuses, the
	// default buffer still works (NetTransport halves and retries).
	_ = udp.SetReadBuffer(gossipRecvBuf)
	return &gossipNet{
		tcp:      tcp,
		udp:      udp,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		quit:     make(chan struct{}),
	}, nil
}

// port is the bound port, the same for TCP and UDP.
func (g *gossipNet) port() int { return g.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr implements memberlist.Transport as NetTransport does:
// a configured ip wins (with its port); else a bind of 0.0.0.0 advertises a
// private IP of this host, any other bind its own address, with the bound
// port.
func (g *gossipNet) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		adv := net.ParseIP(ip)
		if adv == nil {
			return nil, 0, fmt.Errorf("discovery: gossip advertise address %q is not an IP address", ip)
		}
		if v4 := adv.To4(); v4 != nil {
			adv = v4
		}
		return adv, port, nil
	}
	if g.bind != "0.0.0.0" {
		return g.tcp.Addr().(*net.TCPAddr).IP, g.port(), nil
	}
	priv, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("discovery: gossip advertise address: %w", err)
	}
	if priv == "" {
		return nil, 0, errors.New("discovery: gossip bound to 0.0.0.0 and no private IP address to advertise: set coordinator.gossip_advertise")
	}
	adv := net.ParseIP(priv)
	if adv == nil {
		return nil, 0, fmt.Errorf("discovery: gossip advertise address %q is not an IP address", priv)
	}
	return adv, g.port(), nil
}

// WriteTo implements memberlist.Transport.
func (g *gossipNet) WriteTo(b []byte, addr string) (time.Time, error) {
	return g.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress implements memberlist.NodeAwareTransport: one datagram out
// of the gossip socket; the time is taken when the write returns.
func (g *gossipNet) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	to, err := net.ResolveUDPAddr("udp", a.Addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = g.udp.WriteTo(b, to)
	return time.Now(), err
}

// PacketCh implements memberlist.Transport. Each Packet.Buf is the
// receiver's to keep.
func (g *gossipNet) PacketCh() <-chan *memberlist.Packet { return g.packetCh }

// DialTimeout implements memberlist.Transport.
func (g *gossipNet) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return g.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (g *gossipNet) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", a.Addr)
}

// StreamCh implements memberlist.Transport.
func (g *gossipNet) StreamCh() <-chan net.Conn { return g.streamCh }

// Shutdown implements memberlist.Transport: it closes both sockets and
// returns once both loops have ended. Idempotent (memberlist calls it, and
// so does a failed start).
func (g *gossipNet) Shutdown() error {
	g.once.Do(func() {
		close(g.quit)
		_ = g.tcp.Close()
		_ = g.udp.Close()
		g.wg.Wait()
	})
	return nil
}

// closed reports whether Shutdown has begun.
func (g *gossipNet) closed() bool {
	select {
	case <-g.quit:
		return true
	default:
		return false
	}
}

// udpLoop reads datagrams into one reused buffer and hands memberlist an
// exact-size copy of each.
func (g *gossipNet) udpLoop() {
	defer g.wg.Done()
	buf := make([]byte, gossipReadSize) // owned by this loop; never handed out
	for {
		n, from, err := g.udp.ReadFromUDP(buf)
		ts := time.Now()
		if err != nil {
			if g.closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			g.log.Warn("gossip: reading a UDP packet", "error", err)
			continue
		}
		if n < 1 {
			continue // memberlist's messages are never empty
		}
		b := make([]byte, n) // memberlist keeps it: never a slice of buf
		copy(b, buf)
		p := &memberlist.Packet{Buf: b, From: from, Timestamp: ts}
		select {
		case g.packetCh <- p:
		case <-g.quit:
			return
		}
	}
}

// tcpLoop accepts streams, backing off on accept errors (out of file
// descriptors, say) instead of spinning.
func (g *gossipNet) tcpLoop() {
	defer g.wg.Done()
	var delay time.Duration
	for {
		conn, err := g.tcp.AcceptTCP()
		if err != nil {
			if g.closed() || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, gossipAcceptBackoffMin), gossipAcceptBackoffMax)
			g.log.Warn("gossip: accepting a TCP connection", "error", err, "retryIn", delay)
			select {
			case <-time.After(delay):
			case <-g.quit:
				return
			}
			continue
		}
		delay = 0
		select {
		case g.streamCh <- conn:
		case <-g.quit:
			_ = conn.Close()
			return
		}
	}
}
