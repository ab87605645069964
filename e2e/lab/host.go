//go:build e2e

package lab

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Default port plan: a host's UDP range is [Port, Port+Ports-1]. Hosts of
// one site get disjoint ranges so the static-map NATs can forward each port
// to exactly one host (LAB.md: give each LAN node its own ports).
const (
	defaultPort     = 5000
	defaultPorts    = 10
	defaultSiteStep = 100 // auto ports of the i-th host of a site: 5000 + 100*i
)

// HostOptions configures a host.
type HostOptions struct {
	// Port is the UDP port the node will use (meshd's listen port). For a
	// host behind a static-map NAT, [Port, Port+Ports-1] is forwarded to it
	// unchanged; the NAT probe uses Port (mapping test) and Port+1
	// (filtering test). Zero means 5000 for public hosts and 5000+100*i for
	// the i-th host of a site.
	Port int
	// Ports is the size of the host's port range; zero means 10, at least 2.
	Ports int
	// Addr fixes the host's address (in the backbone or its site's LAN);
	// the zero Addr means the next free one.
	Addr netip.Addr
	// ExtraAddrs adds that many more backbone addresses to a public host's
	// eth0 (a STUN-like server needs a second IP). Public hosts only.
	ExtraAddrs int
	// Firewall puts a stateful firewall on a public host: replies and
	// related traffic in, everything else arriving on eth0 dropped
	// (NATFirewall), for both families. Public hosts only.
	Firewall bool
	// IPv6 gives a public host a global IPv6 address on the backbone too
	// (2001:db8::/64, from ::10 up): a dual-stack host. A LAN host gets one
	// exactly when its site has IPv6 (SiteOptions.IPv6); setting IPv6 for
	// the host of a site without it is an error.
	IPv6 bool
	// NoIPv4 makes a public host IPv6-only: its global IPv6 address and an
	// IPv6 default route, and no IPv4 address or route at all (loopback
	// aside), like a cheap VPS. It implies IPv6. Public hosts only.
	NoIPv4 bool
}

// Host is a machine of the lab: its own namespace with one interface, eth0,
// on the backbone (public host) or on a site's LAN.
type Host struct {
	// Namespace runs programs on the host.
	*Namespace

	// immutable after creation
	site     *Site // nil for a public host
	port     int
	ports    int
	firewall bool
	gw       netip.Addr
	bits     int
	farNS    *Namespace // the bridge end of eth0's veth: CutLink sets it down
	farDev   string

	gw6   netip.Addr // IPv6 default route; zero without IPv6
	bits6 int

	// guarded by lab.mu
	ip    netip.Addr // zero on an IPv6-only host
	ip6   netip.Addr // global IPv6 address; zero without IPv6
	extra []netip.Addr
}

// Name returns the host's name in the lab.
func (h *Host) Name() string { return h.short }

// IP returns the host's own address on eth0 (a LAN address behind a NAT):
// its IPv4 address, or its IPv6 one on an IPv6-only host.
func (h *Host) IP() netip.Addr {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	if !h.ip.IsValid() {
		return h.ip6
	}
	return h.ip
}

// IP6 returns the host's global IPv6 address, or the zero Addr if the host
// has no IPv6. No NAT translates it: the internet sees the host as this.
func (h *Host) IP6() netip.Addr {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	return h.ip6
}

// HasIPv4 reports whether the host has an IPv4 address (false only for an
// IPv6-only host).
func (h *Host) HasIPv4() bool {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	return h.ip.IsValid()
}

// IPs returns every address of the host: its own IPv4 address first, then
// the extra IPv4 ones, then its IPv6 address.
func (h *Host) IPs() []netip.Addr {
	h.lab.mu.Lock()
	defer h.lab.mu.Unlock()
	var out []netip.Addr
	if h.ip.IsValid() {
		out = append(out, h.ip)
	}
	out = append(out, h.extra...)
	if h.ip6.IsValid() {
		out = append(out, h.ip6)
	}
	return out
}

// PublicIP returns the address the internet sees the host as: its own for a
// public host (IPv6 on an IPv6-only one), its site's outermost WAN address
// behind NAT.
func (h *Host) PublicIP() netip.Addr {
	if h.site == nil {
		return h.IP()
	}
	return h.site.PublicIP()
}

// Port returns the UDP port the host's node should use.
func (h *Host) Port() int { return h.port }

// PortRange returns the host's statically mapped UDP ports, inclusive.
func (h *Host) PortRange() (first, last int) { return h.port, h.port + h.ports - 1 }

// Site returns the host's site, or nil for a public host.
func (h *Host) Site() *Site { return h.site }

// Kind returns how the host sees the internet: NATNone or NATFirewall for a
// public host, the site router's kind otherwise.
func (h *Host) Kind() NATKind {
	switch {
	case h.site != nil:
		return h.site.router.kind
	case h.firewall:
		return NATFirewall
	default:
		return NATNone
	}
}

// AddHost adds a public host on the backbone (also the kind of host for
// coordinators and servers). It must be called from the test goroutine and
// fails t on error.
func (l *Lab) AddHost(t testing.TB, name string, opts HostOptions) *Host {
	t.Helper()
	h, err := l.addPublicHost(name, opts)
	if err != nil {
		t.Fatalf("lab: add host %s: %v", name, err)
	}
	return h
}

// AddNode adds a host that sees the internet through kind: a public host for
// NATNone and NATFirewall, otherwise a new site of that kind named name with
// one LAN host, also named name (with opts.IPv6, an IPv6 site: global IPv6
// behind a stateful firewall next to the IPv4 NAT). It is the one-liner for
// matrix scenarios.
func (l *Lab) AddNode(t testing.TB, name string, kind NATKind, opts HostOptions) *Host {
	t.Helper()
	switch kind {
	case NATNone:
		return l.AddHost(t, name, opts)
	case NATFirewall:
		opts.Firewall = true
		return l.AddHost(t, name, opts)
	}
	return l.AddSite(t, name, SiteOptions{NAT: kind, IPv6: opts.IPv6}).AddHost(t, name, opts)
}

func normalizePorts(opts *HostOptions, auto int) error {
	if opts.Port == 0 {
		opts.Port = auto
	}
	if opts.Ports == 0 {
		opts.Ports = defaultPorts
	}
	if opts.Ports < 2 || opts.Port < 1024 || opts.Port+opts.Ports-1 > 65535 {
		return fmt.Errorf("%w: ports %d-%d (want 1024..65535, at least 2)", ErrBadOption, opts.Port, opts.Port+opts.Ports-1)
	}
	return nil
}

func (l *Lab) addPublicHost(name string, opts HostOptions) (*Host, error) {
	if err := normalizePorts(&opts, defaultPort); err != nil {
		return nil, err
	}
	if opts.ExtraAddrs < 0 || opts.ExtraAddrs > 16 {
		return nil, fmt.Errorf("%w: ExtraAddrs %d", ErrBadOption, opts.ExtraAddrs)
	}
	if opts.NoIPv4 && (opts.ExtraAddrs != 0 || opts.Addr.IsValid()) {
		return nil, fmt.Errorf("%w: Addr and ExtraAddrs are IPv4 addresses, and the host has none (NoIPv4)", ErrBadOption)
	}
	l.mu.Lock()
	if err := l.checkNameLocked(name, false); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	var ip, ip6 netip.Addr
	var err error
	if !opts.NoIPv4 {
		ip, err = l.publicIPs.take(opts.Addr)
	}
	var extra []netip.Addr
	for i := 0; err == nil && i < opts.ExtraAddrs; i++ {
		var a netip.Addr
		a, err = l.publicIPs.take(netip.Addr{})
		extra = append(extra, a)
	}
	if err == nil && (opts.IPv6 || opts.NoIPv4) {
		ip6, err = l.publicIPs6.take(netip.Addr{})
	}
	if err != nil {
		l.mu.Unlock()
		return nil, err
	}
	h := &Host{
		Namespace: &Namespace{lab: l, name: l.prefix + name, short: name},
		port:      opts.Port, ports: opts.Ports, firewall: opts.Firewall,
		gw: BackboneGateway, bits: BackbonePrefix.Bits(), ip: ip, extra: extra,
		gw6: BackboneGateway6, bits6: BackbonePrefix6.Bits(), ip6: ip6,
	}
	l.hosts[name] = h // reserves the name; the host is usable once this returns
	l.mu.Unlock()

	if err := l.makeNamespace(h.Namespace, false); err != nil {
		return nil, err
	}
	if err := h.plug(l.backbone, "br0"); err != nil {
		return nil, err
	}
	if opts.Firewall {
		if _, err := h.runStdin(hostFirewallRules, "nft", "-f", "-"); err != nil {
			return nil, err
		}
	}
	l.log.Info("host added", "host", name, "netns", h.name, "ip", ip, "ip6", ip6, "extra", extra, "firewall", opts.Firewall)
	return h, nil
}

// plug connects the host's eth0 to bridge br in far and configures its
// addresses and default route.
func (h *Host) plug(far *Namespace, br string) error {
	dev, err := h.lab.attach(far, br, h.Namespace, "eth0")
	if err != nil {
		return err
	}
	h.farNS, h.farDev = far, dev
	h.lab.mu.Lock()
	ip, ip6, extra := h.ip, h.ip6, h.extra
	h.lab.mu.Unlock()
	lines := []string{
		"link set eth0 addrgenmode none",
		"link set eth0 up",
	}
	if ip.IsValid() {
		lines = append(lines, "addr add "+netip.PrefixFrom(ip, h.bits).String()+" dev eth0")
	}
	for _, a := range extra {
		lines = append(lines, "addr add "+netip.PrefixFrom(a, h.bits).String()+" dev eth0")
	}
	if ip.IsValid() {
		lines = append(lines, "route add default via "+h.gw.String())
	}
	if ip6.IsValid() {
		lines = append(lines,
			"addr add "+netip.PrefixFrom(ip6, h.bits6).String()+" dev eth0 nodad",
			"route add default via "+h.gw6.String())
	}
	if err := h.ipBatch(lines...); err != nil {
		return err
	}
	if ip6.IsValid() {
		return h.waitIPv6Ready()
	}
	return nil
}

// Pause stops every process on the host with SIGSTOP, by PID: the host
// still answers ARP and its kernel still replies, but its programs freeze
// (a hung or suspended node).
//
// SIGSTOP takes effect when the kernel next schedules each process, and a
// process may enter the namespace (`ip netns exec`) after the first signal,
// so Pause signals again every process not yet stopped until one pass finds
// them all stopped (for up to 10 s, enough for a loaded machine): a caller
// that tests "while paused" must not race the signal.
func (h *Host) Pause() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := h.Pids()
		if err != nil {
			return err
		}
		var running []int
		for _, pid := range pids {
			if processStopped(pid) {
				continue
			}
			running = append(running, pid)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil && err != syscall.ESRCH {
				return fmt.Errorf("lab: pause %s: SIGSTOP pid %d: %w", h.Name(), pid, err)
			}
		}
		if len(running) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: pause %s: pids %v did not stop within 10s", h.Name(), running)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// processStopped reports whether pid is stopped (T) or gone.
func processStopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // exited: nothing left to stop
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	st := s[i+2]
	return st == 'T' || st == 't' || st == 'Z' || st == 'X'
}

// Resume continues the processes Pause stopped (SIGCONT).
func (h *Host) Resume() error { return h.Signal(syscall.SIGCONT) }

// CutLink pulls the host's cable: it sets the bridge end of eth0's veth
// down, so eth0 loses carrier and nothing passes either way, while the
// host's own configuration stays as it was.
func (h *Host) CutLink() error {
	return h.farNS.ipBatch("link set " + h.farDev + " down")
}

// RestoreLink plugs the cable back in (the bridge end up again).
func (h *Host) RestoreLink() error {
	return h.farNS.ipBatch("link set " + h.farDev + " up")
}

// Readdress moves the host to a new IPv4 address on its network (backbone
// or LAN): to addr, or to the next free one if addr is the zero Addr. The
// old address is removed and never handed out again; the default route and,
// on a site, the NAT's static map follow. It returns the new address. The
// IPv6 address, if any, stays; an IPv6-only host cannot be readdressed.
func (h *Host) Readdress(addr netip.Addr) (netip.Addr, error) {
	l := h.lab
	l.mu.Lock()
	if !h.ip.IsValid() {
		l.mu.Unlock()
		return netip.Addr{}, fmt.Errorf("%w: readdress %s: IPv6-only host", ErrBadOption, h.short)
	}
	pool := l.publicIPs
	if h.site != nil {
		pool = h.site.lanIPs
	}
	newIP, err := pool.take(addr)
	old := h.ip
	l.mu.Unlock()
	if err != nil {
		return netip.Addr{}, err
	}
	// With promote_secondaries the new address takes over as primary when
	// the old one goes, instead of being removed with it.
	err = h.ipBatch(
		"addr add "+netip.PrefixFrom(newIP, h.bits).String()+" dev eth0",
		"addr del "+netip.PrefixFrom(old, h.bits).String()+" dev eth0",
		"route replace default via "+h.gw.String(),
	)
	if err != nil {
		return netip.Addr{}, err
	}
	l.mu.Lock()
	h.ip = newIP
	l.mu.Unlock()
	if h.site != nil {
		if err := h.site.applyRules(); err != nil {
			return netip.Addr{}, err
		}
	}
	l.log.Info("host readdressed", "host", h.short, "old", old, "new", newIP)
	return newIP, nil
}

// String returns the host's name and address for logs (IP).
func (h *Host) String() string {
	return h.short + "(" + h.IP().String() + ":" + strconv.Itoa(h.port) + ")"
}
