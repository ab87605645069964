package tunnel

/* Relayed links that fail over
 *
 * A relayed link lives on a TURN allocation. When the relay dies (its
 * coordinator crashed) or the allocation is orphaned (the NAT in front of
 * this node forgot the mapping the allocation is bound to, so the server
 * drops what now arrives from a new port), every pair through it goes
 * silent at once, and ICE's own timers give up only after
 * DisconnectedTimeout + FailedTimeout (10 s), then back off. Two things cut
 * that short:
 *
 *   - relayLost (run goroutine, every path tick): the selected pair is
 *     relayed, nothing was heard on it for PathTimeout, and no other pair
 *     answered within PathTimeout either (else the path policy moves the
 *     link there: a warm pair through another relay, or a direct one; on
 *     the controlled side, a pair the peer is checking counts, since only
 *     the controlling side moves the link). The
 *     allocation is as good as gone, so the link restarts ICE at once
 *     (restartSoon: no sooner than RetryMin after the previous attempt),
 *     gathering a fresh allocation from the servers the daemon gives now.
 *
 *   - Manager.RelaysChanged (the daemon, when its coordinator session hands
 *     out other TURN credentials: a failover to another coordinator, or the
 *     coordinator back): a link whose own relay is not among the servers
 *     any more restarts at once, and a link waiting out its back-off after
 *     failures starts its next attempt now instead of up to RetryMax later.
 */

import (
	"net/netip"
	"time"
)

// msgRelaysChanged tells a link's run goroutine that the TURN servers
// changed (Manager.RelaysChanged).
type msgRelaysChanged struct{}

// RelaysChanged tells every link that the STUN/TURN servers Options.Servers
// returns have changed: links relayed through a server no longer listed
// restart now, and failed links waiting out their back-off retry now (the
// relay they lacked may be back). It never blocks; the daemon calls it when
// its coordinator session hands out new TURN credentials.
func (m *Manager) RelaysChanged() {
	for _, l := range m.Links() {
		select {
		case l.inbox <- msgRelaysChanged{}:
		default: // busy: the link's own relayLost check still applies
		}
	}
}

// onRelaysChanged handles msgRelaysChanged on the run goroutine.
func (l *Link) onRelaysChanged() {
	o := &l.o
	switch o.state {
	case StateFailed:
		// Waiting out the back-off: try again now (RetryMin after the
		// previous start at the soonest, as restartSoon does).
		o.timer.Reset(max(time.Until(o.lastStart.Add(l.m.timers.RetryMin)), 0))
	case StateConnected, StateDisconnected:
		if o.path != PathRelay || o.local.Type != "relay" || l.m.opts.Servers == nil {
			return
		}
		if !turnHostListed(o.local.Addr.Addr(), l.m.opts.Servers()) {
			l.log.Info("the relay carrying the link is no longer offered; restarting ICE", "relay", o.local.Addr)
			l.relayFailover()
		}
	}
}

// relayLost reports whether the link's relayed path is dead with nothing
// to move to: the selected pair is relayed, silent for PathTimeout since
// heard (and since the link became active), and no other pair answered
// within PathTimeout. On the controlled side a pair the peer checked within
// PathTimeout counts as answering too: pion's controlled agent checks only
// the selected pair once there is one, so the warm pairs (through another
// relay) never show an answer of its own there, while the controlling side,
// whose checks still arrive, is about to move the link to one of them.
func relayLost(now, heard, since time.Time, sel Path, controlling bool, v pairsView, t Timers) bool {
	if sel != PathRelay {
		return false
	}
	if heard.Before(since) {
		heard = since
	}
	if now.Sub(heard) < t.PathTimeout {
		return false
	}
	for _, p := range v.pairs {
		if p.selected {
			continue
		}
		if !p.lastResponse.IsZero() && now.Sub(p.lastResponse) < t.PathTimeout {
			return false
		}
		if !controlling && !p.lastRequest.IsZero() && now.Sub(p.lastRequest) < t.PathTimeout {
			return false
		}
	}
	return true
}

// relayFailover restarts ICE on a link whose relay is gone: now, or
// RetryMin after the previous attempt started if that was more recent.
func (l *Link) relayFailover() { l.restartFor(ErrRelayLost) }

// turnHostListed reports whether addr is the host of one of the turn:/turns:
// servers (a relay candidate's address is its server's relay address,
// which for the servers meshd meets is the server's own).
func turnHostListed(addr netip.Addr, servers []ICEServer) bool {
	for _, s := range servers {
		u, err := parseICEURL(s)
		if err != nil || (u.Scheme.String() != "turn" && u.Scheme.String() != "turns") {
			continue
		}
		ip, err := netip.ParseAddr(u.Host)
		if err != nil || ip.Unmap() == addr.Unmap() {
			return true // a name: cannot tell, so keep the link
		}
	}
	return false
}
