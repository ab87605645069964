// Package tunnel owns a node's peer links: for each peer one ICE agent
// (pion/ice) that finds a path (host, server-reflexive, or relayed through
// TURN), one DTLS session (pion/dtls) over the pair it selects, with both
// certificates checked by pki.Verifier against the peer the registry says
// this is, and the data keys derived from that session. A Manager holds the
// node's UDP port (one socket per address family, shared by every link, so a
// firewall needs one hole), its credentials, the STUN/TURN servers and the
// signaling hooks; Manager.Link returns the Link for a peer, which satisfies
// overlay.PeerConn.
//
// Each link is a state machine run by one goroutine (fsm.go): it signals
// (signal.go documents the wire format), gathers and checks candidates,
// handshakes, carries packets, watches the path and moves between relayed and
// direct pairs without a new handshake (path.go), and restarts ICE with
// exponential backoff and jitter when a session fails. Events go to
// subscribers in order on a notifier goroutine.
//
// # Roles
//
// The node with the smaller certificate fingerprint (Peer.Fingerprint) is the
// ICE-controlling agent and the DTLS client; the other is controlled and the
// DTLS server. Both sides compute the same roles from the registry, so two
// nodes that start at once never race.
//
// # What the daemon wires
//
//   - Options.Signaler: discovery's session client; Manager.HandleSignal for
//     every signal discovery delivers (from = the sender's node name).
//   - Options.Servers: the coordinators' STUN/TURN URLs with the current TURN
//     credentials (called at the start of every attempt).
//   - Options.LinkDownError = overlay.ErrLinkDown, so WriteBatch's errors
//     match the overlay's sentinel; Options.ExcludePrefixes = the overlay
//     prefix, so no link runs over the overlay.
//   - Manager.Link for each registry peer, Manager.Remove for peers that left;
//     Link.SetReceiver to hand received packets to the overlay.
//   - Options.Cipher, Timers.RekeyInterval and Options.RekeyAfterRecords from
//     the [data] settings (record.ParseCipher parses the cipher names).
//   - Manager.Recheck after Verifier.UpdateCRL, so links to peers the new
//     CRL revokes end at once (it also runs every 10 s).
//
// # Data path
//
// DTLS authenticates and agrees keys; packets do not go through it. After
// each handshake both sides derive per-direction AEAD keys with the RFC 5705
// exporter (package record) and carry every packet as one data record:
// DTLS-1.2-shaped, in an epoch range pion never uses, sealed and opened in
// place in the caller's or the reader's buffers. The dtls.Conn stays open as
// the session's control channel (alerts, close_notify, rekey messages).
// Rekeying is a fresh DTLS handshake on the same ICE connection, on a timer
// and a record count, with the old epoch accepted during an overlap
// (keys.go).
//
// The pipeline, file by file:
//
//   - socket.go, socket_linux.go: the sockets, read and written in batches
//     on Linux (recvmmsg/sendmmsg, UDP_GRO/UDP_SEGMENT), no allocation;
//   - demux.go: the receive side: datagrams classified by first byte and
//     epoch; STUN and DTLS to pion's ICE mux (muxconn.go), data records to
//     the link their source address routes to, opened, and delivered as one
//     batch per link per socket batch;
//   - datapath.go: WriteBatch seals a batch in place and sends it with one
//     sendmmsg (GSO) on a direct path, through the TURN allocation on a
//     relayed one;
//   - relayfast.go: a relayed path over a UDP TURN allocation, once pion
//     has bound a channel to the peer: records framed as ChannelData in
//     place and sent with one sendmmsg (GSO) on the relay socket, received
//     in batches (recvmmsg, GRO) and opened there;
//   - relaystream.go: the same over a TCP or TLS TURN allocation: a batch
//     framed as ChannelData (padded to 4) and written to the stream in one
//     write, the stream read in chunks whose frames are parsed, opened and
//     delivered one batch per chunk; other frames go to pion unchanged;
//   - dtlsconn.go: what arrives on the ICE connection (DTLS, and records of
//     relayed paths), the DTLS transports and control readers.
//
// MaxOverhead is what a link adds per packet.
package tunnel
