// Package tunnel owns a node's peer links: for each peer one ICE agent
// (pion/ice) that finds a path (host, server-reflexive, or relayed through
// TURN), and one DTLS session (pion/dtls) over the pair it selects, with both
// certificates checked by pki.Verifier against the peer the registry says
// this is. A Manager holds the node's one UDP socket (shared by every link
// through pion's UDP mux, so a firewall needs one hole), its credentials, the
// STUN/TURN servers and the signaling hooks; Manager.Link returns the Link
// for a peer, which satisfies overlay.PeerConn.
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
//   - Manager.Recheck after Verifier.UpdateCRL, so links to peers the new
//     CRL revokes end at once (it also runs every 10 s).
//
// # Data path
//
// This version sends one DTLS application record per packet through the
// pion/dtls connection (datapath.go); the batch-shaped WriteBatch/SetReceiver
// boundary stays when a zero-allocation record path replaces the insides.
// MaxOverhead is what a link adds per packet.
package tunnel
