package overlay

import (
	"encoding/binary"
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
)

// DefaultMaxFlows is the connection-tracking capacity when Options.MaxFlows is
// zero.
const DefaultMaxFlows = 65536

// ctShardBits sets the number of conntrack shards (1<<ctShardBits). Each
// shard has its own lock, so links receiving on different goroutines and the
// TUN reader rarely wait for each other.
const ctShardBits = 5

// evictScan bounds how many entries an insert into a full shard looks at for
// an expired one or a victim.
const evictScan = 16

// flowKey names a flow from this node's point of view, so both directions of
// a flow map to the same key. It is a fixed-size comparable struct: map
// lookups and updates of existing keys do not allocate.
type flowKey struct {
	local, remote [16]byte // IPv4 addresses as IPv4-mapped IPv6
	lport, rport  uint16   // ICMP echo: lport is the identifier, rport 0
	proto         uint8
	v6            bool
}

// flowEntry is the tracked state of one flow.
type flowEntry struct {
	expire int64  // data-path clock, nanoseconds
	gen    uint64 // firewall generation that last admitted the flow
	// peer is the flow's peer (peerState.id): only packets to or from that
	// peer belong to it. Another peer's packet with the same addresses and
	// ports is no reply of this flow; its own rules decide it.
	peer  uint64
	flags uint8
}

// peerSeed keys the peer ids of flows: stable for the process, so a peer
// keeps its id across Reconfigs and its flows survive them.
var peerSeed = maphash.MakeSeed()

// peerID is the flow id of the peer called name.
func peerID(name string) uint64 { return maphash.String(peerSeed, name) }

const (
	flowInbound = 1 << iota // the flow was started by a peer
	flowClosing             // TCP FIN or RST seen
)

// flowKeyOf returns the key of p's flow, p travelling in the given direction.
func flowKeyOf(p *packet, inbound bool) flowKey {
	local, remote := p.src, p.dst
	lport, rport := p.srcPort, p.dstPort
	if inbound {
		local, remote = remote, local
		lport, rport = rport, lport
	}
	if p.isEcho() {
		lport, rport = p.icmpID, 0
	}
	return flowKey{local: local.As16(), remote: remote.As16(), lport: lport, rport: rport, proto: p.proto, v6: p.v6}
}

func (k *flowKey) addr(b *[16]byte) netip.Addr {
	a := netip.AddrFrom16(*b)
	if !k.v6 {
		return a.Unmap()
	}
	return a
}

// view reconstructs the first packet of the flow for re-checking it against
// new rules.
func (k *flowKey) view(inbound bool, f *flowView) {
	f.proto = k.proto
	f.remote = k.addr(&k.remote)
	f.local = k.addr(&k.local)
	f.hasPorts = k.proto == protoTCP || k.proto == protoUDP
	f.dport = k.rport
	if inbound {
		f.dport = k.lport
	}
}

func (k *flowKey) shard() int {
	h := binary.LittleEndian.Uint64(k.remote[8:])*0x9E3779B97F4A7C15 ^
		binary.LittleEndian.Uint64(k.remote[:8]) ^
		binary.LittleEndian.Uint64(k.local[8:])*0xC2B2AE3D27D4EB4F ^
		uint64(k.lport)<<32 ^ uint64(k.rport)<<16 ^ uint64(k.proto)
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	return int(h >> (64 - ctShardBits))
}

// conntrack is the table of tracked flows. It outlives firewall swaps: flows
// survive a Reconfig and are re-checked against the new rules (see
// flowEntry.gen).
//
// A full table is shared fairly between peers: a new flow in a full shard
// takes the place of an expired flow, else of a flow of the peer holding the
// most entries in that shard (its own peer's on a tie), and is not tracked
// when every candidate belongs to a peer holding fewer entries there than
// its own. So a peer opening flows in a loop evicts its own flows, never
// those of a peer that holds fewer: the others keep theirs.
//
// Lock rules: each shard's mu guards only that shard's maps. No code holds
// two shard locks at once, and nothing else is locked while one is held.
type conntrack struct {
	shards   [1 << ctShardBits]ctShard
	perShard int // capacity of one shard

	evicted   atomic.Uint64 // live flows dropped to make room
	untracked atomic.Uint64 // new flows not tracked: full shard, their peer held the most
}

type ctShard struct {
	mu sync.Mutex
	m  map[flowKey]flowEntry
	// perPeer counts m's entries (live or not yet swept) by flowEntry.peer;
	// peers with none have no key, so it is never larger than m.
	perPeer map[uint64]int32
	_       [32]byte // keep shards on separate cache lines
}

func newConntrack(maxFlows int) *conntrack {
	ct := &conntrack{perShard: max(1, maxFlows>>ctShardBits)}
	for i := range ct.shards {
		// Start small; maps grow per new flow (allowed), never per packet.
		ct.shards[i].m = make(map[flowKey]flowEntry, min(ct.perShard, 64))
		ct.shards[i].perPeer = make(map[uint64]int32, 8)
	}
	return ct
}

// deleteLocked removes k (holding entry e) from the shard.
func (sh *ctShard) deleteLocked(k flowKey, e *flowEntry) {
	delete(sh.m, k)
	if n := sh.perPeer[e.peer] - 1; n > 0 {
		sh.perPeer[e.peer] = n
	} else {
		delete(sh.perPeer, e.peer)
	}
}

type refreshResult int

const (
	flowMiss    refreshResult = iota // not tracked (or expired)
	flowPass                         // tracked and allowed; refreshed
	flowRecheck                      // tracked but the current rules no longer allow it; removed
)

// refresh looks k up. A live flow admitted under the current firewall
// generation, or one the current rules still allow, is refreshed and passes.
func (ct *conntrack) refresh(fw *compiledFirewall, k flowKey, peer *peerState, closing bool, now int64) refreshResult {
	sh := &ct.shards[k.shard()]
	sh.mu.Lock()
	e, ok := sh.m[k]
	if !ok {
		sh.mu.Unlock()
		return flowMiss
	}
	if e.expire <= now {
		sh.deleteLocked(k, &e)
		sh.mu.Unlock()
		return flowMiss
	}
	if e.peer != peer.id {
		// Same addresses and ports, another peer: not this flow's packet.
		sh.mu.Unlock()
		return flowMiss
	}
	if e.gen != fw.gen {
		var f flowView
		k.view(e.flags&flowInbound != 0, &f)
		if !fw.allows(e.flags&flowInbound != 0, &f, peer) {
			sh.deleteLocked(k, &e)
			sh.mu.Unlock()
			return flowRecheck
		}
		e.gen = fw.gen
	}
	if closing {
		e.flags |= flowClosing
	}
	e.expire = now + fw.timeout(k.proto, e.flags&flowClosing != 0)
	sh.m[k] = e
	sh.mu.Unlock()
	return flowPass
}

// has reports whether k is a live flow with peer, without refreshing it.
func (ct *conntrack) has(k flowKey, peer uint64, now int64) bool {
	sh := &ct.shards[k.shard()]
	sh.mu.Lock()
	e, ok := sh.m[k]
	sh.mu.Unlock()
	return ok && e.expire > now && e.peer == peer
}

// insert adds or replaces k. A full shard makes room as the conntrack type
// describes (makeRoomLocked), so a flood of new flows neither grows the
// table without bound nor evicts other peers' flows.
func (ct *conntrack) insert(k flowKey, e flowEntry, now int64) {
	sh := &ct.shards[k.shard()]
	sh.mu.Lock()
	old, exists := sh.m[k]
	switch {
	case exists:
		if old.peer != e.peer {
			sh.deleteLocked(k, &old)
			sh.perPeer[e.peer]++
		}
	case len(sh.m) >= ct.perShard && !ct.makeRoomLocked(sh, e.peer, now):
		ct.untracked.Add(1)
		sh.mu.Unlock()
		return
	default:
		sh.perPeer[e.peer]++
	}
	sh.m[k] = e
	sh.mu.Unlock()
}

// makeRoomLocked frees one entry of the full shard sh for a new flow of
// peer, or reports false: among the first evictScan entries (map order is
// random) the first expired one, else one of the peer holding the most
// entries in the shard, the new flow's own peer winning ties; another
// peer's only if it holds more entries than the new flow's peer.
func (ct *conntrack) makeRoomLocked(sh *ctShard, peer uint64, now int64) bool {
	var (
		victim  flowKey
		ve      flowEntry
		best    int32 = -1
		scanned int
	)
	for vk, e := range sh.m {
		if e.expire <= now {
			sh.deleteLocked(vk, &e)
			return true
		}
		n := sh.perPeer[e.peer]
		if n > best || (n == best && e.peer == peer) {
			victim, ve, best = vk, e, n
		}
		if scanned++; scanned >= evictScan {
			break
		}
	}
	if best < 0 || (ve.peer != peer && best <= sh.perPeer[peer]) {
		return false
	}
	sh.deleteLocked(victim, &ve)
	ct.evicted.Add(1)
	return true
}

// sweep deletes expired flows. The janitor goroutine calls it; lookups treat
// expired flows as absent anyway, so sweeping only returns memory.
func (ct *conntrack) sweep(now int64) {
	for i := range ct.shards {
		sh := &ct.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.expire <= now {
				sh.deleteLocked(k, &e)
			}
		}
		sh.mu.Unlock()
	}
}

// len returns the number of entries, live or not yet swept.
func (ct *conntrack) len() int {
	n := 0
	for i := range ct.shards {
		sh := &ct.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
