package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vpn is another VPN on the host, the way a sysadmin's WireGuard or Nebula
// would be beside meshd: a TUN device named dev whose IP packets travel in
// UDP datagrams between listen and to (the other host's labtool vpn). It
// prints "ready" once the device exists; the caller gives it an address
// and sets it up. It runs until SIGTERM or SIGINT.
func vpn(dev, listen, to string) error {
	if dev == "" || listen == "" || to == "" {
		return fmt.Errorf("vpn: -dev, -listen and -to are required")
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("vpn: %w", err)
	}
	var req struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [40 - unix.IFNAMSIZ - 2]byte
	}
	copy(req.name[:], dev)
	req.flags = unix.IFF_TUN | unix.IFF_NO_PI
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); errno != 0 {
		return fmt.Errorf("vpn: TUNSETIFF %s: %w", dev, errno)
	}
	tun := os.NewFile(uintptr(fd), "/dev/net/tun")
	defer tun.Close()
	laddr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return fmt.Errorf("vpn: %w", err)
	}
	raddr, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		return fmt.Errorf("vpn: %w", err)
	}
	conn, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return fmt.Errorf("vpn: %w", err)
	}
	defer conn.Close()
	fmt.Println("ready")

	errc := make(chan error, 2)
	go func() { // TUN → UDP
		buf := make([]byte, 65535)
		for {
			n, err := tun.Read(buf)
			if err != nil {
				errc <- err
				return
			}
			if _, err := conn.WriteToUDP(buf[:n], raddr); err != nil {
				continue // the peer may not listen yet
			}
		}
	}()
	go func() { // UDP → TUN
		buf := make([]byte, 65535)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				errc <- err
				return
			}
			_, _ = tun.Write(buf[:n])
		}
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		return nil
	case err := <-errc:
		return fmt.Errorf("vpn: %w", err)
	}
}
