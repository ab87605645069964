//go:build !linux

package tunnel

import (
	"errors"
	"net/netip"
)

var errNoNetlink = errors.New("tunnel: interface classification needs Linux netlink")

// SystemLinks is not available off Linux: every interface is then used,
// as the configuration's patterns allow.
func SystemLinks() ([]LinkInfo, error) { return nil, errNoNetlink }

func routeInterface(netip.Addr) (string, error) { return "", errNoNetlink }
