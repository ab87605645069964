package dns

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenConfig returns the ListenConfig of the listeners: with freeBind
// the sockets may bind an address the host does not have yet.
func listenConfig(freeBind bool) *net.ListenConfig {
	if !freeBind {
		return &net.ListenConfig{}
	}
	return &net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			if network == "udp6" || network == "tcp6" {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
}
