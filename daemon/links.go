package daemon

import (
	"net/netip"
	"sync/atomic"

	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel"
)

// linkConn is the PeerConn the overlay gets for a peer: the tunnel.Link
// itself on the send side, plus a receive hook that takes the daemon's link
// probes (ping.go) out of the stream before the overlay sees it. One
// linkConn exists per *tunnel.Link, so the overlay's identity tracking
// (PeerConn must be comparable) follows the link.
//
// The hook costs the data path one indirect call per received batch and,
// per packet, a version and protocol byte test (probe.go isProbe); probes
// are rare ICMP packets, so the filtered copy of a batch is rare too.
type linkConn struct {
	// Immutable after newLinkConn.
	d    *Daemon
	link *tunnel.Link
	name string

	// peerAddr is the peer's overlay IPv4 (probes must come from it);
	// written by the run goroutine when the registry changes it.
	peerAddr atomic.Pointer[netip.Addr]
	// recv is the overlay's receiver, nil when the overlay has none.
	recv atomic.Pointer[overlay.ReceiveFunc]

	// scratch holds a batch with the probes taken out. Owned by the link's
	// deliverer goroutine (receive is called one batch at a time per link).
	scratch [][]byte

	// shown is the certificate the link had authenticated when the desired
	// state was last computed (desiredInput.Handshake). Control loop only.
	shown *pki.NodeCert
}

var _ overlay.PeerConn = (*linkConn)(nil)

func newLinkConn(d *Daemon, l *tunnel.Link, peerAddr netip.Addr) *linkConn {
	c := &linkConn{d: d, link: l, name: l.Name()}
	c.setPeerAddr(peerAddr)
	// Installed at once, not when the overlay adopts the link, so that the
	// peer's probes are answered as soon as the link is up.
	l.SetReceiver(c.receive)
	return c
}

func (c *linkConn) setPeerAddr(a netip.Addr) { c.peerAddr.Store(&a) }

// WriteBatch implements overlay.PeerConn.
//
// borrowed: bufs belong to the caller, as in tunnel.Link.WriteBatch.
func (c *linkConn) WriteBatch(bufs [][]byte, offset int) (int, error) {
	return c.link.WriteBatch(bufs, offset)
}

// SetReceiver implements overlay.PeerConn: it installs where non-probe
// packets go; the link keeps delivering to receive.
func (c *linkConn) SetReceiver(fn overlay.ReceiveFunc) {
	if fn == nil {
		c.recv.Store(nil)
		return
	}
	c.recv.Store(&fn)
}

// receive is the link's receiver. borrowed: bufs are the link's, valid
// during the call; probes are copied before they leave it.
func (c *linkConn) receive(bufs [][]byte, offset int) {
	n := 0
	for _, b := range bufs {
		if isProbe(b[offset:]) {
			n++
		}
	}
	fn := c.recv.Load()
	if n == 0 {
		if fn != nil {
			(*fn)(bufs, offset)
		}
		return
	}
	c.scratch = c.scratch[:0]
	for _, b := range bufs {
		if p := b[offset:]; isProbe(p) {
			c.d.probes.handle(c, p)
			continue
		}
		c.scratch = append(c.scratch, b)
	}
	if fn != nil && len(c.scratch) > 0 {
		(*fn)(c.scratch, offset)
	}
	clear(c.scratch)
}

// checkPeerCerts asks for a recomputation when a link's handshake
// authenticated another certificate than the desired state used (a rekey
// presenting a renewed certificate): the firewall follows what the link
// authenticated. Control loop only.
func (d *Daemon) checkPeerCerts() {
	fp := func(nc *pki.NodeCert) string {
		if nc == nil {
			return ""
		}
		return nc.Fingerprint
	}
	for _, lc := range d.loop.links {
		if fp(lc.link.PeerCert()) != fp(lc.shown) {
			d.kickLoop()
			return
		}
	}
}

// linkTotals are a link's counters that metrics export as per-peer
// `_total` series.
type linkTotals struct {
	rxBytes, txBytes, rxPackets, txPackets uint64
	sessions, failures                     uint64
}

func (t linkTotals) plus(u linkTotals) linkTotals {
	return linkTotals{
		rxBytes: t.rxBytes + u.rxBytes, txBytes: t.txBytes + u.txBytes,
		rxPackets: t.rxPackets + u.rxPackets, txPackets: t.txPackets + u.txPackets,
		sessions: t.sessions + u.sessions, failures: t.failures + u.failures,
	}
}

// totals reads the link's counters now.
func (c *linkConn) totals() linkTotals {
	s := c.link.Status()
	return linkTotals{
		rxBytes: s.BytesReceived, txBytes: s.BytesSent,
		rxPackets: s.PacketsReceived, txPackets: s.PacketsSent,
		sessions: s.Attempts, failures: s.Failures,
	}
}

// retire adds the final counters of lc, a link just closed, to the peer's
// retired totals. Control loop only; the caller publishes a view next.
func (d *Daemon) retire(name string, lc *linkConn) {
	if d.loop.retired == nil {
		d.loop.retired = map[string]linkTotals{}
	}
	d.loop.retired[name] = d.loop.retired[name].plus(lc.totals())
}
