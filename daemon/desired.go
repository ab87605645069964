package daemon

import (
	"cmp"
	"math/big"
	"net/netip"
	"slices"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel"
)

// This file is the control plane's one computation: registry + configuration
// → the complete desired state (guideline 14). It is a pure function so that
// it can be tested as a table; reconcile (run.go) applies its result with one
// overlay.Reconfig and one pass over the tunnel's links.

// selfInfo is this node as the desired state needs it.
type selfInfo struct {
	Name string
	// Addrs are the overlay addresses with the mesh prefix length, as in the
	// certificate (IPv4 first).
	Addrs []netip.Prefix
}

// meshPrefixes are the masked mesh prefixes (100.64.0.0/10, ...): the
// overlay's own address space, which no peer subnet may claim.
func (s selfInfo) meshPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(s.Addrs))
	for _, a := range s.Addrs {
		out = append(out, a.Masked())
	}
	return out
}

// desiredInput is everything the desired state depends on.
type desiredInput struct {
	Self     selfInfo
	Firewall overlay.FirewallConfig
	// Accept is routes.accept: peer subnets are installed only inside these.
	Accept []netip.Prefix
	// Advertise and Forward are routes.advertise and routes.forward.
	Advertise []netip.Prefix
	Forward   bool
	// Records is the registry (other nodes), as discovery verified it.
	Records []discovery.Record
	// Revoked reports whether a certificate serial is on the CRL; nil means
	// none is.
	Revoked func(serial *big.Int) bool
	Now     time.Time
	// Connected lists peers whose link is up now: such a link is kept even
	// when the registry says the peer's coordinator session is gone (the
	// coordinator may be what failed; the link fails on its own if the peer
	// really left).
	Connected map[string]bool
	// Lazy is ice.lazy: links are made only for peers in Wanted (a packet
	// asked for them) or that already have one (HaveLink).
	Lazy     bool
	Wanted   map[string]bool
	HaveLink map[string]bool
	// Handshake holds, per peer, the certificate its link's last handshake
	// authenticated (tunnel.Link.PeerCert); peers without one are absent.
	// Where present it, not the registry's copy, is the peer's identity for
	// the firewall and anti-spoofing: groups, addresses and the subnets
	// routed to it (a registry copy may be newer or older, e.g. a renewal
	// with other groups, and is only gossip).
	Handshake map[string]*pki.NodeCert
}

// Exclusion reasons: why a registry peer gets neither routes nor a link.
const (
	excludeRevoked      = "certificate revoked"
	excludeExpired      = "certificate expired"
	excludeNotYetValid  = "certificate not yet valid"
	excludeNoAddress    = "certificate has no overlay address"
	excludeSelfAddress  = "overlay address conflicts with this node"
	excludeAddrConflict = "overlay address conflicts with another peer"
)

// Reasons an advertised subnet is not routed to its peer.
const (
	routeNotAllowed = "not allowed by the peer's certificate"
	routeNotAccept  = "outside routes.accept"
	routeDefault    = "default routes are not supported"
	routeMesh       = "overlaps the mesh's own prefix"
	routeLocal      = "overlaps a subnet this node advertises"
	routeClaimed    = "already routed to another peer"
	routeNotShown   = "not allowed by the certificate the peer's link authenticated"
)

// peerPlan is one registry peer in the desired state.
type peerPlan struct {
	Name     string
	Addr     netip.Addr // overlay IPv4
	Addr6    netip.Addr // overlay IPv6, if any
	Groups   []string
	Subnets  []netip.Prefix // accepted advertised subnets routed to it
	Online   bool           // the registry says a coordinator holds its session
	Excluded string         // non-empty: no routes and no link, and why
	Link     bool           // a link should exist
	Idle     bool           // lazy and nobody asked for it yet
}

// droppedRoute is an advertised subnet that is not installed.
type droppedRoute struct {
	Peer   string
	Prefix netip.Prefix
	Reason string
}

// desired is the complete desired state.
type desired struct {
	// Overlay is the overlay configuration with every Conn nil; reconcile
	// fills in the links.
	Overlay overlay.Config
	// Links are the peers that should have a link, sorted by name.
	Links []tunnel.Peer
	// Peers describes every registry peer (included or not), sorted by name.
	Peers []peerPlan
	// Dropped lists advertised subnets not installed, for the log.
	Dropped []droppedRoute
}

// addressClaims decides who owns each overlay address that more than one
// usable peer claims. The earliest-issued certificate keeps it (then the
// smaller fingerprint), whatever the peers' names or whether they are online:
// a second certificate for an address already in use, signed by mistake or
// stolen, must not take a live node's traffic, and a rival that merely sorts
// first by name must not either. Every node decides the same way.
func addressClaims(in desiredInput) map[netip.Addr]string {
	var cands []*discovery.Record
	for i := range in.Records {
		r := &in.Records[i]
		if r.Name == "" || r.Name == in.Self.Name || r.Left || r.Cert == nil {
			continue
		}
		c := r.Cert.Cert
		if (in.Revoked != nil && in.Revoked(c.SerialNumber)) || in.Now.After(c.NotAfter) || in.Now.Before(c.NotBefore) {
			continue
		}
		cands = append(cands, r)
	}
	slices.SortFunc(cands, func(a, b *discovery.Record) int {
		if c := a.Cert.Cert.NotBefore.Compare(b.Cert.Cert.NotBefore); c != 0 {
			return c
		}
		return cmp.Compare(a.Cert.Fingerprint, b.Cert.Fingerprint)
	})
	owner := map[netip.Addr]string{}
	for _, r := range cands {
		id := r.Cert.Identity
		for _, p := range []netip.Prefix{id.Addr, id.Addr6} {
			if p.IsValid() {
				if _, taken := owner[p.Addr()]; !taken {
					owner[p.Addr()] = r.Name
				}
			}
		}
	}
	return owner
}

// computeDesired turns the registry and the configuration into the desired
// state. It is deterministic: the same input gives the same output, whatever
// order the records come in.
func computeDesired(in desiredInput) desired {
	recs := slices.Clone(in.Records)
	// Online peers claim contested subnets first; then by name.
	slices.SortFunc(recs, func(a, b discovery.Record) int {
		if a.Presence.Online != b.Presence.Online {
			if a.Presence.Online {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	mesh := in.Self.meshPrefixes()
	local := masked(in.Advertise)
	out := desired{Overlay: overlay.Config{
		Addresses:    slices.Clone(in.Self.Addrs),
		LocalSubnets: local,
		Forwarding:   in.Forward,
		Firewall:     in.Firewall,
	}}
	ours := map[netip.Addr]bool{}
	for _, a := range in.Self.Addrs {
		ours[a.Addr()] = true
	}
	addrOwner := addressClaims(in)
	routeOwner := map[netip.Prefix]string{}
	for i := range recs {
		r := &recs[i]
		if r.Name == "" || r.Name == in.Self.Name || r.Left || r.Cert == nil {
			continue
		}
		id := r.Cert.Identity
		// shown is the identity the peer's link authenticated, if any: the
		// firewall's groups and the addresses and subnets anti-spoofing and
		// routing trust come from it (the handshake already checked its
		// name and IPv4 address against the registry's).
		groups, shown := id.Groups, (*pki.Identity)(nil)
		if hc := in.Handshake[r.Name]; hc != nil && hc.Identity.Name == r.Name {
			shown = &hc.Identity
			groups = shown.Groups
		}
		plan := peerPlan{Name: r.Name, Addr: id.Addr.Addr(), Groups: slices.Clone(groups), Online: r.Presence.Online}
		if id.Addr6.IsValid() {
			plan.Addr6 = id.Addr6.Addr()
		}
		switch {
		case in.Revoked != nil && in.Revoked(r.Cert.Cert.SerialNumber):
			plan.Excluded = excludeRevoked
		case in.Now.After(r.Cert.Cert.NotAfter):
			plan.Excluded = excludeExpired
		case in.Now.Before(r.Cert.Cert.NotBefore):
			plan.Excluded = excludeNotYetValid
		case !plan.Addr.IsValid():
			plan.Excluded = excludeNoAddress
		case ours[plan.Addr] || (plan.Addr6.IsValid() && ours[plan.Addr6]):
			plan.Excluded = excludeSelfAddress
		case addrOwner[plan.Addr] != r.Name || (plan.Addr6.IsValid() && addrOwner[plan.Addr6] != r.Name):
			plan.Excluded = excludeAddrConflict
		}
		if plan.Excluded != "" {
			out.Peers = append(out.Peers, plan)
			continue
		}
		// An address is the peer's if the authenticated certificate (when
		// there is one) carries it too.
		var addrs []netip.Prefix
		if shown == nil || shown.Addr.Addr() == plan.Addr {
			addrs = append(addrs, netip.PrefixFrom(plan.Addr, plan.Addr.BitLen()))
		}
		if plan.Addr6.IsValid() && (shown == nil || shown.Addr6.Addr() == plan.Addr6) {
			addrs = append(addrs, netip.PrefixFrom(plan.Addr6, plan.Addr6.BitLen()))
		}
		routes := slices.Clone(addrs)
		for _, s := range masked(r.Routes) {
			reason := ""
			switch {
			case !prefixInside(s, id.Subnets):
				reason = routeNotAllowed
			case shown != nil && !prefixInside(s, shown.Subnets):
				reason = routeNotShown
			case s.Bits() == 0:
				reason = routeDefault
			case !prefixInside(s, in.Accept):
				reason = routeNotAccept
			case overlapsAny(s, mesh):
				reason = routeMesh
			case overlapsAny(s, local):
				reason = routeLocal
			case routeOwner[s] != "" && routeOwner[s] != r.Name:
				reason = routeClaimed
			}
			if reason != "" {
				out.Dropped = append(out.Dropped, droppedRoute{Peer: r.Name, Prefix: s, Reason: reason})
				continue
			}
			if !slices.Contains(routes, s) {
				routes = append(routes, s)
				plan.Subnets = append(plan.Subnets, s)
				routeOwner[s] = r.Name
			}
		}
		// Anti-spoofing accepts exactly what routing sends to the peer: its
		// addresses and the subnets this node accepted from it. Those sets
		// are disjoint across peers (routeOwner, addrOwner), so a source
		// address names one peer, as WireGuard's allowed IPs do. What the
		// certificate merely permits (a subnet overlapping the mesh,
		// another peer's address, 0.0.0.0/0) is no licence to send from it.
		out.Overlay.Peers = append(out.Overlay.Peers, overlay.PeerConfig{
			Name:            r.Name,
			Groups:          slices.Clone(groups),
			AllowedPrefixes: slices.Clone(routes),
			Routes:          routes,
		})
		plan.Link = plan.Online || in.Connected[r.Name]
		if in.Lazy && plan.Link && !in.Wanted[r.Name] && !in.HaveLink[r.Name] {
			plan.Link, plan.Idle = false, true
		}
		if plan.Link {
			// The handshake checks name and address only: the subnets
			// routed to the peer follow the certificate it authenticated
			// (routeNotShown), so a registry copy that differs from it
			// narrows routes but never refuses the link.
			out.Links = append(out.Links, tunnel.Peer{
				Name:        r.Name,
				Addr:        plan.Addr,
				Fingerprint: r.Cert.Fingerprint,
			})
		}
		out.Peers = append(out.Peers, plan)
	}
	byName := func(a, b string) int { return cmp.Compare(a, b) }
	slices.SortFunc(out.Overlay.Peers, func(a, b overlay.PeerConfig) int { return byName(a.Name, b.Name) })
	slices.SortFunc(out.Links, func(a, b tunnel.Peer) int { return byName(a.Name, b.Name) })
	slices.SortFunc(out.Peers, func(a, b peerPlan) int { return byName(a.Name, b.Name) })
	return out
}

// masked returns the prefixes masked (no host bits), dropping invalid ones.
func masked(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if p.IsValid() {
			out = append(out, p.Masked())
		}
	}
	return out
}

func overlapsAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if p.Overlaps(q) {
			return true
		}
	}
	return false
}
