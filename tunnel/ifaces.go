package tunnel

import (
	"log/slog"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

/* Which interfaces offer host candidates
 *
 * A real host has more interfaces than uplinks: other VPNs (WireGuard,
 * Nebula, OpenVPN, Tailscale), container and VM plumbing (docker0, veth
 * peers, CNI bridges), meshd's own TUN. A host candidate on any of them
 * makes ICE check pairs that run inside another tunnel; such a pair can win,
 * and then meshd's records travel inside that tunnel, fight its congestion
 * and flap as it stalls. So by default only interfaces that look like
 * uplinks offer candidates:
 *
 *   1. never: meshd's own TUN, or an interface with an address inside the
 *      mesh's overlay prefix (a loop), whatever the configuration says;
 *   2. never: loopback, and interfaces that are down;
 *   3. ice.exclude_interfaces matches: skipped; ice.include_interfaces set:
 *      used if it matches, skipped otherwise (the operator decides);
 *   4. used: an interface that carries a default route of the main table,
 *      whatever its kind (a Proxmox vmbr0, a br0 uplink, a PPP link);
 *   5. skipped: tunnel devices (TUN/TAP, WireGuard, IP tunnels, VXLAN,
 *      point-to-point, NOARP or without a link-layer header);
 *   6. skipped: container and VM plumbing without the default route (veth,
 *      bridges, and the usual docker/CNI/podman/libvirt names);
 *   7. used: everything else (physical NICs, VLANs, bonds, macvlan).
 *
 * On a used interface, not every address is a candidate (ChooseAddrs; the
 * rest are listed in LinkInfo.Skipped with the reason, for netcheck):
 *
 *   - link-local addresses (fe80::/10, 169.254/16): they need a zone and
 *     reach only the link;
 *   - IPv6 addresses still in duplicate address detection, or that failed
 *     it (tentative, dadfailed): not usable yet, or never;
 *   - deprecated IPv6 addresses (preferred lifetime over): still valid for
 *     existing flows but on their way out, and the kernel no longer picks
 *     them as a source;
 *   - temporary (privacy, RFC 8981) IPv6 addresses when the interface has
 *     a stable global or ULA address: a temporary address rotates (the
 *     link would move when it expires) and its peers would see a
 *     different source from the one signaled. The IPv6 socket asks the
 *     kernel to prefer the stable (public) source too
 *     (IPV6_PREFER_SRC_PUBLIC), so checks leave from the address offered.
 *     An interface with only temporary addresses offers them.
 */

// LinkInfo is what the classification knows about one network interface.
type LinkInfo struct {
	Name string
	// Kind is the kernel's link type as netlink names it: "device" for a
	// NIC, "veth", "bridge", "tuntap", "wireguard", "vxlan", "ipip", ...
	Kind string
	// Encap is the link-layer (ARPHRD) type: "ether", "loopback", "none"
	// (a TUN or WireGuard device), "ppp", ...
	Encap        string
	Up           bool
	Loopback     bool
	PointToPoint bool
	NoARP        bool
	// DefaultRoute is true when a default route of the main table leaves
	// through the interface.
	DefaultRoute bool
	// Addrs are the addresses that may be host candidates (ChooseAddrs).
	Addrs []netip.Addr
	// Skipped are the interface's other addresses, with why.
	Skipped []SkippedAddr
}

// SkippedAddr is an interface address that is never a host candidate.
type SkippedAddr struct {
	Addr   netip.Addr
	Reason string
}

// HostAddr is an interface address with the kernel's flags for it.
type HostAddr struct {
	Addr netip.Addr
	// IPv6 states (IFA_F_* on Linux); always false for IPv4.
	Tentative, DADFailed, Deprecated, Temporary bool
}

// ChooseAddrs splits an interface's addresses into candidate addresses
// and skipped ones (see the comment at the top of this file).
func ChooseAddrs(as []HostAddr) (use []netip.Addr, skipped []SkippedAddr) {
	stable := false
	for _, a := range as {
		if a.Addr.Is6() && !a.Addr.IsLinkLocalUnicast() && !a.Temporary && !a.Deprecated && !a.Tentative && !a.DADFailed {
			stable = true
		}
	}
	for _, a := range as {
		why := ""
		switch {
		case a.Addr.IsLinkLocalUnicast():
			why = "link-local (needs a zone, reaches only the link)"
		case a.DADFailed:
			why = "failed duplicate address detection"
		case a.Tentative:
			why = "tentative (duplicate address detection not done)"
		case a.Deprecated:
			why = "deprecated (preferred lifetime over)"
		case a.Temporary && stable:
			why = "temporary (privacy) address; the stable one is offered"
		}
		if why == "" {
			use = append(use, a.Addr)
		} else {
			skipped = append(skipped, SkippedAddr{Addr: a.Addr, Reason: why})
		}
	}
	return use, skipped
}

// InterfaceVerdict says whether an interface offers host candidates, and
// why, for meshctl netcheck.
type InterfaceVerdict struct {
	Name   string
	Use    bool
	Reason string
	Addrs  []netip.Addr
	// Skipped are the interface's addresses that are never candidates,
	// with why (link-local, deprecated, temporary, ...).
	Skipped []SkippedAddr
}

// InterfacePolicy decides which interfaces offer host candidates (see the
// comment at the top of this file).
type InterfacePolicy struct {
	// Include and Exclude are ice.include_interfaces and
	// ice.exclude_interfaces: shell patterns (path.Match) on the name.
	Include, Exclude []string
	// OwnTUN is meshd's TUN device name; "" if unknown.
	OwnTUN string
	// Overlay are the mesh's overlay prefixes: an interface with an
	// address inside one is never used.
	Overlay []netip.Prefix
}

// containerNames are name prefixes of container and VM networks whose kind
// alone does not tell (a CNI plugin's vxlan or a veth is caught by kind).
var containerNames = []string{"docker", "br-", "cni", "flannel", "cali", "vxlan.calico", "podman", "virbr", "kube-", "weave", "cilium", "lxcbr", "lxdbr", "veth", "vnet"}

// tunnelKinds are netlink link types that carry another network's packets.
var tunnelKinds = map[string]bool{
	"tuntap": true, "wireguard": true, "vxlan": true, "geneve": true,
	"ipip": true, "sit": true, "gre": true, "gretap": true, "ip6tnl": true,
	"ip6gre": true, "ip6gretap": true, "vti": true, "vti6": true, "xfrm": true,
	"ipoib": true,
}

// Classify judges every link. It is pure: the links come from
// SystemLinks, or from a test's table.
func (p InterfacePolicy) Classify(links []LinkInfo) []InterfaceVerdict {
	out := make([]InterfaceVerdict, 0, len(links))
	for _, l := range links {
		use, why := p.judge(l)
		out = append(out, InterfaceVerdict{Name: l.Name, Use: use, Reason: why, Addrs: slices.Clone(l.Addrs), Skipped: slices.Clone(l.Skipped)})
	}
	return out
}

func matchAny(pats []string, name string) bool {
	for _, pat := range pats {
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

func (p InterfacePolicy) judge(l LinkInfo) (bool, string) {
	if p.OwnTUN != "" && l.Name == p.OwnTUN {
		return false, "meshd's own TUN"
	}
	all := slices.Clone(l.Addrs)
	for _, sk := range l.Skipped {
		all = append(all, sk.Addr)
	}
	for _, a := range all {
		for _, pf := range p.Overlay {
			if pf.Contains(a.Unmap()) {
				return false, "has an address in the mesh prefix " + pf.String() + " (a loop)"
			}
		}
	}
	if l.Loopback || l.Encap == "loopback" {
		return false, "loopback"
	}
	if !l.Up {
		return false, "down"
	}
	if matchAny(p.Exclude, l.Name) {
		return false, "matches ice.exclude_interfaces"
	}
	if len(p.Include) > 0 {
		if matchAny(p.Include, l.Name) {
			return true, "matches ice.include_interfaces"
		}
		return false, "not in ice.include_interfaces"
	}
	if l.DefaultRoute {
		return true, "carries the default route"
	}
	switch {
	case tunnelKinds[l.Kind]:
		return false, "tunnel device (" + l.Kind + "): another VPN or overlay"
	case l.Encap == "none":
		return false, "no link-layer header (a TUN or WireGuard device)"
	case l.PointToPoint:
		return false, "point-to-point link without the default route"
	case l.NoARP:
		return false, "NOARP link without the default route"
	case l.Kind == "veth":
		return false, "veth without the default route (container plumbing)"
	case l.Kind == "bridge":
		return false, "bridge without the default route (container or VM network)"
	}
	for _, pre := range containerNames {
		if strings.HasPrefix(l.Name, pre) {
			return false, "container or VM network (" + pre + "*) without the default route"
		}
	}
	return true, "uplink"
}

// ifaceJudge applies an InterfacePolicy to the host's interfaces for the
// manager: the local addresses that may be candidates, and whether a remote
// candidate is reached through a used interface.
type ifaceJudge struct {
	policy InterfacePolicy
	links  func() ([]LinkInfo, error)
	route  func(netip.Addr) (string, error)
	log    *slog.Logger

	mu       sync.Mutex // guards the following
	lastErr  string     // logged once per distinct error
	lastUsed string     // the used interfaces at the last look, logged on change
	cached   []InterfaceVerdict
	cachedAt time.Time
}

// judgeCache is how long one look at the interfaces serves: a link's
// gathering and its remote candidates arrive together, and a few netlink
// dumps per candidate would add up on a mesh of many peers.
const judgeCache = time.Second

func newIfaceJudge(o Options, log *slog.Logger) *ifaceJudge {
	j := &ifaceJudge{policy: o.Interfaces, links: o.Links, route: o.RouteInterface, log: log}
	if j.links == nil {
		j.links = SystemLinks
	}
	if j.route == nil {
		j.route = routeInterface
	}
	return j
}

// verdicts classifies the interfaces now; nil when they cannot be listed
// (then nothing is filtered by interface: pion's own view stands).
func (j *ifaceJudge) verdicts() []InterfaceVerdict {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cached != nil && time.Since(j.cachedAt) < judgeCache {
		return j.cached
	}
	links, err := j.links()
	if err != nil {
		if msg := err.Error(); msg != j.lastErr {
			j.lastErr = msg
			j.log.Warn("cannot classify network interfaces; offering candidates on all of them", "error", err)
		}
		return nil
	}
	vs := j.policy.Classify(links)
	var used []string
	for _, v := range vs {
		if v.Use {
			used = append(used, v.Name)
		}
	}
	if s := strings.Join(used, ","); s != j.lastUsed {
		j.lastUsed = s
		var skipped []string
		for _, v := range vs {
			if !v.Use {
				skipped = append(skipped, v.Name+" ("+v.Reason+")")
			}
		}
		j.log.Info("candidate interfaces", "used", used, "skipped", skipped)
	}
	j.cached, j.cachedAt = vs, time.Now()
	return vs
}

// localAddrs returns the addresses of the used interfaces, or nil if the
// interfaces could not be listed.
func (j *ifaceJudge) localAddrs() map[netip.Addr]bool {
	vs := j.verdicts()
	if vs == nil {
		return nil
	}
	out := map[netip.Addr]bool{}
	for _, v := range vs {
		if v.Use {
			for _, a := range v.Addrs {
				out[a] = true
			}
		}
	}
	return out
}

// remoteOK reports whether datagrams to a remote candidate would leave
// through a used interface: a candidate the host routes into its own TUN or
// into another VPN is never checked, so meshd never carries its records
// inside another tunnel (or itself). When the route cannot be found the
// candidate is kept: pion's checks then fail on their own.
func (j *ifaceJudge) remoteOK(a netip.Addr) bool {
	name, err := j.route(a)
	if err != nil {
		return true
	}
	if p := j.policy; p.OwnTUN != "" && name == p.OwnTUN {
		return false
	}
	for _, v := range j.verdicts() {
		if v.Name == name {
			return v.Use
		}
	}
	return true
}
