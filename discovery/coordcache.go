package discovery

import (
	"errors"
	"os"
	"path/filepath"
	"time"
)

// coordcache.go: a coordinator restarts with its registry.
//
// A coordinator's registry lives in memory; without a copy on disk a
// restarted (or upgraded) coordinator would answer the first nodes to
// reconnect with a snapshot of only themselves. With a StateDir it keeps the
// registry in CoordinatorCacheFile (the node cache's format, cache.go),
// written at most every cacheWriteDelay after a change by a writer goroutine
// of its own, and loads it at Start, each record verified again (CA, CRL,
// signature, expiry) as from gossip. Presences come back as they were: a
// node its previous incarnation held online stays online for StartGrace
// after Start, its chance to reconnect; one that has not re-registered by
// then is marked offline (and expires after OfflineTTL as usual).

// CoordinatorCacheFile is the coordinator's registry copy in
// CoordinatorOptions.StateDir (distinct from the node's CacheFile, so one
// host may run both).
const CoordinatorCacheFile = "coordinator.cache"

// cacheWriteDelay coalesces cache writes after registry changes.
const cacheWriteDelay = 2 * time.Second

// loadCache merges the cached registry (on Start, before the run loop).
func (c *Coordinator) loadCache() {
	if c.opts.StateDir == "" {
		return
	}
	path := filepath.Join(c.opts.StateDir, CoordinatorCacheFile)
	b, err := readCacheFile(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("coordinator registry cache unreadable; starting empty", "path", path, "error", err)
		}
		return
	}
	crl, entries, err := decodeCache(b)
	if err != nil {
		c.log.Warn("coordinator registry cache invalid; starting empty", "path", path, "error", err)
		return
	}
	if len(crl) > 0 {
		if _, _, err := c.crls.verifyCRL(c.opts.Verifier, crl); err != nil {
			c.log.Warn("cached CRL rejected", "error", err)
		}
	}
	now := time.Now()
	held := 0
	for _, e := range entries {
		if _, err := c.reg.merge(e, now); err != nil {
			c.log.Debug("cached record dropped", "error", err)
		}
	}
	for _, e := range c.reg.entries {
		if p := e.rec.Presence; p.Online && p.Coordinator == c.name {
			held++
		}
	}
	c.nRecords.Store(int64(len(c.reg.entries)))
	c.log.Info("coordinator registry loaded from cache", "records", len(c.reg.entries), "held", held, "grace", c.opts.StartGrace)
}

// cacheWriter writes registry copies handed to it; the latest wins. It ends
// when the run loop closes cacheOut on its way out, after queueing the last
// copy.
func (c *Coordinator) cacheWriter() {
	defer c.wg.Done()
	path := filepath.Join(c.opts.StateDir, CoordinatorCacheFile)
	for b := range c.cacheOut {
		c.writeCache(path, b)
	}
}

func (c *Coordinator) writeCache(path string, b []byte) {
	if err := writeFileAtomic(path, b); err != nil {
		c.log.Warn("writing the coordinator registry cache", "path", path, "error", err)
	}
}

// queueCache hands the current registry to the cache writer when it changed
// and the last write is cacheWriteDelay old, or force (run goroutine; the
// only sender on cacheOut).
func (c *Coordinator) queueCache(now time.Time, force bool) {
	if c.cacheOut == nil || !c.cacheDirty || (!force && now.Sub(c.cacheQueued) < cacheWriteDelay) {
		return
	}
	var crl []byte
	if cur := c.opts.Verifier.CRL(); cur != nil {
		crl = cur.Raw
	}
	b := encodeCache(crl, c.reg.records(), now)
	select {
	case <-c.cacheOut: // replace a copy not written yet
	default:
	}
	c.cacheOut <- b // room: only this goroutine sends
	c.cacheDirty, c.cacheQueued = false, now
}

// expireStartGrace marks offline the nodes a previous incarnation of this
// coordinator held online that have not re-registered within StartGrace
// (run goroutine, from sweep).
func (c *Coordinator) expireStartGrace(now time.Time) {
	if c.graceOver || now.Sub(c.startedAt) < c.opts.StartGrace {
		return
	}
	c.graceOver = true
	n := 0
	for name, e := range c.reg.entries {
		p := e.rec.Presence
		if !p.Online || p.Coordinator != c.name || c.sessions[name] != nil {
			continue
		}
		p.Online, p.Changed = false, now
		c.entryChanged(c.reg.setPresence(name, p), false)
		n++
	}
	if n > 0 {
		c.log.Info("start grace over: nodes not back marked offline", "offline", n, "grace", c.opts.StartGrace)
	}
}

// flushCache queues the final copy and stops the cache writer (run
// goroutine, on its way out).
func (c *Coordinator) flushCache() {
	if c.cacheOut == nil {
		return
	}
	if c.stateDirty {
		c.cacheDirty = true
	}
	c.queueCache(time.Now(), true)
	close(c.cacheOut)
}
