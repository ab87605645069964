package discovery

import (
	"crypto/sha256"
	"sync"

	"github.com/meshd/meshd/pki"
)

// crlcache.go: a CRL's verification is paid once. Nodes and coordinators
// pass the newest CRL on (sessions, gossip, every push/pull state), so the
// same bytes arrive again and again; a hostile member can also resend one
// as fast as its rate limit allows. The outcome of every CRL checked is
// remembered by SHA-256 of its DER, so a repeat costs a hash and a map
// lookup, never a parse or a signature check, and neither runs on the
// coordinator's run loop for session frames (the session's reader does it).

// maxCRLOutcomes bounds the outcomes remembered; when full the cache starts
// over (a flood of distinct CRLs is bounded by the per-session CRL rate).
const maxCRLOutcomes = 64

// crlCache remembers CRL verification outcomes. Safe for concurrent use:
// session readers and the run loop share it.
type crlCache struct {
	mu   sync.Mutex // guards seen
	seen map[[sha256.Size]byte]error
}

// verifyCRL installs der in v if it is a CA-signed CRL newer than the
// installed one. repeat says the outcome came from the cache (installed is
// then false: the first arrival installed it).
func (k *crlCache) verifyCRL(v *pki.Verifier, der []byte) (installed, repeat bool, err error) {
	sum := sha256.Sum256(der)
	k.mu.Lock()
	err, repeat = k.seen[sum]
	k.mu.Unlock()
	if repeat {
		return false, true, err
	}
	crl, err := pki.ParseCRLDER(der)
	if err == nil && v.NewerCRL(crl) {
		// A CRL not newer than its CA's installed one is ignored
		// whoever signed it, so its signature need not be checked.
		installed, err = v.UpdateCRL(crl)
	}
	k.mu.Lock()
	if k.seen == nil || len(k.seen) >= maxCRLOutcomes {
		k.seen = make(map[[sha256.Size]byte]error, maxCRLOutcomes)
	}
	k.seen[sum] = err
	k.mu.Unlock()
	return installed, false, err
}
