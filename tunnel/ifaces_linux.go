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
		has := make([]HostAddr, 0, len(addrs))
		for _, ad := range addrs {
			ip, ok := netip.AddrFromSlice(ad.IP)
			if !ok {
				continue
			}
			h := HostAddr{Addr: ip.Unmap()}
			if h.Addr.Is6() { // IFA_F_TEMPORARY is IFA_F_SECONDARY on IPv4
				h.Tentative = ad.Flags&unix.IFA_F_TENTATIVE != 0 && ad.Flags&unix.IFA_F_OPTIMISTIC == 0
				h.DADFailed = ad.Flags&unix.IFA_F_DADFAILED != 0
				h.Deprecated = ad.Flags&unix.IFA_F_DEPRECATED != 0
				h.Temporary = ad.Flags&unix.IFA_F_TEMPORARY != 0
			}
			has = append(has, h)
		}
		li.Addrs, li.Skipped = ChooseAddrs(has)
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
