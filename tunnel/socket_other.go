//go:build !linux

package tunnel

import (
	"errors"
	"net"
	"net/netip"
)

// Elsewhere than Linux the shared socket is read and written one datagram
// at a time through the generic path (socket.go).

const fastSocketsSupported = false

type fastConn struct{ conn *net.UDPConn }
type fastRx struct{}
type fastTx struct{}

var errNoFastSockets = errors.New("tunnel: batched UDP I/O is Linux-only")

func newFastConn(*net.UDPConn, int, bool) (*fastConn, error) { return nil, errNoFastSockets }

func (f *fastConn) enableGRO() {}

func (f *fastConn) bufferSizes() (int, int)                      { return 0, 0 }
func (f *fastConn) newRx(int) *fastRx                            { return &fastRx{} }
func (f *fastConn) readBatch(*fastRx, *rxBatch) (int, error)     { return 0, errNoFastSockets }
func (f *fastConn) send(*fastTx, [][]byte, netip.AddrPort) error { return errNoFastSockets }
func (f *fastConn) writeTo([]byte, netip.AddrPort) (int, error)  { return 0, errNoFastSockets }
func (f *fastConn) overflows() uint32                            { return 0 }
func (f *fastConn) offloads() (gso, gro bool)                    { return false, false }
