// Package overlay is the node's packet engine. It owns the TUN device (a
// kernel TUN, or a gVisor netstack in userspace mode), the routing table that
// maps destination addresses to peers by longest prefix, anti-spoofing of
// what peers send, the stateful firewall with its connection tracking, and
// the two packet loops between the TUN and the peers' links.
//
// Peers' links are PeerConns (tunnel.Link satisfies the interface; overlay
// never imports tunnel). The daemon computes the complete desired state as a
// Config and applies it with Reconfig, which swaps an immutable snapshot
// (routes, peers, compiled firewall) under the data path atomically.
//
// The data path is split by direction: inside.go (TUN → peers) and
// outside.go (peers → TUN); each starts with its pipeline. It moves batches,
// and per packet it allocates nothing, starts no goroutine, sends on no
// channel, logs nothing and takes no global lock; drops are counted by reason
// (Stats).
//
// Lock order: Interface.cfgMu, then Interface.writeMu, then a conntrack
// shard's mu. The data path takes only writeMu (once per batch) and shard
// locks (one at a time). PeerConn.SetReceiver is called with cfgMu held;
// receivers never take cfgMu, so a link may wait in SetReceiver for its
// in-flight receive to finish. Options.OnLinkNeeded runs with no lock held
// and may call Reconfig.
package overlay
