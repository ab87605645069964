package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/stun/v4"
	"golang.org/x/time/rate"
)

/* The coordinator's second STUN destination
 *
 * A node tells an endpoint-independent NAT mapping from an
 * endpoint-dependent one by asking two destinations what they see of one
 * socket. The most common mesh has one coordinator, whose STUN/TURN socket
 * is one destination; so a coordinator also answers STUN Binding requests
 * over UDP on its session address's port (the session itself is TCP), and
 * nodes probe both. It answers Binding requests and nothing else, with a
 * response of at most 52 bytes, under a global rate limit (no useful
 * amplifier), and counts what it drops.
 */

// STUN responder limits: a node's netcheck sends a few requests every
// netcheckInterval, so these leave room for thousands of nodes and keep a
// flood to bounded CPU.
const (
	stunAltRate  = 2000 // requests per second, all sources together
	stunAltBurst = 500
)

// stunResponder answers STUN Binding requests on one UDP socket.
type stunResponder struct {
	conn    *net.UDPConn
	log     *slog.Logger
	limit   *rate.Limiter
	wg      sync.WaitGroup
	dropped atomic.Uint64 // malformed, not a Binding request, or over the limit
}

// newSTUNResponder listens on addr (UDP) and starts answering.
func newSTUNResponder(addr netip.AddrPort, log *slog.Logger) (*stunResponder, error) {
	network := "udp4" // 0.0.0.0 too, which Go would open dual-stack
	if a := addr.Addr(); a.Is6() && !a.Is4In6() {
		network = "udp6"
		if a.IsUnspecified() {
			network = "udp" // "::": both families
		}
	}
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("STUN on the session port %v/udp: %w", addr, err)
	}
	s := &stunResponder{conn: conn, log: log, limit: rate.NewLimiter(stunAltRate, stunAltBurst)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serve()
	}()
	log.Info("answering STUN on the session port", "listen", conn.LocalAddr().String())
	return s, nil
}

func (s *stunResponder) serve() {
	buf := make([]byte, 1500)
	var req, resp stun.Message
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Debug("STUN responder read", "error", err)
			}
			return
		}
		out, ok := answerBinding(&req, &resp, buf[:n], from)
		if !ok || !s.limit.Allow() {
			s.dropped.Add(1)
			continue
		}
		_, _ = s.conn.WriteToUDPAddrPort(out, from)
	}
}

// answerBinding decodes a Binding request from data and returns the
// success response naming from; ok is false for anything else. req and
// resp are reused across calls; the result aliases resp.
func answerBinding(req, resp *stun.Message, data []byte, from netip.AddrPort) ([]byte, bool) {
	if !stun.IsMessage(data) {
		return nil, false
	}
	req.Raw = append(req.Raw[:0], data...)
	if req.Decode() != nil || req.Type != stun.BindingRequest {
		return nil, false
	}
	resp.Reset()
	ip := from.Addr().Unmap()
	err := resp.Build(
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: ip.AsSlice(), Port: int(from.Port())},
		stun.Fingerprint,
	)
	if err != nil {
		return nil, false
	}
	return resp.Raw, true
}

// Close stops answering and waits for the reader.
func (s *stunResponder) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}
