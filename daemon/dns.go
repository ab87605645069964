package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/dns"
)

// The mesh's names: a resolver on the overlay addresses, port 53, serving
// <node>.<mesh domain> from the published view (the registry's verified
// records less the excluded ones: revoked, expired, conflicting), and its
// registration with systemd-resolved. publishView swaps a new table in after
// every recomputation, so names follow the registry within the coalescing
// delay.

// dnsPort is where the resolver listens: stub resolvers (resolved,
// resolv.conf) cannot be told another port.
const dnsPort = 53

// names is the DNS part of the daemon. Its fields are immutable after New;
// server and resolved are safe for concurrent use.
type names struct {
	domain   string
	tunName  string
	server   *dns.Server   // nil when not serving
	resolved *dns.Resolved // nil unless dns.resolved and serving
	wantRes  bool          // dns.resolved
	forward  []netip.AddrPort
	listen   []netip.AddrPort // the resolver's addresses
	// err says why the resolver is not serving ("" while it is); written
	// by Start only, before the control socket opens.
	err string
}

// newNames builds the resolver (not started) for cfg.
func (d *Daemon) newNames(cfg *config.Config, domain string) *names {
	n := &names{domain: domain, wantRes: cfg.DNS.Resolved, forward: cfg.DNS.Forward}
	switch {
	case !cfg.DNS.Enabled:
		n.err = "dns.enabled = false"
		return n
	case cfg.Tun.Mode == config.TunUserspace:
		n.err = "the userspace TUN (tun.mode) has no host address for the resolver to listen on"
		return n
	}
	var listen []netip.AddrPort
	for _, a := range d.self.Addrs {
		listen = append(listen, netip.AddrPortFrom(a.Addr(), dnsPort))
	}
	srv, err := dns.New(dns.Options{
		Logger:   d.log.With("component", "dns"),
		Listen:   listen,
		Forward:  cfg.DNS.Forward,
		FreeBind: true,
	}, d.nameTable(domain, nil))
	if err != nil {
		n.err = err.Error()
		return n
	}
	n.server, n.listen = srv, listen
	return n
}

// nameTable builds the table of this node and the usable peers.
func (d *Daemon) nameTable(domain string, peers []peerPlan) *dns.Table {
	hosts := make([]dns.Host, 0, len(peers)+1)
	self := dns.Host{Name: d.self.Name}
	for _, a := range d.self.Addrs {
		self.Addrs = append(self.Addrs, a.Addr())
	}
	hosts = append(hosts, self)
	for _, p := range peers {
		if p.Excluded != "" {
			continue
		}
		h := dns.Host{Name: p.Name, Addrs: []netip.Addr{p.Addr}}
		if p.Addr6.IsValid() {
			h.Addrs = append(h.Addrs, p.Addr6)
		}
		hosts = append(hosts, h)
	}
	return dns.NewTable(domain, d.self.meshPrefixes(), hosts)
}

// updateNames swaps in the names of a newly published view.
func (d *Daemon) updateNames(peers []peerPlan) {
	if d.names != nil && d.names.server != nil {
		d.names.server.SetTable(d.nameTable(d.names.domain, peers))
	}
}

// startNames starts the resolver once the overlay addresses are assigned,
// then the resolved registration. A failure is logged and shown by meshctl
// dns status; it does not stop the node.
func (d *Daemon) startNames(ctx context.Context) {
	n := d.names
	if n == nil || n.server == nil {
		return
	}
	log := d.log.With("component", "dns")
	err := n.server.Start(ctx)
	if err != nil && len(d.self.Addrs) > 1 {
		// A host with IPv6 disabled has no IPv6 overlay address (overlay
		// comes up IPv4-only): serve on the IPv4 one.
		log.Warn("the resolver serves on the IPv4 overlay address only", "error", err)
		var srv *dns.Server
		srv, err = dns.New(dns.Options{
			Logger:   log,
			Listen:   []netip.AddrPort{netip.AddrPortFrom(d.self.Addrs[0].Addr(), dnsPort)},
			Forward:  n.forward,
			FreeBind: true,
		}, n.server.Table())
		if err == nil {
			n.server, n.listen = srv, srv.Listen()
			err = srv.Start(ctx)
		}
	}
	if err != nil {
		n.err = err.Error()
		n.server = nil
		log.Warn("the mesh's names are not served", "error", err)
		return
	}
	n.tunName = d.ov.Name()
	if !n.wantRes {
		return
	}
	ifc, err := net.InterfaceByName(n.tunName)
	if err != nil {
		log.Warn("cannot register the resolver with systemd-resolved", "error", err)
		return
	}
	var servers []netip.Addr
	for _, a := range n.listen {
		servers = append(servers, a.Addr())
	}
	r, err := dns.NewResolved(dns.ResolvedOptions{Logger: log, Link: ifc.Index, Servers: servers, Domain: n.domain})
	if err != nil {
		log.Warn("cannot register the resolver with systemd-resolved", "error", err)
		return
	}
	n.resolved = r
	r.Start(ctx)
}

// closeNames reverts resolved's settings and stops the resolver.
func (d *Daemon) closeNames() {
	if d.names == nil {
		return
	}
	if d.names.resolved != nil {
		_ = d.names.resolved.Close()
	}
	if d.names.server != nil {
		_ = d.names.server.Close()
	}
}

// peerArg turns a peer argument of the control API into a node name: a
// node's FQDN ("nas.mesh.internal", any case, with or without the
// trailing dot) becomes "nas"; anything else is returned as it is.
func (d *Daemon) peerArg(arg string) string {
	if d.names == nil {
		return arg
	}
	s := strings.ToLower(strings.TrimSuffix(arg, "."))
	if node, ok := strings.CutSuffix(s, "."+d.names.domain); ok && node != "" {
		return node
	}
	return arg
}

// DNS implements control.DNSBackend.
func (d *Daemon) DNS(context.Context) (*control.DNSStatus, error) {
	n := d.names
	if n == nil {
		return nil, fmt.Errorf("%w: no resolver", control.ErrUnavailable)
	}
	st := &control.DNSStatus{Domain: n.domain, Forward: n.forward, Error: n.err,
		Resolved: control.ResolvedInfo{Enabled: n.wantRes, Link: n.tunName}}
	srv := n.server
	if srv == nil {
		st.Resolved.Error = "the resolver is not serving"
		return st, nil
	}
	st.Enabled = true
	st.Listen = n.listen
	t := srv.Table()
	for _, h := range t.Hosts() {
		st.Names = append(st.Names, control.DNSName{Node: h.Name, FQDN: t.FQDN(h.Name), Addrs: h.Addrs})
	}
	stats := srv.Stats()
	st.Queries, st.NXDomain, st.Refused, st.Forwarded = stats.Queries, stats.NXDomain, stats.Refused, stats.Forwarded
	switch {
	case n.resolved != nil:
		rs := n.resolved.State()
		st.Resolved.Configured, st.Resolved.Error = rs.Configured, rs.Error
	case !n.wantRes:
		st.Resolved.Error = "dns.resolved = false"
	default:
		st.Resolved.Error = "not registered (see the log)"
	}
	if !st.Resolved.Configured {
		first := d.self.Addrs[0].Addr()
		st.Hint = fmt.Sprintf("point the host's resolver at %v for %s only: with systemd-resolved, "+
			"resolvectl dns %s %v && resolvectl domain %s '~%s'; with dnsmasq, server=/%s/%v; "+
			"or add the lines of meshctl dns hosts to /etc/hosts",
			first, n.domain, n.tunName, first, n.tunName, n.domain, n.domain, first)
	}
	return st, nil
}

// dnsSummary is the resolver's line of the node summary.
func (d *Daemon) dnsSummary() *control.DNSSummary {
	st, err := d.DNS(context.Background())
	if err != nil {
		return nil
	}
	sum := &control.DNSSummary{Domain: st.Domain, Listen: st.Listen, ResolvedConfigured: st.Resolved.Configured, Hint: st.Hint}
	if !st.Enabled {
		sum.Hint = "not serving: " + st.Error
	}
	return sum
}

// DNSQuery implements control.DNSBackend: the resolver's own answer,
// without forwarding.
func (d *Daemon) DNSQuery(_ context.Context, name, qtype string) (*control.DNSAnswer, error) {
	t, ok := mdns.StringToType[qtype]
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a DNS record type", control.ErrInvalidRequest, qtype)
	}
	if _, ok := mdns.IsDomainName(name); !ok {
		return nil, fmt.Errorf("%w: %q is not a DNS name", control.ErrInvalidRequest, name)
	}
	if d.names == nil || d.names.server == nil {
		return nil, fmt.Errorf("%w: the resolver is not serving", control.ErrUnavailable)
	}
	srv := d.names.server
	if srv == nil {
		return nil, fmt.Errorf("%w: the resolver is not serving: %s", control.ErrUnavailable, d.names.err)
	}
	fqdn := mdns.Fqdn(name)
	if t == mdns.TypePTR {
		if a, err := netip.ParseAddr(name); err == nil {
			fqdn, _ = mdns.ReverseAddr(a.String())
		}
	} else if !strings.Contains(strings.TrimSuffix(fqdn, "."), ".") {
		fqdn = name + "." + d.names.domain + "." // a bare node name
	}
	req := new(mdns.Msg)
	req.SetQuestion(fqdn, t)
	m := srv.Answer(req)
	out := &control.DNSAnswer{Name: fqdn, Type: qtype, Rcode: mdns.RcodeToString[m.Rcode]}
	for _, rr := range m.Answer {
		h := rr.Header()
		val := strings.TrimPrefix(rr.String(), h.String())
		out.Answers = append(out.Answers, control.DNSRecord{Name: h.Name, Type: mdns.TypeToString[h.Rrtype], TTL: h.Ttl, Value: val})
	}
	return out, nil
}

var _ control.DNSBackend = (*Daemon)(nil)
