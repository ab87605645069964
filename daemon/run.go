package daemon

import (
	"errors"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel"
)

// certCheckInterval paces the certificate expiry check.
const certCheckInterval = time.Hour

// loopState is owned by the control loop goroutine (and by Start and Close
// while the loop does not run).
type loopState struct {
	links       map[string]*linkConn // current links, by peer name
	dropped     map[droppedRoute]bool
	applyErr    string // last overlay.Reconfig failure, "" if it applied
	unsubLinks  func()
	unsubClient func()
	coordSeen   discovery.Status // last polled session status
	coordEver   bool             // a session was up at least once
	// retired sums, per peer, the counters of the links closed so far, so
	// that per-peer totals survive re-links (metrics.go). Never shrinks
	// within a process; copied into every published view.
	retired map[string]linkTotals
}

// view is what readers (the control API, metrics, ping) see of the control
// loop's state: published whole after every recomputation.
//
// retired and links are published together, so a reader sees a closed
// link's counters either in links or in retired, never in both or neither.
type view struct {
	peers   []peerPlan
	byName  map[string]*peerPlan
	links   map[string]*linkConn
	retired map[string]linkTotals // read-only copy of loopState.retired
}

func (d *Daemon) publishView(peers []peerPlan, links map[string]*linkConn) {
	v := &view{peers: peers, byName: make(map[string]*peerPlan, len(peers)), links: links, retired: maps.Clone(d.loop.retired)}
	for i := range v.peers {
		v.byName[v.peers[i].Name] = &v.peers[i]
	}
	d.view.Store(v)
	d.updateNames(peers)
}

// runLoop is the control loop: it owns the link set and applies the desired
// state, coalescing registry changes, link events and reloads into one
// recomputation.
func (d *Daemon) runLoop() {
	coalesce := time.NewTimer(time.Hour)
	coalesce.Stop()
	armed := false
	status := time.NewTicker(d.opts.Tuning.statusInterval())
	defer status.Stop()
	certs := time.NewTicker(certCheckInterval)
	defer certs.Stop()
	defer coalesce.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.kick:
			if !armed {
				armed = true
				coalesce.Reset(d.opts.Tuning.coalesce())
			}
		case <-coalesce.C:
			armed = false
			d.reconcile()
		case fn := <-d.cmds:
			fn()
		case <-status.C:
			d.pollSession()
			d.checkPeerCerts()
		case <-certs.C:
			d.warnCertificate()
		}
	}
}

// desiredInput gathers the inputs of the desired state. Control loop only.
func (d *Daemon) desiredInput() desiredInput {
	rc := d.run.Load()
	in := desiredInput{
		Self:      d.self,
		Firewall:  rc.firewall,
		Accept:    d.startCfg.Routes.Accept,
		Advertise: d.startCfg.Routes.Advertise,
		Forward:   d.startCfg.Routes.Forward,
		Revoked:   d.verifier.IsRevoked,
		Now:       d.now(),
		Connected: map[string]bool{},
		Lazy:      d.lazy,
		HaveLink:  map[string]bool{},
		Handshake: map[string]*pki.NodeCert{},
	}
	if c := d.client.Load(); c != nil {
		in.Records = c.Peers()
	}
	for name, lc := range d.loop.links {
		in.HaveLink[name] = true
		if nc := lc.link.PeerCert(); nc != nil {
			in.Handshake[name] = nc
		}
		lc.shown = in.Handshake[name]
		if lc.link.State() == tunnel.StateConnected {
			in.Connected[name] = true
		}
	}
	if d.lazy {
		in.Wanted = d.lazySnapshot()
	}
	return in
}

// reconcile computes the desired state and applies it: links first (so the
// overlay gets them), then one overlay.Reconfig, then the links that are no
// longer wanted are closed. Control loop only.
func (d *Daemon) reconcile() {
	want := computeDesired(d.desiredInput())
	d.applyDesired(want)
}

func (d *Daemon) applyDesired(want desired) error {
	if d.loop.links == nil {
		d.loop.links = map[string]*linkConn{}
	}
	links := make(map[string]*linkConn, len(want.Links))
	for _, p := range want.Links {
		l, err := d.tm.Link(p)
		if err != nil {
			d.log.Warn("cannot make a link", "peer", p.Name, "error", err)
			continue
		}
		lc := d.loop.links[p.Name]
		if lc == nil || lc.link != l {
			lc = newLinkConn(d, l, p.Addr)
		} else {
			lc.setPeerAddr(p.Addr)
		}
		links[p.Name] = lc
	}
	cfg := want.Overlay
	cfg.Peers = slices.Clone(cfg.Peers)
	for i := range cfg.Peers {
		if lc := links[cfg.Peers[i].Name]; lc != nil {
			cfg.Peers[i].Conn = lc
		}
	}
	err := d.ov.Reconfig(cfg)
	switch {
	case err == nil:
		d.loop.applyErr = ""
		d.log.Debug("desired state applied", "peers", len(cfg.Peers), "links", len(links))
	case errors.Is(err, overlay.ErrNoChanges):
		err = nil
	default:
		// Nothing changed in the overlay; keep the links it still uses.
		if d.loop.applyErr != err.Error() {
			d.log.Error("cannot apply the desired state to the overlay", "error", err)
		}
		d.loop.applyErr = err.Error()
		for name, lc := range d.loop.links {
			if links[name] == nil {
				links[name] = lc
			}
		}
	}
	for name, lc := range d.loop.links {
		if links[name] != lc {
			d.log.Info("closing link", "peer", name)
			d.tm.Remove(name)
			d.retire(name, lc)
		}
	}
	d.loop.links = links
	d.logDropped(want.Dropped)
	d.publishView(want.Peers, links)
	d.applied.Store(true)
	return err
}

// logDropped logs each advertised subnet that is not installed, once.
func (d *Daemon) logDropped(dr []droppedRoute) {
	now := make(map[droppedRoute]bool, len(dr))
	for _, r := range dr {
		now[r] = true
		if !d.loop.dropped[r] {
			d.log.Info("not routing a subnet a peer advertises", "peer", r.Peer, "subnet", r.Prefix.String(), "reason", r.Reason)
		}
	}
	d.loop.dropped = now
}

// pollSession notices coordinator failovers and session loss, and asks for
// a netcheck when a session comes up. Control loop only.
func (d *Daemon) pollSession() {
	c := d.client.Load()
	if c == nil {
		return
	}
	st := c.Status()
	prev := d.loop.coordSeen
	d.loop.coordSeen = st
	switch {
	case st.Connected && !prev.Connected:
		if d.loop.coordEver {
			from := prev.Coordinator
			if from == "" {
				from = prev.Address
			}
			d.log.Warn("coordinator failover", "from", from, "to", st.Coordinator, "address", st.Address)
			d.events.publish(control.Event{Kind: control.EventCoordinatorFailover, From: from, To: st.Coordinator,
				Message: "session re-established with " + st.Address})
		} else {
			d.log.Info("coordinator session up", "coordinator", st.Coordinator, "address", st.Address)
		}
		d.loop.coordEver = true
		// The node may have moved (a failover often means a new network):
		// refresh its NAT behaviour and public endpoints.
		d.kickNetcheck()
	case !st.Connected && prev.Connected:
		msg := "session lost"
		if st.LastError != nil {
			msg += ": " + st.LastError.Error()
		}
		d.log.Warn("coordinator session lost; links keep running, reconnecting", "coordinator", prev.Coordinator, "error", st.LastError)
		d.events.publish(control.Event{Kind: control.EventCoordinatorFailover, From: prev.Coordinator, Message: msg})
	case st.Connected && prev.Connected && st.Coordinator != prev.Coordinator:
		d.events.publish(control.Event{Kind: control.EventCoordinatorFailover, From: prev.Coordinator, To: st.Coordinator})
		d.kickNetcheck()
	}
}

// warnCertificate logs (and reports as an event) a certificate that expires
// within control.CertWarnDays or has expired.
func (d *Daemon) warnCertificate() {
	ci := control.CertStatus(control.CertInfo{NotAfter: d.cred().Cert.Cert.NotAfter}, d.now())
	if ci.Warning == "" {
		return
	}
	if ci.DaysLeft < 0 || !d.now().Before(d.cred().Cert.Cert.NotAfter) {
		d.log.Error("CERTIFICATE EXPIRED: "+ci.Warning, "cert", d.startCfg.PKI.Cert, "notAfter", d.cred().Cert.Cert.NotAfter)
	} else {
		d.log.Warn("CERTIFICATE EXPIRES SOON: "+ci.Warning, "cert", d.startCfg.PKI.Cert, "daysLeft", ci.DaysLeft)
	}
	d.events.publish(control.Event{Kind: control.EventCertWarning, Message: ci.Warning})
}

// watchReady closes Ready once the overlay address is bindable, the
// registry is available (a session is up, or the cache was loaded) and the
// control loop has applied the peers it knows.
func (d *Daemon) watchReady() {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if d.registryAvailable() && d.applied.Load() && d.addressBindable() {
			d.readyOnce.Do(func() { close(d.ready) })
			d.log.Info("node ready", "address", d.self.Addrs[0].Addr().String())
			return
		}
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *Daemon) registryAvailable() bool {
	if d.hadCache {
		return true
	}
	c := d.client.Load()
	return c != nil && c.Status().Connected
}

// addressBindable reports whether a UDP socket can be bound to every overlay
// address (on the kernel, or on the userspace netstack).
func (d *Daemon) addressBindable() bool {
	for _, a := range d.self.Addrs {
		ap := netip.AddrPortFrom(a.Addr(), 0)
		if n := d.ov.Net(); n != nil {
			c, err := n.ListenUDPAddrPort(ap)
			if err != nil {
				return false
			}
			c.Close()
			continue
		}
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// daemonStats are the daemon's own counters (the leaves count the rest).
type daemonStats struct {
	handshakes    atomic.Uint64
	reloads       atomic.Uint64
	reloadsFailed atomic.Uint64

	mu          sync.Mutex // guards the following
	failures    map[string]uint64
	pathChanges map[string]uint64 // by tunnel.PathReason
}

func (s *daemonStats) pathChange(reason string) {
	s.mu.Lock()
	if s.pathChanges == nil {
		s.pathChanges = map[string]uint64{}
	}
	s.pathChanges[reason]++
	s.mu.Unlock()
}

func (s *daemonStats) pathChangeSnapshot() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.pathChanges)
}

func (s *daemonStats) handshake() { s.handshakes.Add(1) }

func (s *daemonStats) failure(reason string) {
	s.mu.Lock()
	s.failures[reason]++
	s.mu.Unlock()
}

func (s *daemonStats) failureSnapshot() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.failures))
	for k, v := range s.failures {
		out[k] = v
	}
	return out
}
