package overlay

import (
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"

	"golang.zx2c4.com/wireguard/tun"
)

// Mode selects the TUN device New creates when Options.Device is nil.
type Mode int

const (
	// ModeKernel creates a kernel TUN device (needs CAP_NET_ADMIN) and manages
	// its addresses, routes and the forwarding sysctls.
	ModeKernel Mode = iota
	// ModeUserspace creates a gVisor netstack inside the process instead: no
	// kernel device, no routes; only the process's own netstack sockets
	// (Interface.Net) use the overlay. See docs/userspace-tun.md.
	ModeUserspace
)

func (m Mode) String() string {
	switch m {
	case ModeKernel:
		return "kernel"
	case ModeUserspace:
		return "userspace"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "kernel" (or "") and "userspace".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "kernel":
		return ModeKernel, nil
	case "userspace":
		return ModeUserspace, nil
	}
	return 0, fmt.Errorf("overlay: mode %q is neither kernel nor userspace", s)
}

// DefaultName is the kernel TUN name when Options.Name is empty.
const DefaultName = "meshd0"

// Options configure New. They are fixed for the Interface's life; what
// changes at run time is in Config.
type Options struct {
	// Logger receives lifecycle and control-path messages (never per-packet
	// ones: the data path counts instead). Nil discards.
	Logger *slog.Logger

	// Mode selects the device New creates when Device is nil. The zero value
	// is ModeKernel.
	Mode Mode

	// Device, if not nil, is used instead of creating one (tests inject
	// doubles here). Once New succeeds the Interface owns it and closes it on
	// Close (if New fails, it stays the caller's). No addresses, routes or
	// sysctls are touched for an injected device.
	Device tun.Device

	// Name is the kernel TUN device name (ModeKernel); empty means
	// DefaultName. A name with "%d" lets the kernel pick the number.
	Name string

	// MTU of the device New creates, and the size above which outbound
	// packets are dropped as too big; zero means DefaultMTU (see TunnelMTU and
	// docs/mtu.md). With an injected Device, zero means the device's own MTU.
	MTU int

	// UserspaceAddresses are the addresses the userspace netstack owns
	// (ModeUserspace only, where at least one is required). A netstack cannot
	// change its addresses, so every Config given to Reconfig must carry
	// exactly these addresses.
	UserspaceAddresses []netip.Addr

	// MaxFlows bounds the connection-tracking table; zero means
	// DefaultMaxFlows. When full, new flows evict old ones (counted in
	// Stats.FlowsEvicted).
	MaxFlows int

	// OnLinkNeeded, if not nil, is called with a peer's name when the TUN
	// sends a packet to a peer whose PeerConfig.Conn is nil, so the daemon
	// can connect lazily. It is called once per peer while that peer's Conn
	// stays nil (again after the peer gets a Conn and loses it), from one
	// notifier goroutine, in order, never concurrently, and never from the
	// data path itself; it may call Reconfig, and should not block for long.
	OnLinkNeeded func(peer string)
}

// Config is the complete desired state of the overlay. The daemon builds a
// whole Config and applies it with Reconfig; nothing is changed piecemeal.
// Reconfig copies it: the caller may reuse its slices afterwards.
type Config struct {
	// Addresses are this node's overlay addresses, each with the mesh prefix
	// length, as in its certificate: 100.64.0.1/10 (and optionally an IPv6
	// one). In ModeKernel the device gets exactly these, so the kernel routes
	// the whole mesh prefix to it. Packets from peers are accepted when
	// addressed to one of these addresses (or to a forwarded LocalSubnet).
	Addresses []netip.Prefix

	// Peers are the nodes this node exchanges packets with.
	Peers []PeerConfig

	// LocalSubnets are LAN prefixes behind this node that peers may reach
	// through it (its certificate allows them). Used only when Forwarding is
	// true.
	LocalSubnets []netip.Prefix

	// Forwarding accepts packets from peers addressed to LocalSubnets. In
	// ModeKernel it also turns on net.ipv4.ip_forward (and
	// net.ipv6.conf.all.forwarding when an IPv6 subnet is listed), restoring
	// the previous values when turned off or on Close. Not available in
	// ModeUserspace.
	Forwarding bool

	// Firewall is the rule set; the zero value denies all new inbound flows
	// and allows all outbound ones.
	Firewall FirewallConfig
}

// PeerConfig is one peer.
type PeerConfig struct {
	// Name identifies the peer (its certificate name); unique in a Config.
	// Firewall rules match it.
	Name string

	// Groups are the peer's certificate groups; firewall rules match them.
	Groups []string

	// AllowedPrefixes are the sources accepted from this peer
	// (anti-spoofing): its overlay address as /32 (and /128) and the subnets
	// its certificate allows. Each must be masked (no host bits).
	AllowedPrefixes []netip.Prefix

	// Routes are the destinations sent to this peer. Empty means
	// AllowedPrefixes. Each must lie inside one of AllowedPrefixes (replies
	// would otherwise be dropped as spoofed), must be masked, must not be a
	// default route (/0), and no two peers may list the same prefix. The
	// longest matching prefix wins.
	Routes []netip.Prefix

	// Conn is the link to the peer; nil means there is none yet (packets to
	// the peer are dropped as link down and Options.OnLinkNeeded is told).
	// It must be comparable (a pointer): the overlay tracks links by
	// identity.
	Conn PeerConn
}

// routes returns the destinations routed to the peer.
func (p *PeerConfig) routes() []netip.Prefix {
	if len(p.Routes) == 0 {
		return p.AllowedPrefixes
	}
	return p.Routes
}

func (c Config) clone() Config {
	out := Config{
		Addresses:    slices.Clone(c.Addresses),
		LocalSubnets: slices.Clone(c.LocalSubnets),
		Forwarding:   c.Forwarding,
		Firewall:     c.Firewall.clone(),
	}
	if c.Peers != nil {
		out.Peers = make([]PeerConfig, len(c.Peers))
		for i, p := range c.Peers {
			out.Peers[i] = PeerConfig{
				Name:            p.Name,
				Groups:          slices.Clone(p.Groups),
				AllowedPrefixes: slices.Clone(p.AllowedPrefixes),
				Routes:          slices.Clone(p.Routes),
				Conn:            p.Conn,
			}
		}
	}
	return out
}

// equal compares two validated configs (Conns are comparable).
func (c *Config) equal(o *Config) bool {
	if !slices.Equal(c.Addresses, o.Addresses) || !slices.Equal(c.LocalSubnets, o.LocalSubnets) ||
		c.Forwarding != o.Forwarding || !c.Firewall.equal(&o.Firewall) || len(c.Peers) != len(o.Peers) {
		return false
	}
	for i := range c.Peers {
		a, b := &c.Peers[i], &o.Peers[i]
		if a.Name != b.Name || !slices.Equal(a.Groups, b.Groups) || !slices.Equal(a.AllowedPrefixes, b.AllowedPrefixes) ||
			!slices.Equal(a.Routes, b.Routes) || a.Conn != b.Conn {
			return false
		}
	}
	return true
}

// devKind says who manages the device's system configuration.
type devKind int

const (
	devManaged   devKind = iota // kernel TUN New created: addresses, routes, sysctls
	devUserspace                // netstack: fixed addresses, no system state
	devExternal                 // injected Device: no system state
)

func validPrefixes(field string, ps []netip.Prefix, wantMasked bool) error {
	for i, p := range ps {
		f := fmt.Sprintf("%s[%d]", field, i)
		if !p.IsValid() {
			return configErr(f, "invalid prefix")
		}
		if p.Addr().Zone() != "" {
			return configErr(f, "prefix %s has a zone", p)
		}
		if wantMasked && p != p.Masked() {
			return configErr(f, "prefix %s has host bits set (did you mean %s?)", p, p.Masked())
		}
	}
	return nil
}

// validate checks c for an Interface whose device is of kind k; userspace
// lists the netstack's addresses when k is devUserspace.
func (c *Config) validate(k devKind, userspace []netip.Addr) error {
	if err := validPrefixes("Addresses", c.Addresses, false); err != nil {
		return err
	}
	seen := map[netip.Addr]bool{}
	for i, a := range c.Addresses {
		if ad := a.Addr(); ad.IsUnspecified() || ad.IsMulticast() || ad.IsLoopback() || ad.Is4In6() {
			return configErr(fmt.Sprintf("Addresses[%d]", i), "%s is not a unicast overlay address", ad)
		} else if seen[ad] {
			return configErr(fmt.Sprintf("Addresses[%d]", i), "duplicate address %s", ad)
		}
		seen[a.Addr()] = true
	}
	if k == devUserspace {
		if len(c.Addresses) != len(userspace) {
			return configErr("Addresses", "the userspace netstack owns %v and cannot change them", userspace)
		}
		for _, a := range userspace {
			if !seen[a] {
				return configErr("Addresses", "the userspace netstack owns %v and cannot change them", userspace)
			}
		}
		if c.Forwarding {
			return configErr("Forwarding", "forwarding needs a kernel device (Mode kernel)")
		}
	}
	if err := validPrefixes("LocalSubnets", c.LocalSubnets, true); err != nil {
		return err
	}
	names := map[string]bool{}
	routeOwner := map[netip.Prefix]string{}
	for i := range c.Peers {
		p := &c.Peers[i]
		f := fmt.Sprintf("Peers[%d]", i)
		if p.Name == "" {
			return configErr(f+".Name", "empty peer name")
		}
		if names[p.Name] {
			return configErr(f+".Name", "duplicate peer name %q", p.Name)
		}
		names[p.Name] = true
		if len(p.AllowedPrefixes) == 0 {
			return configErr(f+".AllowedPrefixes", "peer %q has no allowed prefixes (at least its overlay address)", p.Name)
		}
		if err := validPrefixes(f+".AllowedPrefixes", p.AllowedPrefixes, true); err != nil {
			return err
		}
		if err := validPrefixes(f+".Routes", p.Routes, true); err != nil {
			return err
		}
		for j, r := range p.routes() {
			rf := fmt.Sprintf("%s.Routes[%d]", f, j)
			if r.Bits() == 0 {
				return configErr(rf, "default route %s is not supported: it would route the tunnel's own packets into itself", r)
			}
			covered := false
			for _, a := range p.AllowedPrefixes {
				if a.Bits() <= r.Bits() && a.Contains(r.Addr()) {
					covered = true
					break
				}
			}
			if !covered {
				return configErr(rf, "route %s is outside peer %q's allowed prefixes", r, p.Name)
			}
			if other, ok := routeOwner[r]; ok && other != p.Name {
				return configErr(rf, "route %s is claimed by peers %q and %q", r, other, p.Name)
			}
			routeOwner[r] = p.Name
		}
		if p.Conn != nil && !reflect.TypeOf(p.Conn).Comparable() {
			return configErr(f+".Conn", "PeerConn of type %T is not comparable; use a pointer", p.Conn)
		}
	}
	return c.Firewall.validate()
}
