package discovery

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The registry cache lets a restarted node know its peers before any
// coordinator answers. It holds the signed records exactly as received (every
// one is verified again on load, against the CA and the newest CRL) and the
// newest CRL. Format (docs/protocol.md, "Registry records"):
//
//	"MESHDREG" | u8 version | i64 written (unix ns) | bytes32 CRL DER |
//	u32 count | count × entry (presence, bytes16 signed record)
const (
	// CacheFile is the cache's name inside ClientOptions.StateDir.
	CacheFile    = "registry.cache"
	cacheMagic   = "MESHDREG"
	cacheVersion = 1
	maxCacheSize = 64 << 20
	// maxCacheEntries: the node's own record and its peers, of which it
	// keeps at most MaxRegistryEntries.
	maxCacheEntries = MaxRegistryEntries + 1
)

func encodeCache(crl []byte, recs []*Record, now time.Time) []byte {
	n := 32 + len(crl)
	for _, r := range recs {
		n += len(r.raw) + 96
	}
	w := wbuf{b: make([]byte, 0, n)}
	w.b = append(w.b, cacheMagic...)
	w.u8(cacheVersion)
	w.i64(now.UnixNano())
	w.bytes32(crl)
	w.u32(uint32(len(recs)))
	for _, r := range recs {
		encodeEntry(&w, r)
	}
	return w.b
}

// decodeCache parses a cache file; records are not verified here.
func decodeCache(b []byte) (crl []byte, entries []rawEntry, err error) {
	if len(b) < len(cacheMagic) || string(b[:len(cacheMagic)]) != cacheMagic {
		return nil, nil, fmt.Errorf("%w: not a meshd registry cache", ErrMalformed)
	}
	r := rbuf{b: b[len(cacheMagic):]}
	if v := r.u8("cache version"); r.err == nil && v != cacheVersion {
		return nil, nil, fmt.Errorf("%w: registry cache version %d", ErrUnsupportedVersion, v)
	}
	r.i64("written")
	crl = r.bytes32("crl", maxCRLBytes)
	n := r.count("cache entry count", maxCacheEntries)
	for i := 0; i < n && r.err == nil; i++ {
		entries = append(entries, decodeEntry(&r))
	}
	if err := r.done("registry cache"); err != nil {
		return nil, nil, err
	}
	return crl, entries, nil
}

// writeFileAtomic writes data to path via a temporary file in the same
// directory, fsynced and renamed over path, mode 0600: a crash leaves the old
// file or the new one, never a torn one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// readCacheFile reads the cache, bounded in size.
func readCacheFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxCacheSize {
		return nil, fmt.Errorf("%w: registry cache of %d bytes", ErrMalformed, st.Size())
	}
	return os.ReadFile(path)
}
