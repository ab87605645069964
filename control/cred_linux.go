//go:build linux

package control

import (
	"fmt"
	"net"
	"syscall"
)

// connCred reads the peer's credentials of a unix socket connection with
// SO_PEERCRED and adds its supplementary groups from procRoot.
func connCred(c net.Conn, procRoot string) (peerCred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peerCred{}, fmt.Errorf("control: connection is %T, not a unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peerCred{}, fmt.Errorf("control: peer credentials: %w", err)
	}
	var uc2 *syscall.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		uc2, serr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return peerCred{}, fmt.Errorf("control: peer credentials: %w", err)
	}
	if serr != nil {
		return peerCred{}, fmt.Errorf("control: SO_PEERCRED: %w", serr)
	}
	cred := peerCred{PID: uc2.Pid, UID: uc2.Uid, GID: uc2.Gid}
	if cred.PID > 0 {
		// Without /proc (or after the caller exited) only the primary gid
		// counts, which is the safe direction to fail in.
		if groups, err := procGroups(procRoot, cred.PID, cred.UID, cred.GID); err == nil {
			cred.Groups = groups
		}
	}
	return cred, nil
}
