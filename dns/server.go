package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mdns "github.com/miekg/dns"
)

// Options configure a [Server].
type Options struct {
	// Logger, or nil for none.
	Logger *slog.Logger
	// Listen are the addresses served over UDP and TCP; must not be
	// empty. The daemon passes the node's overlay addresses with port 53
	// and nothing else: the resolver is never on a public address.
	Listen []netip.AddrPort
	// Forward are upstream resolvers ("IP:port") for names outside the
	// mesh, tried in order; nil means such queries are REFUSED.
	Forward []netip.AddrPort
	// ForwardTimeout bounds one forwarded exchange; zero means 2s.
	ForwardTimeout time.Duration
	// FreeBind binds the listeners even if their address is not (yet)
	// assigned to an interface (IP_FREEBIND), so that an IPv6 address
	// still in duplicate address detection does not fail the start.
	FreeBind bool
}

// Server is the mesh's resolver: it answers from the current [Table] on
// its listen addresses. Lifecycle: New validates, Start binds and serves,
// Close is idempotent.
type Server struct {
	// ================================================================
	// Immutable after New.
	opts Options
	log  *slog.Logger
	fwd  *mdns.Client

	// ================================================================
	// Read by every query, swapped whole by SetTable.
	table atomic.Pointer[Table]

	// Counters, read by Stats.
	queries, refused, nxdomain, forwarded, failed atomic.Uint64

	// ================================================================
	// mu guards the following.
	mu      sync.Mutex
	servers []*mdns.Server
	addrs   []net.Addr
	closed  bool
	stopCtx func() bool    // stops the AfterFunc that closes on ctx
	wg      sync.WaitGroup // one per serving goroutine
}

// New returns a server for opts serving table (which must not be nil). It
// starts nothing.
func New(opts Options, table *Table) (*Server, error) {
	if len(opts.Listen) == 0 {
		return nil, fmt.Errorf("%w: no listen address", ErrInvalidOptions)
	}
	if table == nil {
		return nil, fmt.Errorf("%w: no table", ErrInvalidOptions)
	}
	for _, a := range append(append([]netip.AddrPort(nil), opts.Listen...), opts.Forward...) {
		if !a.IsValid() {
			return nil, fmt.Errorf("%w: invalid address %v", ErrInvalidOptions, a)
		}
	}
	if opts.ForwardTimeout <= 0 {
		opts.ForwardTimeout = 2 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: log, fwd: &mdns.Client{Net: "udp", Timeout: opts.ForwardTimeout}}
	s.table.Store(table)
	return s, nil
}

// SetTable swaps in the names to serve; queries in flight finish with the
// table they started with. t must not be nil.
func (s *Server) SetTable(t *Table) { s.table.Store(t) }

// Table returns the table being served.
func (s *Server) Table() *Table { return s.table.Load() }

// Start binds UDP and TCP on every listen address and serves until Close
// or until ctx is done. If one bind fails, nothing stays bound.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.servers != nil {
		return ErrAlreadyStarted
	}
	lc := listenConfig(s.opts.FreeBind)
	var servers []*mdns.Server
	var addrs []net.Addr
	fail := func(err error) error {
		for _, srv := range servers {
			if srv.PacketConn != nil {
				_ = srv.PacketConn.Close()
			}
			if srv.Listener != nil {
				_ = srv.Listener.Close()
			}
		}
		return err
	}
	for _, a := range s.opts.Listen {
		var pc net.PacketConn
		var l net.Listener
		// The TCP port follows the UDP one. With port 0 (tests) the UDP
		// port the kernel picks may be taken for TCP: pick again.
		for attempt := 0; ; attempt++ {
			var err error
			if pc, err = lc.ListenPacket(ctx, "udp", a.String()); err != nil {
				return fail(fmt.Errorf("dns: listen udp %v: %w", a, err))
			}
			tcpAddr := netip.AddrPortFrom(a.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port))
			if l, err = lc.Listen(ctx, "tcp", tcpAddr.String()); err == nil {
				break
			}
			_ = pc.Close()
			if a.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) || attempt == 20 {
				return fail(fmt.Errorf("dns: listen tcp %v: %w", tcpAddr, err))
			}
		}
		servers = append(servers, &mdns.Server{PacketConn: pc, Handler: s, UDPSize: maxUDPSize}, &mdns.Server{Listener: l, Handler: s})
		addrs = append(addrs, pc.LocalAddr(), l.Addr())
	}
	s.servers, s.addrs = servers, addrs
	for _, srv := range servers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("dns listener stopped", "error", err)
			}
		}()
	}
	s.stopCtx = context.AfterFunc(ctx, s.shutdown)
	s.log.Info("dns resolver listening", "addresses", fmt.Sprint(s.opts.Listen), "domain", s.Table().Domain())
	return nil
}

// Listen returns the addresses the server was made for (Options.Listen).
func (s *Server) Listen() []netip.AddrPort { return append([]netip.AddrPort(nil), s.opts.Listen...) }

// Addrs returns the bound addresses (UDP and TCP per listen address, in
// that order), nil before Start.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.addrs...)
}

// Close stops serving and waits for the listeners to stop. It is
// idempotent.
func (s *Server) Close() error {
	s.shutdown()
	s.wg.Wait()
	return nil
}

func (s *Server) shutdown() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	servers := s.servers
	if s.stopCtx != nil {
		s.stopCtx()
	}
	s.mu.Unlock()
	for _, srv := range servers {
		// Shutdown fails for a server that has not started yet; closing
		// its socket ends ActivateAndServe either way.
		if err := srv.Shutdown(); err != nil {
			if srv.PacketConn != nil {
				_ = srv.PacketConn.Close()
			}
			if srv.Listener != nil {
				_ = srv.Listener.Close()
			}
		}
	}
}

// Stats counts queries since New.
type Stats struct {
	Queries   uint64 // every request answered or forwarded
	Refused   uint64 // outside the mesh with forwarding off
	NXDomain  uint64 // no such node
	Forwarded uint64 // sent to an upstream resolver
	Failed    uint64 // forwarded without an answer (SERVFAIL)
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Queries: s.queries.Load(), Refused: s.refused.Load(), NXDomain: s.nxdomain.Load(),
		Forwarded: s.forwarded.Load(), Failed: s.failed.Load()}
}

// Answer returns the reply meshd's resolver gives to req without
// forwarding: a name outside the mesh gets REFUSED. req must not be nil.
func (s *Server) Answer(req *mdns.Msg) *mdns.Msg {
	m, _ := answer(s.table.Load(), req)
	return m
}

// ServeDNS implements mdns.Handler. It is called concurrently, one
// goroutine per UDP packet or TCP connection.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	s.queries.Add(1)
	m, z := answer(s.table.Load(), req)
	if z == zoneOther && len(s.opts.Forward) > 0 {
		s.forwarded.Add(1)
		m = s.forward(req)
	}
	switch m.Rcode {
	case mdns.RcodeRefused:
		s.refused.Add(1)
	case mdns.RcodeNameError:
		if z != zoneOther {
			s.nxdomain.Add(1)
		}
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := mdns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(min(max(opt.UDPSize(), mdns.MinMsgSize), maxUDPSize))
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// forward asks the upstream resolvers in turn and returns the first
// answer, or SERVFAIL.
func (s *Server) forward(req *mdns.Msg) *mdns.Msg {
	for _, up := range s.opts.Forward {
		r, _, err := s.fwd.Exchange(req, up.String())
		if err == nil && r != nil {
			r.Id = req.Id
			return r
		}
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("dns forward failed", "upstream", up.String(), "error", err)
		}
	}
	s.failed.Add(1)
	m := new(mdns.Msg)
	m.SetRcode(req, mdns.RcodeServerFailure)
	return m
}
