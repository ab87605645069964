//go:build linux

package discovery

/* Batched UDP I/O for the TURN relay's fast path (turnfast.go)
 *
 * internal/udpbatch's recvmmsg into a reader's slot buffers (each datagram
 * at a fixed offset, so a ChannelData header can be put in front of it in
 * place) and its sendmmsg of a run of datagrams to one destination, runs
 * of equal-sized datagrams GSO-coalesced with UDP_SEGMENT. Neither
 * direction allocates. No UDP_GRO (relay traffic from many peers rarely
 * coalesces).
 */

import (
	"net"
	"net/netip"

	"github.com/meshd/meshd/internal/udpbatch"
)

const batchIOSupported = true

// batchConn is a UDP socket read and written in batches.
type batchConn struct{ c *udpbatch.Conn }

func newBatchConn(uc *net.UDPConn) (*batchConn, error) {
	c, err := udpbatch.New(uc)
	if err != nil {
		return nil, err
	}
	return &batchConn{c: c}, nil
}

// setBuffers asks for kernel buffers of size bytes (best effort).
func (c *batchConn) setBuffers(size int) { c.c.SetBuffers(size) }

// rxBatch is one reader's receive state. Not safe for concurrent use.
type rxBatch struct {
	bufs  [][]byte // slot buffers
	sizes []int    // -1: truncated
	srcs  []netip.AddrPort

	views [][]byte // bufs[i][off:]: where datagram i is read
	rx    *udpbatch.Rx
}

func newRxBatch(n, slotSize, off int) *rxBatch {
	r := &rxBatch{
		bufs: make([][]byte, n), sizes: make([]int, n), srcs: make([]netip.AddrPort, n),
		views: make([][]byte, n), rx: udpbatch.NewRx(n, 0),
	}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, slotSize)
		r.views[i] = r.bufs[i][off:]
	}
	return r
}

// read fills r with datagrams, datagram i at r.bufs[i][off:], and
// returns how many.
func (c *batchConn) read(r *rxBatch) (int, error) {
	n, err := c.c.Recv(r.rx, r.views)
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		r.sizes[i] = r.rx.Size(i)
		r.srcs[i] = r.rx.Src(i)
	}
	return n, nil
}

// txBatch is one sender's scratch. Not safe for concurrent use.
type txBatch = udpbatch.Tx

func newTxBatch(n int) *txBatch { return udpbatch.NewTx(n) }

// send sends every datagram of msgs to dst, GSO-coalescing runs of
// equal-sized ones. borrowed: msgs are not retained.
func (c *batchConn) send(t *txBatch, msgs [][]byte, dst netip.AddrPort) error {
	if err := c.c.Send(t, msgs, dst); err != udpbatch.ErrFamily {
		return err
	}
	return errRelayFamily
}
