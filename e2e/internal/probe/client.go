package probe

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// Retransmit is how long a client waits for a reply before it sends the
// request again. Inside the lab a reply takes well under a millisecond; the
// resend only covers the first packet of a flow racing ARP resolution.
const Retransmit = 250 * time.Millisecond

// Echo sends an echo request from one socket bound to bind to each target in
// turn and returns the source address each target observed, in order. One
// socket for all targets is the point: it is the RFC 4787 mapping test. It
// fails with ErrNoReply if a target does not answer before ctx ends.
func Echo(ctx context.Context, bind netip.AddrPort, targets []netip.AddrPort) ([]netip.AddrPort, error) {
	c, err := listen(bind)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := make([]netip.AddrPort, 0, len(targets))
	for _, t := range targets {
		req := Request{V: Version, Op: OpEcho, ID: newID()}
		var got netip.AddrPort
		// Any reply carrying the request's ID answers it: a server behind a
		// NAT reports its private address in From, and the datagram's source
		// is the NAT's, so neither need equal t.
		err := exchange(ctx, c, t, req, func(r Reply, _ netip.AddrPort) bool {
			got = r.Observed
			return true
		})
		if err != nil {
			return nil, fmt.Errorf("probe: echo %v from %v: %w", t, bind, err)
		}
		out = append(out, got)
	}
	return out, nil
}

// Filter runs the RFC 4787 filtering test: from a socket bound to bind it
// contacts only target, which makes every socket of the server reply, and it
// collects for window after the first reply which of them got through.
func Filter(ctx context.Context, bind, target netip.AddrPort, window time.Duration) (FilterResult, error) {
	var res FilterResult
	c, err := listen(bind)
	if err != nil {
		return res, err
	}
	defer c.Close()
	req := Request{V: Version, Op: OpFilter, ID: newID()}
	// Replies are told apart by the source address the client sees, which
	// is what a NAT's filter decides on.
	seen := map[netip.AddrPort]bool{}
	record := func(src netip.AddrPort) {
		if !seen[src] {
			seen[src] = true
			res.From = append(res.From, src)
		}
	}
	err = exchange(ctx, c, target, req, func(r Reply, src netip.AddrPort) bool {
		record(src)
		if src == target {
			res.Observed = r.Observed
			return true
		}
		return false
	})
	if err != nil {
		return res, fmt.Errorf("probe: filter via %v from %v: %w", target, bind, err)
	}
	// The other sockets answered right after the primary; give them window to
	// arrive. A reply still missing then was filtered.
	deadline := time.Now().Add(window)
	buf := make([]byte, maxMessage+1)
	for {
		if err := c.SetDeadline(deadline); err != nil {
			return res, err
		}
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return res, nil
			}
			return res, fmt.Errorf("probe: filter read: %w", err)
		}
		if r, err := decodeReply(buf[:n]); err == nil && r.ID == req.ID {
			record(unmap(src))
		}
	}
}

// Punch is the simultaneous open of two hosts behind stateful firewalls
// that drop whatever they did not see go out: target runs Punch too, at the
// same time, and both send echo requests to each other every Retransmit
// from a socket bound to bind, answering the other's requests. Each side's
// first datagram opens its own firewall for the other's; the first one that
// arrives proves the path. Punch returns the source of the first valid
// datagram from target (request or reply) once window has passed after it,
// during which it keeps sending and answering so that target hears it too.
// It fails with ErrNoReply if nothing from target arrived before ctx ended.
func Punch(ctx context.Context, bind, target netip.AddrPort, window time.Duration) (netip.AddrPort, error) {
	c, err := listen(bind)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer c.Close()
	req := Request{V: Version, Op: OpEcho, ID: newID()}
	msg, err := json.Marshal(req)
	if err != nil {
		return netip.AddrPort{}, err
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	buf := make([]byte, maxMessage+1)
	var heard netip.AddrPort
	var until, next time.Time // until: zero until heard
	for {
		now := time.Now()
		if ctx.Err() != nil {
			if heard.IsValid() {
				return heard, nil
			}
			return heard, fmt.Errorf("probe: punch %v from %v: %w: %v", target, bind, ErrNoReply, ctx.Err())
		}
		if heard.IsValid() && !now.Before(until) {
			return heard, nil
		}
		if !now.Before(next) {
			// A failed send (no route yet, EAGAIN) is retried next time.
			_ = c.SetWriteDeadline(now.Add(Retransmit))
			_, _ = c.WriteToUDPAddrPort(msg, target)
			next = now.Add(Retransmit)
		}
		deadline := next
		if heard.IsValid() && until.Before(deadline) {
			deadline = until
		}
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		if err := c.SetReadDeadline(deadline); err != nil {
			return heard, err
		}
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				// ECONNREFUSED: target's socket is not there yet.
				_ = waitCtx(ctx, time.Until(deadline))
			}
			continue
		}
		src = unmap(src)
		if src.Addr() != target.Addr() {
			continue // not from target: foreign traffic
		}
		if r, err := decodeRequest(buf[:n]); err == nil {
			if b, err := json.Marshal(Reply{V: Version, ID: r.ID, From: local, Observed: src}); err == nil {
				_, _ = c.WriteToUDPAddrPort(b, src)
			}
		} else if r, err := decodeReply(buf[:n]); err != nil || r.ID != req.ID {
			continue
		}
		if !heard.IsValid() {
			heard, until = src, time.Now().Add(window)
		}
	}
}

// TCPEcho connects to target and returns the source address it observed.
func TCPEcho(ctx context.Context, target netip.AddrPort) (netip.AddrPort, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network("tcp", target), target.String())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("probe: tcp %v: %w", target, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	line, err := bufio.NewReaderSize(c, maxMessage+1).ReadSlice('\n')
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("probe: tcp %v read: %w", target, err)
	}
	r, err := decodeReply(line)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("probe: tcp %v: %w", target, err)
	}
	return r.Observed, nil
}

// network is proto ("udp", "tcp") for the family of ap: an IPv6 address
// gets an IPv6-only socket, anything else an IPv4 one, so a probe never
// crosses families behind the caller's back.
func network(proto string, ap netip.AddrPort) string {
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		return proto + "6"
	}
	return proto + "4"
}

func listen(bind netip.AddrPort) (*net.UDPConn, error) {
	c, err := net.ListenUDP(network("udp", bind), net.UDPAddrFromAddrPort(bind))
	if err != nil {
		return nil, fmt.Errorf("probe: bind %v: %w", bind, err)
	}
	return c, nil
}

// exchange sends req to target every Retransmit until accept returns true
// for a reply carrying req.ID (given with the datagram's source), or ctx
// ends.
func exchange(ctx context.Context, c *net.UDPConn, target netip.AddrPort, req Request, accept func(Reply, netip.AddrPort) bool) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	buf := make([]byte, maxMessage+1)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %v", ErrNoReply, err)
		}
		deadline := time.Now().Add(Retransmit)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		// The write needs the deadline too: while the kernel still resolves
		// the next hop (ARP on a cut link) a send can block on EAGAIN.
		if err := c.SetDeadline(deadline); err != nil {
			return err
		}
		if _, err := c.WriteToUDPAddrPort(b, target); err != nil {
			// EAGAIN timeouts, ENETUNREACH and friends: keep trying until
			// ctx ends, the path may come back (a restored link).
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				if werr := waitCtx(ctx, time.Until(deadline)); werr != nil {
					return fmt.Errorf("%w: send: %v", ErrNoReply, err)
				}
			}
			continue
		}
		for {
			n, src, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // resend
				}
				// ECONNREFUSED from an ICMP port unreachable: the target
				// socket is not there (yet); resend after the pause.
				if werr := waitCtx(ctx, time.Until(deadline)); werr != nil {
					return fmt.Errorf("%w: %v", ErrNoReply, err)
				}
				break
			}
			r, err := decodeReply(buf[:n])
			if err != nil || r.ID != req.ID {
				continue
			}
			if accept(r, unmap(src)) {
				return nil
			}
		}
	}
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func waitCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func newID() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; fall back to the clock so a
		// failure cannot panic a probe.
		return uint64(time.Now().UnixNano()) ^ uint64(os.Getpid())
	}
	return binary.LittleEndian.Uint64(b[:])
}
