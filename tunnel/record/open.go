package record

/* Opening (any goroutine; one Opener per goroutine)
 *
 *   1. framing: length, type, version, data epoch, length field = rest of
 *      the datagram (one record per datagram)
 *   2. load the receive keys (atomic pointer; nil = closed); pick the
 *      current epoch, or the previous one while its overlap lasts
 *   3. replay pre-check (read-only), so replays cost no AEAD operation
 *   4. nonce = IV XOR epoch||seq; AEAD open in place, AAD = the header
 *   5. replay accept (CAS): only authenticated records move the window
 *
 * borrowed: rec belongs to the caller; the plaintext returned aliases it.
 */

import "encoding/binary"

// Opener opens records for one goroutine (it owns the nonce scratch; see
// Sealer). Not safe for concurrent use; any number of Openers may open for
// one Session concurrently.
type Opener struct {
	s     *Session
	nonce [IVLen]byte
}

// NewOpener returns an Opener for s. Allocate one per receiving goroutine,
// not per record.
func (s *Session) NewOpener() *Opener { return &Opener{s: s} }

// OpenInPlace authenticates and decrypts one record (one whole datagram, or
// one GRO segment) in place and returns the plaintext, which aliases
// rec[HeaderLen:len(rec)-TagLen]. A nil error means the record is authentic
// and was not seen before; otherwise the error is the drop reason
// (ErrTruncated, ErrMalformed, ErrOldEpoch, ErrUnknownEpoch, ErrReplay,
// ErrAuth, ErrClosed), returned unwrapped, and rec's body may have been
// overwritten. No allocation.
func (r *Opener) OpenInPlace(rec []byte) ([]byte, error) {
	if len(rec) < Overhead {
		return nil, ErrTruncated
	}
	if rec[offType] != ContentType || rec[offVersion] != VersionMajor || rec[offVersion+1] != VersionMinor {
		return nil, ErrMalformed
	}
	es := binary.BigEndian.Uint64(rec[offEpoch:])
	epoch, seq := uint16(es>>48), es&maxSeq
	if !ValidEpoch(epoch) {
		return nil, ErrMalformed
	}
	body := int(binary.BigEndian.Uint16(rec[offLength:]))
	if body > len(rec)-HeaderLen {
		return nil, ErrTruncated
	}
	if body < len(rec)-HeaderLen || body > MaxPlaintext+TagLen {
		return nil, ErrMalformed
	}

	keys := r.s.recv.Load()
	if keys == nil {
		return nil, ErrClosed
	}
	rs := keys.cur
	if epoch != rs.epoch {
		switch {
		case keys.prev != nil && epoch == keys.prev.epoch:
			if r.s.opts.Now().After(keys.prevUntil) {
				return nil, ErrOldEpoch
			}
			rs = keys.prev
		case epochDistance(epoch, rs.epoch) < epochHalf:
			return nil, ErrOldEpoch // the current epoch is ahead of it
		default:
			return nil, ErrUnknownEpoch
		}
	}
	if seq >= RecordLimit || !rs.window.fresh(seq) {
		return nil, ErrReplay
	}
	rs.nonce(&r.nonce, epoch, seq)
	if _, err := rs.aead.Open(rec[HeaderLen:HeaderLen], r.nonce[:], rec[HeaderLen:], rec[:HeaderLen]); err != nil {
		rs.authFailures.Add(1)
		return nil, ErrAuth
	}
	if !rs.window.accept(seq) {
		return nil, ErrReplay // a copy won the race on another goroutine
	}
	return rec[HeaderLen : len(rec)-TagLen], nil
}
