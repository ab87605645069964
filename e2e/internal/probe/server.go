package probe

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// ServerOptions configures a Server.
type ServerOptions struct {
	// UDP lists the UDP sockets to serve. An OpFilter request makes every one
	// of them reply, so for the RFC 4787 filtering test give the contacted
	// address, the same IP on another port, and another IP.
	UDP []netip.AddrPort
	// TCP lists TCP listeners; each accepted connection gets one Reply line
	// and is closed. May be empty.
	TCP []netip.AddrPort
	// Logger must not be nil (use slog.New(slog.DiscardHandler) to mute).
	Logger *slog.Logger
}

// Server answers probe requests with the source address it observed.
type Server struct {
	// immutable after NewServer
	log   *slog.Logger
	udp   []*net.UDPConn
	tcp   []*net.TCPListener
	addrs []netip.AddrPort // local address of each udp conn, same order

	wg        sync.WaitGroup
	closeOnce sync.Once
	done      chan struct{}
}

// NewServer binds every socket in opts; it starts no goroutines.
func NewServer(opts ServerOptions) (*Server, error) {
	if len(opts.UDP) == 0 && len(opts.TCP) == 0 {
		return nil, ErrNoAddrs
	}
	if opts.Logger == nil {
		return nil, errors.New("probe: ServerOptions.Logger must not be nil")
	}
	s := &Server{log: opts.Logger, done: make(chan struct{})}
	for _, ap := range opts.UDP {
		c, err := net.ListenUDP(network("udp", ap), net.UDPAddrFromAddrPort(ap))
		if err != nil {
			s.closeSockets()
			return nil, fmt.Errorf("probe: listen udp %v: %w", ap, err)
		}
		s.udp = append(s.udp, c)
		s.addrs = append(s.addrs, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	for _, ap := range opts.TCP {
		l, err := net.ListenTCP(network("tcp", ap), net.TCPAddrFromAddrPort(ap))
		if err != nil {
			s.closeSockets()
			return nil, fmt.Errorf("probe: listen tcp %v: %w", ap, err)
		}
		s.tcp = append(s.tcp, l)
	}
	return s, nil
}

// Start launches one reader per socket.
func (s *Server) Start() {
	for i := range s.udp {
		s.wg.Add(1)
		go s.serveUDP(i)
	}
	for _, l := range s.tcp {
		s.wg.Add(1)
		go s.serveTCP(l)
	}
	go func() {
		s.wg.Wait()
		close(s.done)
	}()
}

// Close stops the server; it is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(s.closeSockets)
	return nil
}

// Done is closed once every reader has returned after Close.
func (s *Server) Done() <-chan struct{} { return s.done }

func (s *Server) closeSockets() {
	for _, c := range s.udp {
		_ = c.Close()
	}
	for _, l := range s.tcp {
		_ = l.Close()
	}
}

func (s *Server) serveUDP(i int) {
	defer s.wg.Done()
	c := s.udp[i]
	buf := make([]byte, maxMessage+1)
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("udp read failed", "listen", s.addrs[i], "error", err)
			}
			return
		}
		req, err := decodeRequest(buf[:n])
		if err != nil {
			s.log.Debug("dropped datagram", "from", src, "error", err)
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		s.log.Info("request", "op", req.Op, "id", req.ID, "listen", s.addrs[i], "observed", src)
		switch req.Op {
		case OpEcho:
			s.reply(i, req.ID, src)
		case OpFilter:
			// The contacted socket answers first so that the client has its
			// primary reply even if it gives up right after.
			s.reply(i, req.ID, src)
			for j := range s.udp {
				if j != i {
					s.reply(j, req.ID, src)
				}
			}
		}
	}
}

func (s *Server) reply(i int, id uint64, to netip.AddrPort) {
	b, err := json.Marshal(Reply{V: Version, ID: id, From: s.addrs[i], Observed: to})
	if err != nil {
		s.log.Error("encode reply", "error", err)
		return
	}
	// A send can block on EAGAIN while the next hop is unresolved; one
	// unreachable client must not stall the socket for the others.
	_ = s.udp[i].SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := s.udp[i].WriteToUDPAddrPort(b, to); err != nil {
		// A send can fail (for example no route); the client's timeout
		// reports it, the server keeps serving.
		s.log.Info("reply failed", "from", s.addrs[i], "to", to, "error", err)
	}
}

func (s *Server) serveTCP(l *net.TCPListener) {
	defer s.wg.Done()
	local := l.Addr().(*net.TCPAddr).AddrPort()
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Error("tcp accept failed", "listen", local, "error", err)
			}
			return
		}
		src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		s.log.Info("tcp connection", "listen", local, "observed", src)
		b, err := json.Marshal(Reply{V: Version, From: local, Observed: src})
		if err == nil {
			_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Write(append(b, '\n'))
		}
		_ = c.Close()
	}
}
