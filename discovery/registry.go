package discovery

import (
	"bytes"
	"fmt"
	"sort"
	"time"

	"github.com/meshd/meshd/pki"
)

// MaxRegistryEntries bounds the registry: the records (tombstones included)
// one coordinator holds, hence one snapshot (SnapshotBegin's count), one
// push/pull state, and the peers a node keeps. Anti-entropy sets the
// number: the whole registry travels as one push/pull state, which must fit
// maxStateBytes (16 MiB; memberlist refuses more than 20 MiB). A typical
// entry is about 630 bytes (a ~600-byte record with its ECDSA P-256
// certificate, plus presence), so 16384 entries are ~10 MiB, with room for
// larger-than-typical records; the next power of two would not fit. A
// coordinator refuses new nodes beyond it (ErrLimitExceeded) rather than
// build a registry that it could not replicate and its nodes would refuse.
const MaxRegistryEntries = 1 << 14

// registry is the coordinator's replica of the node registry. It is owned by
// the coordinator's run goroutine and never touched elsewhere; records in it
// are immutable (a change replaces the *Record).
//
// Merge rules (the same on every replica, so replicas converge):
//   - a record replaces another of the same node only with a larger Version;
//     equal versions with different bytes keep the larger byte string;
//   - presence merges independently of the record by presenceAfter;
//   - tombstones (Left records) stay until Version time + tombstoneTTL and
//     block every older record meanwhile; expired ones are neither kept nor
//     accepted;
//   - records offline for longer than offlineTTL are dropped and not accepted
//     back from gossip unless they come with a newer online presence;
//   - every record is verified (version not beyond MaxVersionSkew ahead,
//     pki policy, signature, certificate claims) before it is stored;
//   - a node not yet held is refused while MaxRegistryEntries are held.
type registry struct {
	verifier     *pki.Verifier
	tombstoneTTL time.Duration
	offlineTTL   time.Duration
	counters     *recordCounters

	entries map[string]*regEntry
}

type regEntry struct {
	rec *Record
	// Encoded forms, built lazily and shared by every session and peer.
	frame  []byte // session Entry frame
	gossip []byte // gossip entry message
}

func (e *regEntry) entryFrame() []byte {
	if e.frame == nil {
		e.frame = entryFrame(e.rec)
	}
	return e.frame
}

func (e *regEntry) gossipMsg() []byte {
	if e.gossip == nil {
		e.gossip = encodeGossipEntry(e.rec)
	}
	return e.gossip
}

func newRegistry(v *pki.Verifier, tombstoneTTL, offlineTTL time.Duration, c *recordCounters) *registry {
	return &registry{verifier: v, tombstoneTTL: tombstoneTTL, offlineTTL: offlineTTL, counters: c, entries: map[string]*regEntry{}}
}

func (g *registry) get(name string) *regEntry { return g.entries[name] }

// put stores rec as name's entry.
func (g *registry) put(rec *Record) *regEntry {
	e := &regEntry{rec: rec}
	g.entries[rec.Name] = e
	return e
}

// full refuses a record of a node not held yet when the registry is at
// MaxRegistryEntries.
func (g *registry) full(name string) error {
	if g.entries[name] != nil || len(g.entries) < MaxRegistryEntries {
		return nil
	}
	return &RecordError{Name: name, Reason: fmt.Errorf("%w: registry holds %d records", ErrLimitExceeded, len(g.entries))}
}

// withPresence returns a copy of rec carrying p.
func withPresence(rec *Record, p Presence) *Record {
	c := *rec
	c.Presence = p
	return &c
}

// mergeOutcome says what a merge changed.
type mergeOutcome struct {
	entry    *regEntry // the entry after the merge (nil if none)
	record   bool      // the signed record changed (new node or newer version)
	presence bool      // only the presence changed
}

func (o mergeOutcome) changed() bool { return o.record || o.presence }

// merge applies an entry from gossip, push/pull or the cache. The error says
// why the record part was refused; the presence part may still have been
// applied (a stale record can travel with a newer presence).
func (g *registry) merge(in rawEntry, now time.Time) (mergeOutcome, error) {
	if name, ok := peekRecordName(in.raw); ok {
		if cur := g.entries[name]; cur != nil && bytes.Equal(cur.rec.raw, in.raw) {
			// Anti-entropy's common case: the record is the one held.
			return g.mergePresence(name, in.pres, now), nil
		}
	}
	d, err := decodeRecord(in.raw)
	if err != nil {
		err = &RecordError{Reason: err}
		g.counters.count(err)
		return mergeOutcome{}, err
	}
	name := d.rec.Name
	cur := g.entries[name]
	if cur != nil && (bytes.Equal(cur.rec.raw, in.raw) || d.rec.Version < cur.rec.Version ||
		(d.rec.Version == cur.rec.Version && bytes.Compare(in.raw, cur.rec.raw) < 0)) {
		var err error
		if !bytes.Equal(cur.rec.raw, in.raw) {
			err = &RecordError{Name: name, Reason: fmt.Errorf("%w: version %d, holding %d", ErrStaleRecord, d.rec.Version, cur.rec.Version)}
			g.counters.count(err)
		}
		return g.mergePresence(name, in.pres, now), err
	}
	if err := g.full(name); err != nil { // before the signature check: no room, no work
		g.counters.count(err)
		return mergeOutcome{}, err
	}
	rec, err := verifyRecord(g.verifier, in.raw, now)
	if err != nil {
		g.counters.count(err)
		return mergeOutcome{}, err
	}
	pres := in.pres
	if cur != nil && !presenceAfter(pres, cur.rec.Presence) {
		pres = cur.rec.Presence
	}
	if rec.Left {
		pres.Online = false
	}
	rec.Presence = pres
	if err := g.expired(rec, now); err != nil {
		g.counters.count(err)
		return mergeOutcome{}, err
	}
	g.counters.count(nil)
	return mergeOutcome{entry: g.put(rec), record: true}, nil
}

// expired refuses tombstones and offline records past their TTL.
func (g *registry) expired(rec *Record, now time.Time) error {
	if rec.Left && now.Sub(rec.versionTime()) > g.tombstoneTTL {
		return &RecordError{Name: rec.Name, Reason: fmt.Errorf("%w: tombstone from %v", ErrExpired, rec.versionTime().UTC())}
	}
	if !rec.Left && !rec.Presence.Online && !rec.Presence.Changed.IsZero() && now.Sub(rec.Presence.Changed) > g.offlineTTL {
		return &RecordError{Name: rec.Name, Reason: fmt.Errorf("%w: offline since %v", ErrExpired, rec.Presence.Changed.UTC())}
	}
	if na := rec.Cert.Cert.NotAfter; now.After(na) {
		return &RecordError{Name: rec.Name, Reason: fmt.Errorf("%w: certificate expired %v", ErrExpired, na.UTC())}
	}
	return nil
}

// mergePresence applies a presence for name if it supersedes the held one.
func (g *registry) mergePresence(name string, p Presence, now time.Time) mergeOutcome {
	cur := g.entries[name]
	if cur == nil || !presenceAfter(p, cur.rec.Presence) {
		return mergeOutcome{entry: cur}
	}
	if cur.rec.Left && p.Online {
		// A tombstone has no session; only a newer record revives the node.
		return mergeOutcome{entry: cur}
	}
	return mergeOutcome{entry: g.put(withPresence(cur.rec, p)), presence: true}
}

// setPresence stores a presence this coordinator asserts (session up/down).
func (g *registry) setPresence(name string, p Presence) *regEntry {
	cur := g.entries[name]
	if cur == nil {
		return nil
	}
	return g.put(withPresence(cur.rec, p))
}

// acceptLocal stores a record a node registered on this coordinator's
// session, already verified. It must be strictly newer than the held one
// (else ErrStaleRecord, returning the held entry), and a new node needs
// room in the registry (else ErrLimitExceeded, returning nil).
func (g *registry) acceptLocal(rec *Record, pres Presence) (*regEntry, error) {
	if err := g.full(rec.Name); err != nil {
		g.counters.count(err)
		return nil, err
	}
	if cur := g.entries[rec.Name]; cur != nil {
		if cur.rec.sameSigned(rec) {
			return g.put(withPresence(cur.rec, pres)), nil
		}
		if rec.Version <= cur.rec.Version {
			err := &RecordError{Name: rec.Name, Reason: fmt.Errorf("%w: version %d, holding %d", ErrStaleRecord, rec.Version, cur.rec.Version)}
			g.counters.count(err)
			return cur, err
		}
	}
	if rec.Left {
		pres.Online = false
	}
	g.counters.count(nil)
	return g.put(withPresence(rec, pres)), nil
}

// removed is one entry dropped by a sweep or a CRL.
type removed struct {
	rec *Record
	why removeReason
}

// dropRevoked removes every entry whose certificate the verifier now
// considers revoked.
func (g *registry) dropRevoked() []removed {
	var out []removed
	for name, e := range g.entries {
		if g.verifier.IsRevoked(e.rec.Cert.Cert.SerialNumber) {
			delete(g.entries, name)
			out = append(out, removed{rec: e.rec, why: removeRevoked})
		}
	}
	return out
}

// sweepExpired drops tombstones, offline records and certificates past their
// time. Tombstones go silently (sessions dropped the node when it left).
func (g *registry) sweepExpired(now time.Time) []removed {
	var out []removed
	for name, e := range g.entries {
		if err := g.expired(e.rec, now); err != nil {
			delete(g.entries, name)
			g.counters.count(err)
			if !e.rec.Left {
				out = append(out, removed{rec: e.rec, why: removeExpired})
			}
		}
	}
	return out
}

// records returns every entry's record sorted by name.
func (g *registry) records() []*Record {
	out := make([]*Record, 0, len(g.entries))
	for _, e := range g.entries {
		out = append(out, e.rec)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// sortedEntries returns the entries sorted by name (snapshots are
// deterministic, which keeps tests and diffs readable).
func (g *registry) sortedEntries() []*regEntry {
	out := make([]*regEntry, 0, len(g.entries))
	for _, e := range g.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rec.Name < out[j].rec.Name })
	return out
}
