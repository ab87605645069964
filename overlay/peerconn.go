package overlay

// HeaderRoom is the number of bytes the overlay leaves free in front of every
// packet it hands to a PeerConn (bufs[i][:HeaderRoom]), and expects in front of
// every packet a PeerConn hands back. Links seal records in place into this room
// (DTLS record header, TURN ChannelData header), so the data path never copies a
// packet to prepend a header. It also covers wireguard/tun's virtio-net header.
const HeaderRoom = 64

// ReceiveFunc takes a batch of packets that a link received from its peer and
// decrypted: packet i is bufs[i][offset:]. It is called from the link's reader
// goroutine, one batch at a time per link; calls for different links may run
// concurrently.
//
// borrowed: bufs and their contents belong to the link and are valid only until
// the call returns. The function must not retain them, but it may overwrite
// them during the call: the overlay writes the virtio-net header into
// bufs[i][:offset] and the kernel TUN's GRO coalesces segments of one flow into
// the spare capacity of the first packet's buffer. Links that hand back buffers
// with spare capacity (cap well beyond the packet) let the kernel see fewer,
// larger segments. offset must be at least HeaderRoom; a batch with a smaller
// offset is dropped as malformed.
//
// It is an alias, not a defined type, so that tunnel.Link satisfies PeerConn
// without importing overlay.
type ReceiveFunc = func(bufs [][]byte, offset int)

// PeerConn is one peer's link as the overlay sees it. tunnel.Link satisfies it;
// overlay never imports tunnel, and tests use an in-memory double.
//
// The interface is batch-shaped so that the fast data path can replace the
// link's insides without changing anything above it.
type PeerConn interface {
	// WriteBatch sends packets bufs[i][offset:] to the peer, in order. The link
	// may overwrite bufs[i][:offset] (header room, offset >= HeaderRoom) and the
	// tail capacity of each buffer for its AEAD tag. It returns how many packets
	// were handed to the network and an error wrapping ErrLinkDown when the link
	// cannot carry traffic now. Safe for concurrent use.
	//
	// borrowed: bufs belong to the caller and are valid only during the call.
	WriteBatch(bufs [][]byte, offset int) (int, error)

	// SetReceiver installs where the link delivers what it receives; nil
	// discards. The overlay calls it when it adopts the link in Reconfig, and
	// again with nil when it lets the link go. Safe for concurrent use.
	SetReceiver(fn ReceiveFunc)
}
