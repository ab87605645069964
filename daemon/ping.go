package daemon

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/tunnel"
)

// pingTimeout bounds the wait for one reply: the interval, but at least a
// second and at most five.
func pingTimeout(interval time.Duration) time.Duration {
	return min(max(interval, time.Second), 5*time.Second)
}

// Ping implements control.Backend with link probes (probe.go): each ping is
// an ICMP echo written into the peer's link and answered by the peer's
// daemon, so it measures the link's current path and needs neither a kernel
// ICMP socket nor a firewall rule. peer is a peer name or one of a peer's
// overlay addresses (IPv4 or IPv6) or its name in the mesh domain
// ("nas.mesh.internal"); replies show that address (the IPv4 one
// for a name). fn is called from this goroutine, in sequence order.
func (d *Daemon) Ping(ctx context.Context, peer string, count int, interval time.Duration, untilDirect bool, fn func(control.PingReply)) error {
	if !d.isStarted() {
		return control.ErrUnavailable
	}
	target := peer
	peer, addr, ok := d.view.Load().pingTarget(d.peerArg(target))
	if !ok {
		return fmt.Errorf("%w: %q is neither a peer's name nor one of its overlay addresses", control.ErrPeerNotFound, target)
	}
	var rnd [10]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	id := binary.BigEndian.Uint16(rnd[:2])
	nonce := binary.BigEndian.Uint64(rnd[2:])
	timeout := pingTimeout(interval)
	next := time.Now()
	for seq := 1; seq <= count; seq++ {
		reply := d.pingOnce(ctx, peer, addr, id, uint16(seq), nonce, timeout)
		reply.Seq = seq
		if err := ctx.Err(); err != nil {
			return err
		}
		fn(reply)
		if untilDirect && reply.Error == "" && reply.Path == control.PathDirect {
			return nil
		}
		if seq == count {
			break
		}
		next = next.Add(interval)
		if wait := time.Until(next); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
	return nil
}

// pingOnce sends one probe to peer over its current link and describes the
// outcome. The view is re-read every time: the link may come or go between
// pings.
func (d *Daemon) pingOnce(ctx context.Context, peer string, addr netip.Addr, id, seq uint16, nonce uint64, timeout time.Duration) control.PingReply {
	v := d.view.Load()
	p := v.byName[peer]
	if p == nil {
		return control.PingReply{Peer: peer, Address: addr, Error: "no path: the peer left the registry"}
	}
	reply := control.PingReply{Peer: peer, Address: addr}
	lc := v.links[peer]
	switch {
	case p.Excluded != "":
		reply.Error = "no path: " + p.Excluded
		return reply
	case lc == nil && p.Idle:
		d.wantLink(peer)
		reply.Error = "no path: the link is being set up (ice.lazy)"
		return reply
	case lc == nil:
		reply.Error = "no path: the peer is offline"
		return reply
	}
	rtt, err := d.probes.ping(ctx, lc, id, seq, nonce, timeout)
	s := lc.link.Status()
	switch {
	case err == nil:
		reply.RTT = rtt
		reply.Path = wirePath(s.Path)
		reply.Endpoint = s.Remote.Addr
		if s.Path == tunnel.PathRelay {
			reply.Relay = s.RelayServer
		}
	case errors.Is(err, errProbeTimeout):
		reply.Error = "timeout"
	case errors.Is(err, tunnel.ErrLinkDown):
		reply.Error = fmt.Sprintf("no path: link %s", linkState(s.State))
	default:
		reply.Error = err.Error()
	}
	return reply
}

// pingTarget resolves what meshctl ping names: a registry peer by name, or
// the peer whose overlay IPv4 or IPv6 address target is. addr is the address
// the replies show.
func (v *view) pingTarget(target string) (name string, addr netip.Addr, ok bool) {
	if p := v.byName[target]; p != nil {
		return p.Name, p.Addr, true
	}
	a, err := netip.ParseAddr(target)
	if err != nil {
		return "", netip.Addr{}, false
	}
	a = a.Unmap()
	for i := range v.peers {
		if p := &v.peers[i]; a == p.Addr || (p.Addr6.IsValid() && a == p.Addr6) {
			return p.Name, a, true
		}
	}
	return "", netip.Addr{}, false
}
