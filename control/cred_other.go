//go:build !linux

package control

import (
	"errors"
	"net"
)

// connCred is Linux-only (SO_PEERCRED); elsewhere every caller is refused.
func connCred(net.Conn, string) (peerCred, error) {
	return peerCred{}, errors.New("control: peer credentials are only supported on Linux")
}
