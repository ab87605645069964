package overlay

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Forwarding sysctls (per network namespace).
const (
	sysctlForward4 = "/proc/sys/net/ipv4/ip_forward"
	sysctlForward6 = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// system is the kernel state the overlay adds for a device it created:
// addresses, routes and forwarding sysctls. It remembers exactly what it
// added so that Reconfig removes what is no longer wanted and Close removes
// everything, and never touches what it did not add.
//
// Owned by whoever holds Interface.cfgMu.
type system struct {
	log    *slog.Logger
	h      *netlink.Handle // opened in New's network namespace
	link   netlink.Link
	addrs  map[netip.Prefix]bool
	routes map[netip.Prefix]bool
	// sysctls maps a sysctl path to its value before we changed it.
	sysctls map[string]string
	// no6 is set once an IPv6 address could not be added because the
	// kernel has IPv6 off (the ipv6.disable=1 boot option, or
	// disable_ipv6 on the device): from then on IPv6 addresses, routes and
	// forwarding are skipped and the device carries IPv4 only, as on a
	// node whose certificate has no IPv6 address.
	no6 bool
}

// sysWant is the kernel state one Config asks for.
type sysWant struct {
	addrs   map[netip.Prefix]bool
	routes  map[netip.Prefix]bool
	sysctls map[string]bool // forwarding sysctls that must be 1
}

func wantFor(c *Config) sysWant {
	w := sysWant{addrs: map[netip.Prefix]bool{}, routes: map[netip.Prefix]bool{}, sysctls: map[string]bool{}}
	for _, a := range c.Addresses {
		w.addrs[a] = true
	}
	for i := range c.Peers {
		for _, r := range c.Peers[i].routes() {
			covered := false
			for _, a := range c.Addresses {
				// The address's mesh prefix is routed to the device by the
				// kernel when the address is added.
				if m := a.Masked(); m.Bits() <= r.Bits() && m.Contains(r.Addr()) {
					covered = true
					break
				}
			}
			if !covered {
				w.routes[r] = true
			}
		}
	}
	if c.Forwarding {
		for _, s := range c.LocalSubnets {
			if s.Addr().Is4() {
				w.sysctls[sysctlForward4] = true
			} else {
				w.sysctls[sysctlForward6] = true
			}
		}
	}
	return w
}

func newSystem(log *slog.Logger, name string) (*system, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("overlay: open netlink: %w", err)
	}
	link, err := h.LinkByName(name)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("overlay: find device %s: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		h.Close()
		return nil, fmt.Errorf("overlay: set %s up: %w", name, err)
	}
	return &system{
		log: log, h: h, link: link,
		addrs: map[netip.Prefix]bool{}, routes: map[netip.Prefix]bool{}, sysctls: map[string]string{},
	}, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (s *system) nlAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		// The overlay address is unique by certificate; duplicate address
		// detection would only delay its use.
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func (s *system) nlRoute(p netip.Prefix) *netlink.Route {
	r := &netlink.Route{LinkIndex: s.link.Attrs().Index, Dst: ipNet(p.Masked())}
	if p.Addr().Is4() {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

// add installs what w has and we have not installed yet. On failure it
// removes what it added in this call and returns the error, leaving the
// kernel as it was.
func (s *system) add(w sysWant) error {
	var addedA, addedR []netip.Prefix
	var setS []string
	undo := func() {
		for _, r := range addedR {
			_ = s.h.RouteDel(s.nlRoute(r))
			delete(s.routes, r)
		}
		for _, a := range addedA {
			_ = s.h.AddrDel(s.link, s.nlAddr(a))
			delete(s.addrs, a)
		}
		for _, p := range setS {
			_ = writeSysctl(p, s.sysctls[p])
			delete(s.sysctls, p)
		}
	}
	for a := range w.addrs {
		if s.addrs[a] || (s.no6 && a.Addr().Is6()) {
			continue
		}
		if err := s.h.AddrAdd(s.link, s.nlAddr(a)); err != nil {
			if a.Addr().Is6() && s.ipv6Off() {
				s.no6 = true
				s.log.Warn("IPv6 is disabled on this host: the overlay carries IPv4 only (enable IPv6 on the device, net.ipv6.conf.default.disable_ipv6=0, to use the overlay IPv6 address)",
					"device", s.link.Attrs().Name, "address", a, "error", err)
				continue
			}
			undo()
			return fmt.Errorf("overlay: add address %s to %s: %w", a, s.link.Attrs().Name, err)
		}
		s.addrs[a] = true
		addedA = append(addedA, a)
	}
	for r := range w.routes {
		if s.routes[r] || (s.no6 && r.Addr().Is6()) {
			continue
		}
		if err := s.h.RouteAdd(s.nlRoute(r)); err != nil {
			undo()
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("overlay: add route %s via %s: a route for it already exists (on another interface?): %w", r, s.link.Attrs().Name, err)
			}
			return fmt.Errorf("overlay: add route %s via %s: %w", r, s.link.Attrs().Name, err)
		}
		s.routes[r] = true
		addedR = append(addedR, r)
	}
	for p := range w.sysctls {
		if _, ok := s.sysctls[p]; ok || (s.no6 && p == sysctlForward6) {
			continue
		}
		prev, err := readSysctl(p)
		if err != nil {
			undo()
			return err
		}
		if prev == "1" {
			continue // already on; nothing of ours to restore
		}
		if err := writeSysctl(p, "1"); err != nil {
			undo()
			return err
		}
		s.sysctls[p] = prev
		setS = append(setS, p)
	}
	return nil
}

// prune removes what we installed and w no longer has. Failures are logged:
// the new configuration is already in force and a leftover route is
// harmless until the next Reconfig or Close retries it.
func (s *system) prune(w sysWant) {
	for r := range s.routes {
		if w.routes[r] {
			continue
		}
		if err := s.h.RouteDel(s.nlRoute(r)); err != nil && !gone(err) {
			s.log.Warn("remove route", "route", r, "error", err)
			continue
		}
		delete(s.routes, r)
	}
	for a := range s.addrs {
		if w.addrs[a] {
			continue
		}
		if err := s.h.AddrDel(s.link, s.nlAddr(a)); err != nil && !gone(err) {
			s.log.Warn("remove address", "address", a, "error", err)
			continue
		}
		delete(s.addrs, a)
	}
	for p, prev := range s.sysctls {
		if w.sysctls[p] {
			continue
		}
		if err := writeSysctl(p, prev); err != nil {
			s.log.Warn("restore sysctl", "sysctl", p, "error", err)
			continue
		}
		delete(s.sysctls, p)
	}
}

// close removes everything we installed and releases the netlink handle.
func (s *system) close() {
	s.prune(sysWant{})
	s.h.Close()
}

// ipv6Off reports whether the kernel refuses IPv6 on the device: IPv6 is
// not compiled in or disabled at boot (no per-device sysctl), or the
// device's disable_ipv6 is 1.
func (s *system) ipv6Off() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + s.link.Attrs().Name + "/disable_ipv6")
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// gone reports whether a delete failed because the object (or its device)
// no longer exists, which is the outcome a delete wants.
func gone(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT)
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("overlay: read %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(path, v string) error {
	if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
		return fmt.Errorf("overlay: write %s: %w", path, err)
	}
	return nil
}
