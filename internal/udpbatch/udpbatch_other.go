//go:build !linux

package udpbatch

import (
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// Supported reports whether New can succeed on this platform.
const Supported = false

// Conn is not available elsewhere than Linux.
type Conn struct{ GSO atomic.Bool }

// Rx is not available elsewhere than Linux.
type Rx struct{}

// Tx is not available elsewhere than Linux.
type Tx struct{}

// Control is what ParseControl found in one datagram's control messages.
type Control struct {
	GROSize int
	Ovfl    uint32
	HasOvfl bool
	RxTime  int64
}

func New(*net.UDPConn) (*Conn, error)                             { return nil, ErrUnsupported }
func NewRx(int, int) *Rx                                          { return &Rx{} }
func NewTx(int) *Tx                                               { return &Tx{} }
func ParseControl([]byte) Control                                 { return Control{} }
func (c *Conn) RawConn() syscall.RawConn                          { return nil }
func (c *Conn) V6() bool                                          { return false }
func (c *Conn) SetBuffers(int)                                    {}
func (c *Conn) Recv(*Rx, [][]byte) (int, error)                   { return 0, ErrUnsupported }
func (c *Conn) Send(*Tx, [][]byte, netip.AddrPort) error          { return ErrUnsupported }
func (c *Conn) SendGSO(*Tx, [][]byte, netip.AddrPort, bool) error { return ErrUnsupported }
func (r *Rx) Size(int) int                                        { return 0 }
func (r *Rx) Src(int) netip.AddrPort                              { return netip.AddrPort{} }
func (r *Rx) Control(int) []byte                                  { return nil }
