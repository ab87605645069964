package tunnel

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SystemLinks lists the host's interfaces with what Classify needs, from
// netlink: kinds, flags, addresses and which carry a default route of the
// main table.
func SystemLinks() ([]LinkInfo, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("tunnel: list interfaces: %w", err)
	}
	defaults := map[int]bool{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, fam) // the main table
		if err != nil {
			return nil, fmt.Errorf("tunnel: list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			defaults[r.LinkIndex] = true
			for _, nh := range r.MultiPath {
				defaults[nh.LinkIndex] = true
			}
		}
	}
	out := make([]LinkInfo, 0, len(links))
	for _, l := range links {
		a := l.Attrs()
		li := LinkInfo{
			Name:         a.Name,
			Kind:         l.Type(),
			Encap:        a.EncapType,
			Up:           a.RawFlags&unix.IFF_UP != 0,
			Loopback:     a.RawFlags&unix.IFF_LOOPBACK != 0,
			PointToPoint: a.RawFlags&unix.IFF_POINTOPOINT != 0,
			NoARP:        a.RawFlags&unix.IFF_NOARP != 0,
			DefaultRoute: defaults[a.Index],
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("tunnel: addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if ip, ok := netip.AddrFromSlice(ad.IP); ok {
				li.Addrs = append(li.Addrs, ip.Unmap())
			}
		}
		out = append(out, li)
	}
	return out, nil
}

// routeInterface names the interface the main routing decision sends a
// datagram for dst out of.
func routeInterface(dst netip.Addr) (string, error) {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil {
		return "", err
	}
	if len(routes) == 0 {
		return "", fmt.Errorf("tunnel: no route to %v", dst)
	}
	l, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", err
	}
	return l.Attrs().Name, nil
}
