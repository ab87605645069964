//go:build e2e

package lab

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SiteOptions configures a site.
type SiteOptions struct {
	// NAT is the kind of the site's router; it must be a NAT kind
	// (NATKind.IsNAT). Public hosts are made with AddHost instead.
	NAT NATKind
	// Carrier, unless NATNone, puts the site's router behind a carrier NAT
	// of this kind (double NAT): the router's WAN side is then 10.100.i.2 on
	// the carrier's inside network and only the carrier touches the
	// backbone.
	Carrier NATKind
	// IPv6 gives the site global IPv6 next to its IPv4 NAT, as most home
	// connections have: the router gets a backbone IPv6 address on wan0
	// and routes the site's 2001:db8:i::/64 (router ::1, hosts from ::2),
	// untranslated, through a stateful firewall (replies and related
	// traffic in, nothing unsolicited). Every host of the site gets an
	// address of that prefix. Not with Carrier.
	IPv6 bool
}

// Site is a home network: a NAT router namespace whose LAN bridge (lan0,
// 10.0.i.1/24) connects one or more LAN hosts, optionally behind a carrier
// NAT.
type Site struct {
	lab *Lab

	// immutable after AddSite
	name    string
	index   int
	lan     netip.Prefix
	lan6    netip.Prefix // invalid without IPv6
	router  *Router
	carrier *Router // nil unless double NAT

	// guarded by lab.mu
	lanIPs  *allocator
	lanIPs6 *allocator // nil without IPv6
	hosts   []*Host
}

// Router is a NAT router namespace: wan0 towards the backbone (or towards a
// carrier NAT), lan0 a bridge its LAN hangs off.
type Router struct {
	// Namespace runs programs on the router (nft, conntrack, tshark).
	*Namespace

	// immutable after creation
	site   *Site
	kind   NATKind
	lanIP  netip.Addr
	lanNet netip.Prefix
	wanGW  netip.Addr
	wanBit int
	// wanPool is the allocator of the network wan0 is on.
	wanPool *allocator
	farNS   *Namespace // bridge end of wan0's veth
	farDev  string
	// inner is, for a carrier NAT, the site router behind it.
	inner *Router
	// lanIP6 and wanIP6 are the IPv6 addresses of an IPv6 site's router
	// (zero otherwise); the WAN one is what the backbone routes the site's
	// /64 via.
	lanIP6, wanIP6 netip.Addr

	rulesMu sync.Mutex // serializes rendering and applying the rule set

	// guarded by lab.mu
	wanIP netip.Addr
}

// AddSite adds a site with its NAT router (and carrier NAT, for double
// NAT) but no hosts yet: add them with Site.AddHost. It must be called from
// the test goroutine and fails t on error.
func (l *Lab) AddSite(t testing.TB, name string, opts SiteOptions) *Site {
	t.Helper()
	s, err := l.addSite(name, opts)
	if err != nil {
		t.Fatalf("lab: add site %s: %v", name, err)
	}
	return s
}

func (l *Lab) addSite(name string, opts SiteOptions) (*Site, error) {
	if !opts.NAT.IsNAT() {
		return nil, fmt.Errorf("%w: site NAT %v is not a NAT kind (public hosts come from AddHost)", ErrBadOption, opts.NAT)
	}
	if opts.Carrier != NATNone && !opts.Carrier.IsNAT() {
		return nil, fmt.Errorf("%w: carrier NAT %v", ErrBadOption, opts.Carrier)
	}
	if opts.IPv6 && opts.Carrier != NATNone {
		return nil, fmt.Errorf("%w: an IPv6 site behind a carrier NAT", ErrBadOption)
	}
	l.mu.Lock()
	if err := l.checkNameLocked(name, true); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	index := len(l.sites) + 1
	if index > maxSites {
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: more than %d sites", ErrBadOption, maxSites)
	}
	lan := lanPrefix(index)
	s := &Site{lab: l, name: name, index: index, lan: lan, lanIPs: newAllocator(lan, lan.Addr().Next().Next())}
	_, _ = s.lanIPs.take(lan.Addr().Next()) // the router's; cannot fail on a new pool
	s.router = &Router{
		Namespace: &Namespace{lab: l, name: l.prefix + name + "-nat", short: name + "-nat"},
		site:      s, kind: opts.NAT, lanIP: lan.Addr().Next(), lanNet: lan,
	}
	var err error
	if opts.Carrier != NATNone {
		cnet := carrierPrefix(index)
		cpool := newAllocator(cnet, cnet.Addr().Next().Next())
		_, _ = cpool.take(cnet.Addr().Next()) // the carrier's own
		s.carrier = &Router{
			Namespace: &Namespace{lab: l, name: l.prefix + name + "-cgn", short: name + "-cgn"},
			site:      s, kind: opts.Carrier, lanIP: cnet.Addr().Next(), lanNet: cnet,
			wanGW: BackboneGateway, wanBit: BackbonePrefix.Bits(), wanPool: l.publicIPs,
			inner: s.router,
		}
		s.carrier.wanIP, err = l.publicIPs.take(netip.Addr{})
		s.router.wanGW, s.router.wanBit, s.router.wanPool = s.carrier.lanIP, cnet.Bits(), cpool
	} else {
		s.router.wanGW, s.router.wanBit, s.router.wanPool = BackboneGateway, BackbonePrefix.Bits(), l.publicIPs
	}
	if err == nil {
		s.router.wanIP, err = s.router.wanPool.take(netip.Addr{})
	}
	if err == nil && opts.IPv6 {
		s.lan6 = lanPrefix6(index)
		s.router.lanIP6 = s.lan6.Addr().Next()
		s.lanIPs6 = newAllocator(s.lan6, s.router.lanIP6.Next())
		_, _ = s.lanIPs6.take(s.router.lanIP6) // the router's; cannot fail on a new pool
		s.router.wanIP6, err = l.publicIPs6.take(netip.Addr{})
	}
	if err != nil {
		l.mu.Unlock()
		return nil, err
	}
	l.sites[name] = s
	l.mu.Unlock()

	if s.carrier != nil {
		if err := s.carrier.build(l.backbone, "br0"); err != nil {
			return nil, err
		}
		if err := s.router.build(s.carrier.Namespace, lanDev); err != nil {
			return nil, err
		}
	} else if err := s.router.build(l.backbone, "br0"); err != nil {
		return nil, err
	}
	if opts.IPv6 {
		if err := s.router.build6(); err != nil {
			return nil, err
		}
	}
	l.log.Info("site added", "site", name, "nat", opts.NAT, "carrier", opts.Carrier, "wan", s.router.WANIP(), "lan", lan, "wan6", s.router.wanIP6, "lan6", s.lan6)
	return s, nil
}

// build creates the router's namespace, plugs wan0 into bridge br of far,
// makes the LAN bridge and installs the NAT.
func (r *Router) build(far *Namespace, br string) error {
	l := r.lab
	if err := l.makeNamespace(r.Namespace, true); err != nil {
		return err
	}
	dev, err := l.attach(far, br, r.Namespace, wanDev)
	if err != nil {
		return err
	}
	r.farNS, r.farDev = far, dev
	err = r.ipBatch(
		"link set "+wanDev+" addrgenmode none",
		"link set "+wanDev+" up",
		"addr add "+netip.PrefixFrom(r.WANIP(), r.wanBit).String()+" dev "+wanDev,
		"route add default via "+r.wanGW.String(),
		"link add "+lanDev+" type bridge",
		"link set "+lanDev+" addrgenmode none",
		"addr add "+netip.PrefixFrom(r.lanIP, r.lanNet.Bits()).String()+" dev "+lanDev,
		"link set "+lanDev+" up",
	)
	if err != nil {
		return err
	}
	if argv := masqArgs(r.kind); argv != nil {
		if _, err := r.run(argv...); err != nil {
			return err
		}
	}
	return r.applyRules()
}

// build6 gives an IPv6 site's router its addresses, the IPv6 firewall, and
// the backbone's route to the site's /64.
func (r *Router) build6() error {
	l := r.lab
	lan6 := r.site.lan6
	err := r.ipBatch(
		"link set "+lanDev+" type bridge mcast_snooping 0",
		"addr add "+netip.PrefixFrom(r.wanIP6, BackbonePrefix6.Bits()).String()+" dev "+wanDev+" nodad",
		"route add default via "+BackboneGateway6.String(),
		"addr add "+netip.PrefixFrom(r.lanIP6, lan6.Bits()).String()+" dev "+lanDev+" nodad",
		"addr add "+linkLocal(r.wanIP6).String()+" dev "+wanDev+" nodad",
		"addr add "+linkLocal(r.lanIP6).String()+" dev "+lanDev+" nodad",
	)
	if err != nil {
		return err
	}
	if _, err := r.runStdin(router6Rules, "nft", "-f", "-"); err != nil {
		return err
	}
	if err := l.backbone.ipBatch("route add " + lan6.String() + " via " + r.wanIP6.String()); err != nil {
		return err
	}
	return r.waitIPv6Ready()
}

// staticEntries lists what the static map forwards: each LAN host's range to
// the host, or for a carrier, every LAN host's range to the site router.
func (r *Router) staticEntries() []staticEntry {
	l := r.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []staticEntry
	for _, h := range r.site.hosts {
		addr := h.ip
		if r.inner != nil {
			addr = r.inner.wanIP
		}
		out = append(out, staticEntry{addr: addr, first: h.port, last: h.port + h.ports - 1})
	}
	return out
}

// applyRules renders the router's nft table from the current addresses and
// replaces it atomically. Replacing it also empties the restricted kinds'
// "contacted" set, as a router reboot would.
func (r *Router) applyRules() error {
	r.rulesMu.Lock()
	defer r.rulesMu.Unlock()
	script := renderRouterRules(r.kind, r.WANIP(), r.staticEntries())
	_, err := r.runStdin(script, "nft", "-f", "-")
	return err
}

// applyRules re-renders the rules of the site's routers (after a host was
// added or readdressed).
func (s *Site) applyRules() error {
	if err := s.router.applyRules(); err != nil {
		return err
	}
	if s.carrier != nil {
		return s.carrier.applyRules()
	}
	return nil
}

// AddHost adds a LAN host to the site: 10.0.i.x/24 behind the router, with
// its own port range (HostOptions.Port). It must be called from the test
// goroutine and fails t on error.
func (s *Site) AddHost(t testing.TB, name string, opts HostOptions) *Host {
	t.Helper()
	h, err := s.addHost(name, opts)
	if err != nil {
		t.Fatalf("lab: add host %s to site %s: %v", name, s.name, err)
	}
	return h
}

func (s *Site) addHost(name string, opts HostOptions) (*Host, error) {
	l := s.lab
	if opts.Firewall || opts.ExtraAddrs != 0 || opts.NoIPv4 {
		return nil, fmt.Errorf("%w: Firewall, ExtraAddrs and NoIPv4 are for public hosts", ErrBadOption)
	}
	if opts.IPv6 && s.lanIPs6 == nil {
		return nil, fmt.Errorf("%w: IPv6 host on site %s, which has no IPv6 (SiteOptions.IPv6)", ErrBadOption, s.name)
	}
	l.mu.Lock()
	if err := l.checkNameLocked(name, false); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	if err := normalizePorts(&opts, defaultPort+defaultSiteStep*len(s.hosts)); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	for _, o := range s.hosts {
		if opts.Port <= o.port+o.ports-1 && o.port <= opts.Port+opts.Ports-1 {
			l.mu.Unlock()
			return nil, fmt.Errorf("%w: %d-%d and host %s's %d-%d", ErrPortOverlap,
				opts.Port, opts.Port+opts.Ports-1, o.short, o.port, o.port+o.ports-1)
		}
	}
	ip, err := s.lanIPs.take(opts.Addr)
	var ip6 netip.Addr
	if err == nil && s.lanIPs6 != nil {
		ip6, err = s.lanIPs6.take(netip.Addr{})
	}
	if err != nil {
		l.mu.Unlock()
		return nil, err
	}
	h := &Host{
		Namespace: &Namespace{lab: l, name: l.prefix + name, short: name},
		site:      s, port: opts.Port, ports: opts.Ports,
		gw: s.router.lanIP, bits: s.lan.Bits(), ip: ip,
		gw6: s.router.lanIP6, bits6: s.lan6.Bits(), ip6: ip6,
	}
	// Registered at once, so that the next host's auto port and overlap
	// check see this one's range.
	l.hosts[name] = h
	s.hosts = append(s.hosts, h)
	l.mu.Unlock()

	if err := l.makeNamespace(h.Namespace, false); err != nil {
		return nil, err
	}
	if err := h.plug(s.router.Namespace, lanDev); err != nil {
		return nil, err
	}
	if err := s.applyRules(); err != nil {
		return nil, err
	}
	l.log.Info("host added", "host", name, "site", s.name, "netns", h.name, "ip", ip, "ip6", ip6, "ports", fmt.Sprintf("%d-%d", opts.Port, opts.Port+opts.Ports-1))
	return h, nil
}

// Name returns the site's name.
func (s *Site) Name() string { return s.name }

// Kind returns the site router's NAT kind.
func (s *Site) Kind() NATKind { return s.router.kind }

// LAN returns the site's LAN prefix, 10.0.i.0/24.
func (s *Site) LAN() netip.Prefix { return s.lan }

// LAN6 returns the site's global IPv6 prefix, 2001:db8:i::/64, or the zero
// Prefix if the site has no IPv6.
func (s *Site) LAN6() netip.Prefix { return s.lan6 }

// Router returns the site's own NAT router.
func (s *Site) Router() *Router { return s.router }

// Carrier returns the carrier NAT in front of the site router, or nil.
func (s *Site) Carrier() *Router { return s.carrier }

// Hosts returns the site's LAN hosts in the order they were added.
func (s *Site) Hosts() []*Host {
	s.lab.mu.Lock()
	defer s.lab.mu.Unlock()
	return append([]*Host(nil), s.hosts...)
}

// PublicIP returns the site's address on the backbone: the carrier's WAN
// address for double NAT, the router's otherwise.
func (s *Site) PublicIP() netip.Addr {
	if s.carrier != nil {
		return s.carrier.WANIP()
	}
	return s.router.WANIP()
}

// Expect returns the UDP behaviour the site promises its hosts: the router's
// kind, composed with the carrier's for double NAT (mapping endpoint-
// independent only if both are, the stricter filtering). ok is false if UDP
// does not pass at all.
func (s *Site) Expect() (Mapping, Filtering, bool) {
	if s.carrier != nil {
		return expectChain(s.router.kind, s.carrier.kind)
	}
	return s.router.kind.Expect()
}

// FlushNAT forgets every NAT mapping of the site (conntrack -F on the
// router and on the carrier, if any), as a NAT reboot would.
func (s *Site) FlushNAT() error {
	if err := s.router.FlushNAT(); err != nil {
		return err
	}
	if s.carrier != nil {
		return s.carrier.FlushNAT()
	}
	return nil
}

// Kind returns the router's NAT kind.
func (r *Router) Kind() NATKind { return r.kind }

// WANIP returns the router's address on wan0.
func (r *Router) WANIP() netip.Addr {
	r.lab.mu.Lock()
	defer r.lab.mu.Unlock()
	return r.wanIP
}

// LANIP returns the router's address on lan0 (its hosts' gateway).
func (r *Router) LANIP() netip.Addr { return r.lanIP }

// WANIP6 returns the router's IPv6 address on wan0, or the zero Addr if its
// site has no IPv6.
func (r *Router) WANIP6() netip.Addr { return r.wanIP6 }

// FlushNAT deletes every conntrack entry in the router's namespace, so
// every NAT mapping and filter state is forgotten (conntrack -F).
func (r *Router) FlushNAT() error {
	_, err := r.run("conntrack", "-F")
	return err
}

// CutUplink pulls the router's WAN cable: the far end of wan0 goes down,
// so the whole site is off the internet while its LAN still works.
func (r *Router) CutUplink() error { return r.farNS.ipBatch("link set " + r.farDev + " down") }

// RestoreUplink plugs the WAN cable back in.
func (r *Router) RestoreUplink() error { return r.farNS.ipBatch("link set " + r.farDev + " up") }

// ReaddressWAN gives the router a new WAN address (addr, or the next free
// one if addr is the zero Addr), as an ISP renumbering would: the rules
// follow, and the NAT's conntrack table is flushed because every mapping
// of the old address is dead. It returns the new address.
func (r *Router) ReaddressWAN(addr netip.Addr) (netip.Addr, error) {
	l := r.lab
	l.mu.Lock()
	newIP, err := r.wanPool.take(addr)
	old := r.wanIP
	l.mu.Unlock()
	if err != nil {
		return netip.Addr{}, err
	}
	err = r.ipBatch(
		"addr add "+netip.PrefixFrom(newIP, r.wanBit).String()+" dev "+wanDev,
		"addr del "+netip.PrefixFrom(old, r.wanBit).String()+" dev "+wanDev,
		"route replace default via "+r.wanGW.String(),
	)
	if err != nil {
		return netip.Addr{}, err
	}
	l.mu.Lock()
	r.wanIP = newIP
	l.mu.Unlock()
	if err := r.site.applyRules(); err != nil {
		return netip.Addr{}, err
	}
	if err := r.FlushNAT(); err != nil {
		return netip.Addr{}, err
	}
	l.log.Info("router readdressed", "router", r.short, "old", old, "new", newIP)
	return newIP, nil
}

// ConntrackTimeouts are per-namespace conntrack timeouts of a NAT router,
// that is how long an idle mapping lives. Zero fields are left unchanged;
// values are rounded up to whole seconds.
type ConntrackTimeouts struct {
	// UDP is the timeout of a UDP flow that has seen one direction only
	// (nf_conntrack_udp_timeout; Linux default 30s).
	UDP time.Duration
	// UDPStream is the timeout of a UDP flow that has seen replies
	// (nf_conntrack_udp_timeout_stream; Linux default 120s).
	UDPStream time.Duration
	// TCPEstablished is the timeout of an established TCP connection
	// (nf_conntrack_tcp_timeout_established; Linux default 5 days).
	TCPEstablished time.Duration
}

var conntrackKeys = []string{
	"net.netfilter.nf_conntrack_udp_timeout",
	"net.netfilter.nf_conntrack_udp_timeout_stream",
	"net.netfilter.nf_conntrack_tcp_timeout_established",
}

func (c ConntrackTimeouts) values() []time.Duration {
	return []time.Duration{c.UDP, c.UDPStream, c.TCPEstablished}
}

// SetConntrackTimeouts sets the router's conntrack timeouts (they are per
// namespace, so this changes only this NAT). Existing entries keep the
// timeout they were last refreshed with.
func (r *Router) SetConntrackTimeouts(c ConntrackTimeouts) error {
	var kv []string
	for i, d := range c.values() {
		if d < 0 {
			return fmt.Errorf("%w: negative conntrack timeout %v", ErrBadOption, d)
		}
		if d > 0 {
			secs := int((d + time.Second - 1) / time.Second)
			kv = append(kv, conntrackKeys[i]+"="+strconv.Itoa(secs))
		}
	}
	if len(kv) == 0 {
		return nil
	}
	return r.sysctl(kv...)
}

// ConntrackTimeouts reads the router's current conntrack timeouts.
func (r *Router) ConntrackTimeouts() (ConntrackTimeouts, error) {
	var vals [3]time.Duration
	for i, k := range conntrackKeys {
		out, err := r.run("sysctl", "-n", k)
		if err != nil {
			return ConntrackTimeouts{}, err
		}
		n, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			return ConntrackTimeouts{}, fmt.Errorf("lab: sysctl %s = %q: %w", k, out, err)
		}
		vals[i] = time.Duration(n) * time.Second
	}
	return ConntrackTimeouts{UDP: vals[0], UDPStream: vals[1], TCPEstablished: vals[2]}, nil
}
