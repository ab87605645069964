//go:build e2e

package lab

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

// The address plan (see e2e/README.md). Nothing outside these networks is
// ever configured, and every network lives only inside the lab's namespaces.
var (
	// BackbonePrefix is the "internet": public hosts, TURN servers and NAT
	// routers' WAN sides share this one bridged segment.
	BackbonePrefix = netip.MustParsePrefix("198.51.100.0/24")
	// BackboneGateway is the backbone namespace's own address on the bridge
	// and everyone's default route there. The backbone forwards nothing and
	// has no other link, so traffic to any address outside the lab dies in
	// it.
	BackboneGateway = netip.MustParseAddr("198.51.100.1")
	// firstPublic is where public and WAN addresses start.
	firstPublic = netip.MustParseAddr("198.51.100.10")

	// BackbonePrefix6 is the backbone's IPv6 network (documentation prefix,
	// DESIGN.md "Addresses in tests"): public IPv6 hosts and the WAN sides
	// of IPv6 sites.
	BackbonePrefix6 = netip.MustParsePrefix("2001:db8::/64")
	// BackboneGateway6 is the backbone's IPv6 address and every IPv6 host's
	// default route. Unlike IPv4 (where the NATs make one flat network), the
	// backbone routes IPv6: each IPv6 site's LAN /64 via the site router's
	// WAN address, as an ISP routes a delegated prefix. It has no default
	// route, so an IPv6 packet for any address outside the lab dies there.
	BackboneGateway6 = netip.MustParseAddr("2001:db8::1")
	// firstPublic6 is where public and WAN IPv6 addresses start.
	firstPublic6 = netip.MustParseAddr("2001:db8::10")
)

// linkLocal is the static link-local address that goes with global address
// a on a forwarding interface: fe80:: and a's interface identifier (its low
// 64 bits), unique on the link because a is. Only the backbone and routers
// get one: a forwarded packet's source is not on the outgoing interface, and
// the kernel then solicits its next hop from a link-local source or not at
// all. Hosts need none (their own addresses are on their interface) and the
// lab generates none (addrgenmode none).
func linkLocal(a netip.Addr) netip.Prefix {
	b := a.As16()
	copy(b[:8], []byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0})
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// lanPrefix6 is the global IPv6 LAN of site number i: 2001:db8:i::/64,
// router at ::1.
func lanPrefix6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i)}), 64)
}

// lanPrefix is the LAN of site number i: 10.0.i.0/24, router at .1.
func lanPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24)
}

// carrierPrefix is the network between a site's carrier NAT (.1) and its
// home router (.2): 10.100.i.0/24.
func carrierPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i), 0}), 24)
}

// maxSites bounds site numbers so that they fit the third octet.
const maxSites = 250

// Options configures a Lab.
type Options struct {
	// ArtifactDir receives lab.log, topology.txt and the output of processes
	// started in the lab; empty means ArtifactDir(t).
	ArtifactDir string
	// Logger receives the lab's log, every command it runs at debug level;
	// nil means a text log in ArtifactDir/lab.log.
	Logger *slog.Logger
}

// Lab is one small internet in network namespaces: a backbone bridge, public
// hosts on it, and NAT'd sites behind it. Build it with New and the Add
// methods from the test goroutine (they fail the test on error); the
// operations on hosts, routers and processes return errors and are safe for
// concurrent use. The lab is torn down by Close, which New registers with
// t.Cleanup and which lab.Main also calls on a signal or near the test
// timeout.
type Lab struct {
	// immutable after New
	log      *slog.Logger
	logFile  *os.File // nil if Options.Logger was given
	dir      string
	prefix   string // e.g. "md1234-1-"; set by register
	backbone *Namespace

	mu         sync.Mutex // guards the following
	closed     bool
	namespaces []string // every netns created, in order
	hosts      map[string]*Host
	sites      map[string]*Site
	procs      map[*Proc]struct{}
	bridgePort map[string]int // netns name -> last bridge port number used
	publicIPs  *allocator
	publicIPs6 *allocator
	blockSeq   int

	closeOnce sync.Once
	closeErr  error
}

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

// New builds the backbone of a new lab and registers its teardown with
// t.Cleanup. It skips t unless running as root, and fails t if a tool is
// missing or the test binary's TestMain does not call Main.
func New(t testing.TB, opts Options) *Lab {
	t.Helper()
	testutil.RequireRoot(t)
	missing, err := missingPrograms()
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("lab: programs listed in scripts/programs.txt are missing: %v: run scripts/lab-deps.sh as root", missing)
	}
	l := &Lab{
		dir:        opts.ArtifactDir,
		log:        opts.Logger,
		hosts:      map[string]*Host{},
		sites:      map[string]*Site{},
		procs:      map[*Proc]struct{}{},
		bridgePort: map[string]int{},
		publicIPs:  newAllocator(BackbonePrefix, firstPublic),
		publicIPs6: newAllocator(BackbonePrefix6, firstPublic6),
	}
	if _, err := l.publicIPs.take(BackboneGateway); err != nil {
		t.Fatal(err)
	}
	if _, err := l.publicIPs6.take(BackboneGateway6); err != nil {
		t.Fatal(err)
	}
	if l.dir == "" {
		l.dir = ArtifactDir(t)
	} else if err := os.MkdirAll(l.dir, 0o755); err != nil {
		t.Fatalf("lab: artifact dir: %v", err)
	}
	if l.log == nil {
		f, err := os.Create(uniquePath(l.dir, "lab", ".log"))
		if err != nil {
			t.Fatalf("lab: log file: %v", err)
		}
		l.logFile = f
		l.log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if err := register(l); err != nil {
		l.closeLog()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab teardown: %v", err)
		}
		if t.Failed() {
			t.Logf("lab artifacts (logs, topology, process output): %s", l.dir)
		}
	})
	bb, err := l.newNamespace("backbone", l.prefix+"backbone", false)
	if err != nil {
		t.Fatalf("lab: backbone: %v", err)
	}
	l.backbone = bb
	// Multicast snooping off: the bridge is a plain switch and floods
	// neighbour solicitations (there is no MLD querier in the lab).
	err = bb.ipBatch(
		"link add br0 type bridge mcast_snooping 0",
		"link set br0 addrgenmode none",
		"addr add "+netip.PrefixFrom(BackboneGateway, BackbonePrefix.Bits()).String()+" dev br0",
		"addr add "+netip.PrefixFrom(BackboneGateway6, BackbonePrefix6.Bits()).String()+" dev br0 nodad",
		"addr add "+linkLocal(BackboneGateway6).String()+" dev br0 nodad",
		"link set br0 up",
	)
	if err == nil {
		err = bb.sysctl("net.ipv6.conf.all.forwarding=1")
	}
	if err == nil {
		err = bb.waitIPv6Ready()
	}
	if err != nil {
		t.Fatalf("lab: backbone bridge: %v", err)
	}
	l.log.Info("lab up", "prefix", l.prefix, "artifacts", l.dir)
	return l
}

// Prefix returns the prefix of every namespace of this lab, e.g. "md1234-1-".
func (l *Lab) Prefix() string { return l.prefix }

// ArtifactDir returns the directory of this lab's logs and process output.
func (l *Lab) ArtifactDir() string { return l.dir }

// Backbone returns the backbone namespace (the bridge br0 that is the
// internet). Run capture tools there to see traffic between sites.
func (l *Lab) Backbone() *Namespace { return l.backbone }

// Logger returns the lab's logger.
func (l *Lab) Logger() *slog.Logger { return l.log }

// newNamespace creates a namespace, records it for teardown at once, and
// applies the sysctls every lab namespace gets: no reverse-path filter,
// secondary addresses promoted (Readdress relies on it), bridged frames kept
// out of iptables, and forwarding (both families) for routers. IPv6 stays
// enabled (a daemon's TUN may carry an IPv6 overlay address), but nothing
// configures itself: no router advertisements, no SLAAC, no duplicate
// address detection, and no link-local addresses (addrgenmode none). A lab
// link carries IPv6 only where the lab puts a static 2001:db8::/32 address
// (HostOptions.IPv6, SiteOptions.IPv6).
func (l *Lab) newNamespace(short, name string, router bool) (*Namespace, error) {
	n := &Namespace{lab: l, name: name, short: short}
	return n, l.makeNamespace(n, router)
}

// makeNamespace creates the netns n describes (see newNamespace).
func (l *Lab) makeNamespace(n *Namespace, router bool) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.mu.Unlock()
	if _, err := l.rootRun("ip", "netns", "add", n.name); err != nil {
		return err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, n.name)
	l.mu.Unlock()
	kv := []string{
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
		"net.ipv4.conf.all.promote_secondaries=1",
		"net.ipv4.conf.default.promote_secondaries=1",
		"net.ipv6.conf.all.accept_ra=0",
		"net.ipv6.conf.default.accept_ra=0",
		"net.ipv6.conf.all.autoconf=0",
		"net.ipv6.conf.default.autoconf=0",
		"net.ipv6.conf.all.accept_dad=0",
		"net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.accept_redirects=0",
		"net.ipv6.conf.default.accept_redirects=0",
	}
	if router {
		kv = append(kv, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	}
	// br_netfilter, where loaded, would pass bridged frames through the IP
	// hooks of the bridge's namespace; the lab's bridges are plain switches.
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		kv = append(kv,
			"net.bridge.bridge-nf-call-iptables=0",
			"net.bridge.bridge-nf-call-ip6tables=0",
			"net.bridge.bridge-nf-call-arptables=0")
	}
	if err := n.sysctl(kv...); err != nil {
		return err
	}
	return n.ipBatch("link set lo up")
}

// attach connects near (as nearDev) to the bridge br in far with a new veth
// pair, and returns the name of the far end, a port of br ("p<N>"). Both ends
// are created directly inside their namespaces; the root namespace never
// sees them.
func (l *Lab) attach(far *Namespace, br string, near *Namespace, nearDev string) (string, error) {
	l.mu.Lock()
	l.bridgePort[far.name]++
	port := fmt.Sprintf("p%d", l.bridgePort[far.name])
	l.mu.Unlock()
	if _, err := l.rootRun("ip", "link", "add", port, "netns", far.name, "type", "veth", "peer", "name", nearDev, "netns", near.name); err != nil {
		return "", err
	}
	if err := far.ipBatch("link set "+port+" addrgenmode none", "link set "+port+" master "+br+" up"); err != nil {
		return "", err
	}
	return port, nil
}

// checkNameLocked validates a host or site name against the names of its
// kind already in use (a host and a site may share a name: their namespaces
// are "<name>" and "<name>-nat"); must hold l.mu.
func (l *Lab) checkNameLocked(name string, site bool) error {
	if l.closed {
		return ErrClosed
	}
	if !nameRE.MatchString(name) || name == "backbone" {
		return fmt.Errorf("%w: %q (want 1-20 of [a-z0-9], not \"backbone\")", ErrBadName, name)
	}
	if _, ok := l.hosts[name]; ok && !site {
		return fmt.Errorf("%w: host %q", ErrNameTaken, name)
	}
	if _, ok := l.sites[name]; ok && site {
		return fmt.Errorf("%w: site %q", ErrNameTaken, name)
	}
	return nil
}

// Host returns the host called name, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hosts[name]
}

// Site returns the site called name, or nil.
func (l *Lab) Site(name string) *Site {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sites[name]
}

// Namespaces returns the names of every namespace the lab created, in order.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.namespaces...)
}

// Describe returns the topology as text: namespaces, addresses, NAT kinds
// and port ranges. Close writes it to topology.txt in the artifact dir.
func (l *Lab) Describe() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "lab %s (backbone %s, bridge br0 %v and %v, gateway %v and %v)\n", l.prefix, l.prefix+"backbone", BackbonePrefix, BackbonePrefix6, BackboneGateway, BackboneGateway6)
	names := make([]string, 0, len(l.hosts))
	for n, h := range l.hosts {
		if h.site == nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		h := l.hosts[n]
		addrs := h.ip.String()
		switch {
		case !h.ip.IsValid():
			addrs = h.ip6.String() + " (IPv6 only)"
		case h.ip6.IsValid():
			addrs += " " + h.ip6.String()
		}
		fmt.Fprintf(&b, "  public host %-12s netns %-24s eth0 %s%s", n, h.name, addrs, extraString(h.extra))
		if h.firewall {
			b.WriteString(" [stateful firewall]")
		}
		b.WriteString("\n")
	}
	sites := make([]string, 0, len(l.sites))
	for n := range l.sites {
		sites = append(sites, n)
	}
	sort.Strings(sites)
	for _, n := range sites {
		s := l.sites[n]
		if s.carrier != nil {
			fmt.Fprintf(&b, "  site %s: carrier NAT %s netns %s wan0 %v lan0 %v\n", n, s.carrier.kind, s.carrier.name, s.carrier.wanIP, s.carrier.lanIP)
		} else {
			fmt.Fprintf(&b, "  site %s:\n", n)
		}
		fmt.Fprintf(&b, "    router %s netns %s wan0 %v lan0 %v/%d\n", s.router.kind, s.router.name, s.router.wanIP, s.router.lanIP, s.lan.Bits())
		if s.lan6.IsValid() {
			fmt.Fprintf(&b, "    IPv6: wan0 %v lan0 %v/%d, routed through a stateful firewall\n", s.router.wanIP6, s.router.lanIP6, s.lan6.Bits())
		}
		for _, h := range s.hosts {
			six := ""
			if h.ip6.IsValid() {
				six = " " + h.ip6.String()
			}
			fmt.Fprintf(&b, "    host %-12s netns %-24s eth0 %v%s udp %d-%d\n", h.Name(), h.name, h.ip, six, h.port, h.port+h.ports-1)
		}
	}
	return b.String()
}

func extraString(extra []netip.Addr) string {
	if len(extra) == 0 {
		return ""
	}
	s := make([]string, len(extra))
	for i, a := range extra {
		s[i] = a.String()
	}
	return " (+" + strings.Join(s, ", ") + ")"
}

// Close tears the lab down: it stops every process started with Start
// (SIGTERM, then SIGKILL), SIGKILLs whatever else still runs in the lab's
// namespaces, deletes them (which destroys their veths and bridges), and
// checks that none is left. It is idempotent and safe to call concurrently;
// every caller gets the first call's result.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.teardown() })
	return l.closeErr
}

func (l *Lab) teardown() error {
	topology := l.Describe()
	l.mu.Lock()
	l.closed = true
	procs := make([]*Proc, 0, len(l.procs))
	for p := range l.procs {
		procs = append(procs, p)
	}
	nss := append([]string(nil), l.namespaces...)
	l.mu.Unlock()

	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.Stop() // its exit status is the test's business, not teardown's
		}()
	}
	wg.Wait()

	var errs []error
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNetns(l.log, nss[i]); err != nil {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(filepath.Join(os.TempDir(), "meshd-lab", nss[i])); err != nil {
			errs = append(errs, err)
		}
	}
	// A builder racing with Close may have added a namespace after the
	// snapshot above; the prefix sweep catches it.
	if n, err := sweepPrefix(l.prefix); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		l.log.Warn("swept namespaces created during teardown", "count", n)
	}
	if names, err := listNetns(l.log); err != nil {
		errs = append(errs, err)
	} else {
		for _, n := range names {
			if strings.HasPrefix(n, l.prefix) {
				errs = append(errs, fmt.Errorf("%w: netns %s", ErrLeftovers, n))
			}
		}
	}
	if err := os.WriteFile(uniquePath(l.dir, "topology", ".txt"), []byte(topology), 0o644); err != nil {
		errs = append(errs, err)
	}
	unregister(l)
	l.log.Info("lab down", "prefix", l.prefix, "namespaces", len(nss), "processes", len(procs), "error", errors.Join(errs...))
	l.closeLog()
	return errors.Join(errs...)
}

// uniquePath returns dir/base+ext, or dir/base.N+ext if that exists (two
// labs in one test share the artifact dir).
func uniquePath(dir, base, ext string) string {
	p := filepath.Join(dir, base+ext)
	for i := 2; fileExists(p); i++ {
		p = filepath.Join(dir, fmt.Sprintf("%s.%d%s", base, i, ext))
	}
	return p
}

func (l *Lab) closeLog() {
	if l.logFile != nil {
		_ = l.logFile.Close()
	}
}
