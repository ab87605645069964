// Package discovery owns how meshd nodes find each other: the coordinator
// tier (a memberlist cluster that replicates the node registry, serves node
// sessions, routes signals between nodes, propagates CRLs and runs embedded
// STUN/TURN) and the node's session client.
//
// # Trust
//
// Coordinators relay, they never vouch. Every registry record is signed by
// the node's own key over its canonical encoding and carries the node's
// certificate; every receiver (coordinator or node) verifies the certificate
// with pki.Verifier (chain to the CA, validity, revocation), the signature,
// and that the record claims no address, group or route the certificate does
// not bind. Versions are unix nanoseconds at signing, strictly increasing per
// node, so a replayed older record loses; receivers refuse versions more
// than MaxVersionSkew ahead of their clock, and a node follows a
// coordinator's "stale, holding v" only within that skew, so versions can
// neither be pushed to wrap nor pin a node's entry. Presence (which
// coordinator holds a node's session, since when) is the only
// coordinator-asserted data.
//
// Only coordinators act as coordinators: a node accepts a session only from
// a certificate with the coordinator role (optionally pinned by name), a
// coordinator needs the role to start, and coordinators forward signals,
// duplicate-identity questions and reliable fan-out only to members that
// proved the role with a signed Hello (roles.go, gossipauth.go).
//
// # Limits
//
// Every count and length read from the wire is bounded before it sizes
// anything (ErrLimitExceeded); the registry, hence a snapshot, holds at most
// MaxRegistryEntries records; a node stops reading its session while its
// subscribers lag. Unauthenticated connections are capped per source and in
// total (admission.go); every frame kind has a per-session token bucket and
// a session that keeps flooding is closed (CodeFlooding); a CRL is verified
// once per distinct CRL, off the run loop (crlcache.go) (docs/protocol.md,
// "Limits").
//
// # Coordinator restarts
//
// A coordinator with a StateDir keeps a copy of its registry on disk and
// loads it at Start (coordcache.go), keeping the nodes its previous
// incarnation held online for StartGrace. Without one (or when a node fails
// over to a coordinator that has not caught up) a snapshot holds only the
// nodes registered so far, so a node keeps the peers a snapshot lacks for
// ClientOptions.AbsenceGrace; only a Remove, a tombstone, a revocation or
// absence beyond the grace period removes a peer.
//
// # Replication
//
// Changes travel on memberlist's broadcast queue (named broadcasts, so a
// newer message about a node replaces an older one still queued) when they
// fit a gossip packet and the queue is shallow, and otherwise as batched
// reliable streams to every live coordinator. Receivers re-gossip what was
// new to them. Push/pull anti-entropy (LocalState/MergeRemoteState) repairs
// anything lost, so late joiners and healed partitions converge; coordinators
// re-join configured peers periodically so that a partition longer than
// memberlist's dead-node gossip still heals. Departed nodes leave signed
// tombstones that block their older records until TombstoneTTL.
//
// # Duplicate identities
//
// One node name, one session: when a second host registers a node whose
// session is held and alive (a machine cloned with the node's certificate
// and key), the established session wins and the newcomer is refused with
// CodeDuplicateIdentity naming the holder's address. The coordinator that
// holds the session decides whether it is alive (a session silent for two
// keepalive intervals while its node is claimed is presumed dead), and is
// asked over gossip when the claim arrives elsewhere (duplicate.go;
// docs/protocol.md, "Duplicate identities").
//
// # Goroutines and ownership
//
// Coordinator: the run goroutine owns the registry, the session table, the
// forwarded-signal table and the peer senders; sessions (one reader, one
// writer each) and memberlist's delegate only queue to it, and it only
// queues to them, dropping (and counting) rather than blocking. Client: the
// run goroutine owns the registry copy, the session and pending signals;
// changes reach subscribers through an ordered notifier goroutine and
// signals reach OnSignal through another, so callbacks never run on the
// owner. No mutex is held while calling out; the only mutexes guard the
// notifier's queue, the delegate's member copies and the TURN quota map,
// and none is taken while holding another.
//
// Wire formats (session frames, records, gossip messages, the cache file)
// are documented in docs/protocol.md.
package discovery
