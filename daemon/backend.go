package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/tunnel"
)

// This file is the read side of control.Backend: status, peers and the path
// explanation, built from the published view and the links' snapshots.

var _ control.Backend = (*Daemon)(nil)

func (d *Daemon) isStarted() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.started && !d.closed
}

// Status implements control.Backend.
func (d *Daemon) Status(ctx context.Context) (*control.Status, error) {
	if !d.isStarted() {
		return nil, control.ErrUnavailable
	}
	d.mu.Lock()
	up := time.Since(d.startedAt)
	d.mu.Unlock()
	st := &control.Status{
		Name:        d.name,
		Address:     d.self.Addrs[0].Addr(),
		Version:     d.version,
		Uptime:      up,
		Cert:        control.CertInfo{NotAfter: d.cred().Cert.Cert.NotAfter, Fingerprint: d.cred().Cert.Fingerprint},
		Coordinator: d.coordinatorInfo(),
		NAT:         control.NATUnknown,
		Drops:       nonZero(d.drops()),
	}
	if len(d.self.Addrs) > 1 {
		st.Address6 = d.self.Addrs[1].Addr()
	}
	seen := map[netip.AddrPort]bool{}
	add := func(ap netip.AddrPort) {
		if ap.IsValid() && !seen[ap] {
			seen[ap] = true
			st.PublicEndpoints = append(st.PublicEndpoints, ap)
		}
	}
	if ns := d.lastNet.Load(); ns != nil {
		st.NAT = ns.nc.NAT
		// Behind a NAT that maps per destination no mapping is an endpoint
		// peers could use: each STUN server saw its own.
		if !ns.nc.MappingVariesByDest {
			for _, ap := range reflexives(ns.nc) {
				add(d.iceEndpoint(ns.nc.NAT, ap))
			}
		}
	}
	for _, lc := range d.view.Load().links {
		for _, p := range lc.link.Status().Pairs {
			if p.Local.Type == "srflx" {
				add(p.Local.Addr)
			}
		}
	}
	st.DNS = d.dnsSummary()
	return st, nil
}

// iceEndpoint turns the reflexive address a netcheck's own socket got into
// the public endpoint of the ICE socket. Without a NAT the reflexive address
// is this host's and the ICE socket listens on it, so the endpoint is that
// address with the ICE port (the probe's port is gone once it closes).
// Behind a NAT the ICE socket's mapped port cannot be known from another
// socket; the address is reported as the STUN server saw it, and the links'
// server-reflexive candidates add the ICE socket's real mappings.
func (d *Daemon) iceEndpoint(nat control.NATBehavior, reflexive netip.AddrPort) netip.AddrPort {
	if nat != control.NATNone {
		return reflexive
	}
	la, ok := d.tm.LocalAddr().(interface{ AddrPort() netip.AddrPort })
	if !ok {
		return reflexive
	}
	ice := la.AddrPort()
	ip := ice.Addr().Unmap()
	switch {
	case ip.IsUnspecified():
		return netip.AddrPortFrom(reflexive.Addr(), ice.Port())
	case ip == reflexive.Addr():
		return netip.AddrPortFrom(ip, ice.Port())
	}
	// The ICE socket is bound to another of the host's addresses than the
	// one the probe left from: nothing says that one is public.
	return netip.AddrPort{}
}

func (d *Daemon) coordinatorInfo() control.CoordinatorInfo {
	c := d.client.Load()
	if c == nil {
		return control.CoordinatorInfo{State: control.SessionDisconnected}
	}
	s := c.Status()
	ci := control.CoordinatorInfo{Name: s.Coordinator, Address: s.Address, Conflict: s.Conflict.String()}
	if s.LastError != nil {
		ci.LastError = s.LastError.Error()
	}
	if s.Connected {
		ci.State, ci.Since = control.SessionConnected, s.Since
	} else {
		// The client keeps redialing (with backoff) until it is closed.
		ci.State, ci.Since = control.SessionConnecting, s.LastErrorAt
	}
	return ci
}

// drops counts dropped packets by reason: the overlay's data path, the
// shared ICE socket and the link probes.
func (d *Daemon) drops() map[string]uint64 {
	o := d.ov.Stats().Drops
	t := d.tm.Stats()
	return map[string]uint64{
		"no_route":        o.NoRoute,
		"not_local":       o.NotLocal,
		"spoofed":         o.Spoofed,
		"firewall_in":     o.FirewallIn,
		"firewall_out":    o.FirewallOut,
		"malformed":       o.Malformed,
		"link_down":       o.LinkDown,
		"too_big":         o.TooBig,
		"udp_garbage":     t.DroppedGarbage,
		"udp_malformed":   t.DroppedMalformed,
		"unknown_source":  t.DroppedUnknownSource,
		"replayed":        t.ReplayedRecords,
		"tampered":        t.DroppedTampered,
		"old_epoch":       t.DroppedOldEpoch,
		"unknown_epoch":   t.DroppedUnknownEpoch,
		"truncated":       t.DroppedTruncated,
		"control":         t.DroppedControl,
		"socket_overflow": t.SocketOverflows,
		"relay_foreign":   t.DroppedRelayForeign,
		"probe_refused":   d.probes.dropped.Load(),
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	for k, v := range m {
		if v == 0 {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// Peers implements control.Backend: every registry peer, with or without a
// link.
func (d *Daemon) Peers(ctx context.Context) ([]control.Peer, error) {
	if !d.isStarted() {
		return nil, control.ErrUnavailable
	}
	v := d.view.Load()
	out := make([]control.Peer, 0, len(v.peers))
	for i := range v.peers {
		p := &v.peers[i]
		doc := peerDoc(p, v.links[p.Name])
		doc.RelayNode = d.relayNodeOf(doc.Relay)
		out = append(out, doc)
	}
	return out, nil
}

func peerDoc(p *peerPlan, lc *linkConn) control.Peer {
	out := control.Peer{
		Name:     p.Name,
		Address:  p.Addr,
		Address6: p.Addr6,
		Groups:   slices.Clone(p.Groups),
		Subnets:  slices.Clone(p.Subnets),
	}
	switch {
	case p.Excluded != "":
		out.State, out.LastError = control.LinkClosed, p.Excluded
	case lc == nil && p.Idle:
		out.State = control.LinkIdle
	case lc == nil:
		out.State, out.LastError = control.LinkOffline, "no coordinator holds its session"
	default:
		s := lc.link.Status()
		out.State = linkState(s.State)
		out.Online = s.State == tunnel.StateConnected
		out.Since = s.Since
		out.RTT = s.RTT
		out.RxBytes, out.TxBytes = s.BytesReceived, s.BytesSent
		out.RxPackets, out.TxPackets = s.PacketsReceived, s.PacketsSent
		out.LastHandshake = s.LastHandshake
		out.PathChanges = s.PathChanges
		if s.LastError != nil {
			out.LastError = s.LastError.Error()
		}
		if out.Online {
			out.Path = wirePath(s.Path)
			out.LocalCandidate = control.CandidateType(s.Local.Type)
			out.RemoteCandidate = control.CandidateType(s.Remote.Type)
			out.Endpoint = s.Remote.Addr
			out.Family = addrFamily(s.Remote.Addr.Addr())
			if s.Path == tunnel.PathRelay {
				out.Relay = s.RelayServer
			}
		}
	}
	return out
}

// addrFamily names an underlay address's family for control.Peer.Family.
func addrFamily(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return ""
	case a.Unmap().Is4():
		return "ipv4"
	}
	return "ipv6"
}

// PeerWhy implements control.Backend.
func (d *Daemon) PeerWhy(ctx context.Context, name string) (*control.PeerWhy, error) {
	if !d.isStarted() {
		return nil, control.ErrUnavailable
	}
	v := d.view.Load()
	p := v.byName[d.peerArg(name)]
	if p == nil {
		return nil, fmt.Errorf("%w: %q is not in the registry", control.ErrPeerNotFound, name)
	}
	why := &control.PeerWhy{
		Peer:      p.Name,
		Address:   p.Addr,
		State:     control.LinkClosed,
		Pairs:     []control.CandidatePair{},
		LocalNAT:  control.NATUnknown,
		RemoteNAT: control.NATUnknown,
	}
	if ns := d.lastNet.Load(); ns != nil {
		why.LocalNAT = ns.nc.NAT
	}
	lc := v.links[name]
	switch {
	case p.Excluded != "":
		why.Explanation = "no link: " + p.Excluded + "; the node neither routes to nor accepts packets from this peer"
		return why, nil
	case lc == nil && p.Idle:
		why.State = control.LinkIdle
		why.Explanation = "no link yet: ice.lazy is on and nothing has been sent to this peer"
		return why, nil
	case lc == nil:
		why.Explanation = "no link: the peer has no coordinator session (it is offline), so it cannot be signaled; the link starts when it comes back"
		return why, nil
	}
	s := lc.link.Status()
	why.State = linkState(s.State)
	if s.State == tunnel.StateConnected {
		why.Path = wirePath(s.Path)
	}
	for _, ps := range s.Pairs {
		why.Pairs = append(why.Pairs, control.CandidatePair{
			Local:     control.Candidate{Type: control.CandidateType(ps.Local.Type), Address: ps.Local.Addr.String()},
			Remote:    control.Candidate{Type: control.CandidateType(ps.Remote.Type), Address: ps.Remote.Addr.String()},
			State:     ps.State,
			Nominated: ps.Nominated || ps.Selected,
			RTT:       ps.RTT,
		})
	}
	why.Explanation = d.explain(s, why.LocalNAT)
	return why, nil
}

// explain says in plain words why a link has the path it has.
func (d *Daemon) explain(s tunnel.Status, nat control.NATBehavior) string {
	lastErr := ""
	if s.LastError != nil {
		lastErr = s.LastError.Error()
	}
	switch s.State {
	case tunnel.StateConnected:
		if s.Path == tunnel.PathDirect {
			return fmt.Sprintf("direct path: the pair %s ↔ %s answered ICE checks", s.Local, s.Remote)
		}
		if d.startCfg.ICE.RelayOnly {
			return "relayed through " + d.relayLabel(s.RelayServer) + " because ice.relay_only is set: only relay candidates are gathered" + d.relayWhy(s)
		}
		direct, failed := 0, 0
		for _, p := range s.Pairs {
			if p.Local.Type != "relay" && p.Remote.Type != "relay" {
				direct++
				if p.State == "failed" {
					failed++
				}
			}
		}
		why := fmt.Sprintf("relayed through %s: none of the %d direct candidate pairs answered (%d failed)", d.relayLabel(s.RelayServer), direct, failed)
		if nat.Hard() {
			why += fmt.Sprintf("; this node is behind a %s NAT, which usually defeats hole punching", nat)
		}
		return why + d.relayWhy(s) + "; the link keeps checking and moves to a direct pair when one answers"
	case tunnel.StateDisconnected:
		return "the selected pair went quiet; the link is checking the other pairs"
	case tunnel.StateFailed:
		return "the last attempt failed (" + lastErr + "); the link retries with backoff"
	case tunnel.StateClosed:
		return "the link is closed"
	}
	msg := fmt.Sprintf("connecting (%s, attempt %d)", s.State, s.Attempts)
	if lastErr != "" {
		msg += "; the previous attempt failed: " + lastErr
	}
	return msg
}

// Summary is a one-line status for systemd's STATUS= ("coordinator c1
// connected; 2/3 peers up (1 direct, 1 relay)").
func (d *Daemon) Summary() string {
	ci := d.coordinatorInfo()
	var b strings.Builder
	switch ci.State {
	case control.SessionConnected:
		fmt.Fprintf(&b, "coordinator %s connected", ci.Name)
	default:
		fmt.Fprintf(&b, "coordinator %s", ci.State)
		if ci.Address != "" {
			fmt.Fprintf(&b, " (%s)", ci.Address)
		}
	}
	if ci.Conflict != "" {
		b.WriteString("; REFUSED: " + ci.Conflict)
	}
	v := d.view.Load()
	var peers []control.Peer
	for i := range v.peers {
		peers = append(peers, peerDoc(&v.peers[i], v.links[v.peers[i].Name]))
	}
	n := control.CountPeers(peers)
	fmt.Fprintf(&b, "; %d/%d peers up (%d direct, %d relay)", n.Online, n.Total, n.Direct, n.Relay)
	ci2 := control.CertStatus(control.CertInfo{NotAfter: d.cred().Cert.Cert.NotAfter}, d.now())
	if ci2.Warning != "" {
		b.WriteString("; " + ci2.Warning)
	}
	return b.String()
}
