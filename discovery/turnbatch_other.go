//go:build !linux

package discovery

import (
	"errors"
	"net"
	"net/netip"
)

// Elsewhere than Linux the embedded TURN server forwards through pion
// alone (turnfast.go is not used).

const batchIOSupported = false

type batchConn struct{}
type rxBatch struct {
	bufs  [][]byte
	sizes []int
	srcs  []netip.AddrPort
}
type txBatch struct{}

var errNoBatchIO = errors.New("discovery: batched UDP I/O is Linux-only")

func newBatchConn(*net.UDPConn) (*batchConn, error)                { return nil, errNoBatchIO }
func newRxBatch(int, int, int) *rxBatch                            { return &rxBatch{} }
func newTxBatch(int) *txBatch                                      { return &txBatch{} }
func (c *batchConn) setBuffers(int)                                {}
func (c *batchConn) read(*rxBatch) (int, error)                    { return 0, errNoBatchIO }
func (c *batchConn) send(*txBatch, [][]byte, netip.AddrPort) error { return errNoBatchIO }
