package discovery

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Gossip messages between coordinators (docs/protocol.md, "Coordinator
// gossip"). Each is a memberlist user message (broadcast, SendReliable, or
// push/pull state) that starts with a one-byte type and a one-byte format
// version:
//
//	+--------+---------+------------------+
//	| type   | version | body             |
//	+--------+---------+------------------+
const (
	gossipVersion = 1

	gossipEntry        uint8 = 1 // presence + signed record
	gossipPresence     uint8 = 2 // node name + presence only
	gossipSignal       uint8 = 3 // a signal to a node whose session this coordinator holds
	gossipSignalResult uint8 = 4 // outcome of a forwarded signal
	gossipCRL          uint8 = 5 // CRL DER
	gossipBatch        uint8 = 6 // several of the above in one reliable send
	gossipState        uint8 = 7 // push/pull: the whole registry + CRL
	gossipDupQuery     uint8 = 8 // does the holder of a node's session still hold it? (duplicate identity)
	gossipDupAnswer    uint8 = 9 // answer to a DupQuery

	// maxAddrText bounds an "ip:port" text in a gossip message (the longest
	// IPv6 form with brackets and port is 47 bytes).
	maxAddrText = 64

	// maxBatchMessages bounds one Batch: a peer sender puts at most this
	// many queued messages (its whole queue) in one.
	maxBatchMessages = 4096
	maxBatchBytes    = 256 << 10
	// maxStateEntries bounds a push/pull State: it is one coordinator's
	// whole registry.
	maxStateEntries = MaxRegistryEntries
	maxStateBytes   = 16 << 20 // memberlist itself refuses more than 20 MiB
	maxCRLBytes     = MaxFrameSize
)

// gossipMsg is one decoded gossip message; which fields are set depends on typ.
type gossipMsg struct {
	typ uint8

	entry rawEntry // entry
	name  string   // presence: node
	pres  Presence // presence

	fwdID   uint64 // signal, signal result, dup query, dup answer
	origin  string // signal: coordinator that holds the sender's session; dup query: asking coordinator
	from    string // signal
	to      string // signal; dup query: node
	payload []byte // signal
	code    signalCode

	addr  string        // dup query: claimant's address; dup answer: holder's address
	held  bool          // dup answer: the session is held and answers keepalives
	retry time.Duration // dup answer: when the holder's liveness will be known

	at    int64  // hello: signing time (unix ns)
	cert  []byte // hello: the sender's certificate (DER)
	sig   []byte // hello: signature over helloSigned
	reply bool   // hello: the sender asks for this coordinator's Hello

	urls []string // relays: the sender's TURN URLs (signed with sig)

	crl     []byte     // crl, state
	entries []rawEntry // state
	batch   [][]byte   // batch: undecoded inner messages
}

func gossipHeader(w *wbuf, t uint8) { w.u8(t); w.u8(gossipVersion) }

func encodeGossipEntry(rec *Record) []byte {
	w := wbuf{b: make([]byte, 0, len(rec.raw)+96)}
	gossipHeader(&w, gossipEntry)
	encodeEntry(&w, rec)
	return w.b
}

func encodeGossipPresence(name string, p Presence) []byte {
	var w wbuf
	gossipHeader(&w, gossipPresence)
	w.str8(name)
	encodePresence(&w, p)
	return w.b
}

func encodeGossipSignal(id uint64, origin, from, to string, payload []byte) []byte {
	w := wbuf{b: make([]byte, 0, len(payload)+64)}
	gossipHeader(&w, gossipSignal)
	w.u64(id)
	w.str8(origin)
	w.str8(from)
	w.str8(to)
	w.bytes16(payload)
	return w.b
}

func encodeGossipSignalResult(id uint64, code signalCode) []byte {
	var w wbuf
	gossipHeader(&w, gossipSignalResult)
	w.u64(id)
	w.u8(uint8(code))
	return w.b
}

// encodeGossipDupQuery asks origin's peer holding node's session whether it
// still does; claimant is the address of the host that claims the node.
func encodeGossipDupQuery(id uint64, origin, node, claimant string) []byte {
	var w wbuf
	gossipHeader(&w, gossipDupQuery)
	w.u64(id)
	w.str8(origin)
	w.str8(node)
	w.str8(truncate(claimant, maxAddrText))
	return w.b
}

// encodeGossipDupAnswer answers a DupQuery: held says the session is held
// and alive (as far as the holder knows yet), holder is its address, retry
// when its liveness will be decided.
func encodeGossipDupAnswer(id uint64, held bool, holder string, retry time.Duration) []byte {
	var w wbuf
	gossipHeader(&w, gossipDupAnswer)
	w.u64(id)
	w.bool(held)
	w.str8(truncate(holder, maxAddrText))
	w.u32(uint32(min(max(retry, 0)/time.Millisecond, maxRetryHintMillis)))
	return w.b
}

// maxRetryHintMillis bounds a retry-after hint on the wire (gossip and
// session error frames): one hour, far beyond any hint a coordinator makes.
const maxRetryHintMillis = 3600 * 1000

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func encodeGossipCRL(der []byte) []byte {
	var w wbuf
	gossipHeader(&w, gossipCRL)
	w.bytes32(der)
	return w.b
}

func encodeGossipBatch(msgs [][]byte) []byte {
	n := 8
	for _, m := range msgs {
		n += 4 + len(m)
	}
	w := wbuf{b: make([]byte, 0, n)}
	gossipHeader(&w, gossipBatch)
	w.u32(uint32(len(msgs)))
	for _, m := range msgs {
		w.bytes32(m)
	}
	return w.b
}

func encodeGossipState(crl []byte, recs []*Record) []byte {
	n := 16 + len(crl)
	for _, r := range recs {
		n += len(r.raw) + 96
	}
	w := wbuf{b: make([]byte, 0, n)}
	gossipHeader(&w, gossipState)
	w.bytes32(crl)
	w.u32(uint32(len(recs)))
	for _, r := range recs {
		encodeEntry(&w, r)
	}
	return w.b
}

// decodeGossip decodes one gossip message. Byte slices in the result alias b
// except record bytes, which are copied.
func decodeGossip(b []byte) (gossipMsg, error) {
	r := rbuf{b: b}
	m := gossipMsg{typ: r.u8("gossip type")}
	if v := r.u8("gossip version"); r.err == nil && v != gossipVersion {
		return m, fmt.Errorf("%w: gossip message version %d (this build speaks %d)", ErrUnsupportedVersion, v, gossipVersion)
	}
	switch m.typ {
	case gossipEntry:
		m.entry = decodeEntry(&r)
	case gossipPresence:
		m.name = r.str8("node", maxNameLen)
		m.pres = decodePresence(&r)
	case gossipSignal:
		m.fwdID = r.u64("forward id")
		m.origin = r.str8("origin", maxNameLen)
		m.from = r.str8("from", maxNameLen)
		m.to = r.str8("to", maxNameLen)
		m.payload = r.bytes16("payload", MaxSignalPayload)
	case gossipSignalResult:
		m.fwdID = r.u64("forward id")
		m.code = signalCode(r.u8("code"))
	case gossipCRL:
		m.crl = r.bytes32("crl", maxCRLBytes)
	case gossipDupQuery:
		m.fwdID = r.u64("query id")
		m.origin = r.str8("origin", maxNameLen)
		m.to = r.str8("node", maxNameLen)
		m.addr = r.str8("claimant", maxAddrText)
	case gossipDupAnswer:
		m.fwdID = r.u64("query id")
		m.held = r.bool("held")
		m.addr = r.str8("holder", maxAddrText)
		ms := r.u32("retry after")
		if r.err == nil && ms > maxRetryHintMillis {
			r.failLimit("retry after ms", uint64(ms), maxRetryHintMillis)
		}
		m.retry = time.Duration(ms) * time.Millisecond
	case gossipHello:
		m.at = r.i64("time")
		m.from = r.str8("from", maxNameLen)
		m.to = r.str8("to", maxNameLen)
		m.reply = r.bool("reply")
		m.cert = r.bytes16("certificate", maxCertLen)
		m.sig = r.bytes16("signature", maxSigLen)
	case gossipRelays:
		decodeGossipRelays(&r, &m)
	case gossipBatch:
		n := r.count("batch count", maxBatchMessages)
		for i := 0; i < n && r.err == nil; i++ {
			m.batch = append(m.batch, r.bytes32("batch message", maxBatchBytes))
		}
	case gossipState:
		m.crl = r.bytes32("crl", maxCRLBytes)
		n := r.count("state entry count", maxStateEntries)
		for i := 0; i < n && r.err == nil; i++ {
			m.entries = append(m.entries, decodeEntry(&r))
		}
	default:
		if r.err == nil {
			return m, fmt.Errorf("%w: unknown gossip message type %d", ErrMalformed, m.typ)
		}
	}
	if err := r.done("gossip message"); err != nil {
		return m, err
	}
	return m, nil
}

// gossipIn is one inbound item from memberlist to the coordinator's run loop.
type gossipIn struct {
	msg   []byte // owned copy
	state bool   // push/pull remote state rather than a user message
	join  bool
}

// delegate is memberlist's view of the coordinator. Its methods are called
// concurrently from memberlist's packet and stream goroutines and must never
// block: they copy, push to a buffered channel, and drop with a counter when
// the run loop is behind (push/pull anti-entropy repairs what was dropped).
type delegate struct {
	meta    []byte
	queue   *memberlist.TransmitLimitedQueue
	inbox   chan gossipIn
	dropped *atomic.Uint64
	state   atomic.Pointer[[]byte] // latest encoded gossipState, maintained by the run loop
	events  chan struct{}          // cap 1: coalesced "membership changed"

	// mu guards members: copies of the live members' Node, taken in the
	// EventDelegate callbacks. memberlist calls those with its node lock
	// held, which is the only time a *memberlist.Node may be read without
	// racing its updates (Members() hands out pointers it keeps writing).
	mu      sync.Mutex
	members map[string]memberlist.Node
}

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

// NodeMeta is the coordinator's gossip format version.
func (d *delegate) NodeMeta(limit int) []byte {
	if len(d.meta) > limit {
		return nil
	}
	return d.meta
}

// NotifyMsg: called from memberlist's receive loops; must not block; buf is
// reused by the caller after return.
func (d *delegate) NotifyMsg(buf []byte) {
	if len(buf) == 0 {
		return
	}
	d.push(gossipIn{msg: bytes.Clone(buf)})
}

// GetBroadcasts: TransmitLimitedQueue is safe for concurrent use and does not block.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// LocalState returns the last state the run loop encoded (it re-encodes at
// most every sweep after a change), so push/pull never waits for it.
func (d *delegate) LocalState(join bool) []byte {
	if p := d.state.Load(); p != nil {
		return *p
	}
	return nil
}

// MergeRemoteState: buf is copied and merged by the run loop.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return
	}
	d.push(gossipIn{msg: bytes.Clone(buf), state: true, join: join})
}

func (d *delegate) push(in gossipIn) {
	select {
	case d.inbox <- in:
	default:
		d.dropped.Add(1)
	}
}

// NotifyJoin, NotifyLeave and NotifyUpdate copy the member and poke the run
// loop, which reconciles presence against the member list; coalescing makes
// a dropped poke harmless.
func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.setMember(n, true) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.setMember(n, false) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.setMember(n, true) }

func (d *delegate) setMember(n *memberlist.Node, alive bool) {
	d.mu.Lock()
	if alive {
		d.members[n.Name] = *n
	} else {
		delete(d.members, n.Name)
	}
	d.mu.Unlock()
	d.poke()
}

// member returns a copy of a live member, safe to hand to SendReliable.
func (d *delegate) member(name string) (*memberlist.Node, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.members[name]
	return &n, ok
}

// memberList returns the live members as Member values, sorted by name.
func (d *delegate) memberList() []Member {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Member, 0, len(d.members))
	for _, n := range d.members {
		out = append(out, Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (d *delegate) poke() {
	select {
	case d.events <- struct{}{}:
	default:
	}
}

// broadcast is a named gossip message: a newer message about the same node
// (same name) replaces an older one still in the queue.
type broadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func (b *broadcast) Invalidates(other memberlist.Broadcast) bool {
	nb, ok := other.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// memberlistLogger adapts memberlist's "[LEVEL] memberlist: text" lines to
// slog levels.
func memberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(&logBridge{l: l}, "", 0)
}

type logBridge struct{ l *slog.Logger }

func (b *logBridge) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	for _, lv := range []struct {
		tag   string
		level slog.Level
	}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError}} {
		if rest, ok := strings.CutPrefix(line, lv.tag); ok {
			level, line = lv.level, strings.TrimSpace(rest)
			break
		}
	}
	// memberlist logs transient peer failures at ERR/WARN that are routine
	// for a gossip layer (a coordinator restarting); keep them visible but
	// not alarming.
	if level == slog.LevelError {
		level = slog.LevelWarn
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	if b.l.Enabled(context.Background(), level) {
		b.l.Log(context.Background(), level, line, "component", "memberlist")
	}
	return len(p), nil
}
