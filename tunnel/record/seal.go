package record

/* Sealing (any goroutine; one Sealer per goroutine)
 *
 *   1. load the send state (atomic pointer; nil = closed)
 *   2. reserve sequence numbers: one atomic add per record or per batch;
 *      numbers at or past RecordLimit are refused, never wrapped
 *   3. write the header in the headroom in front of the plaintext
 *   4. nonce = IV XOR epoch||seq into the Sealer's scratch
 *   5. AEAD seal in place, AAD = the 13 header bytes as sent; the tag
 *      goes into the buffer's spare capacity
 *
 * borrowed: buffers belong to the caller; nothing is retained.
 * Sequence numbers are unique per key, not ordered across goroutines:
 * records sealed concurrently may go out in any order, which the peer's
 * replay window absorbs.
 */

// Sealer seals records for one goroutine: it owns the nonce scratch that
// must not escape (a stack nonce passed through cipher.AEAD would be
// heap-allocated per record). Not safe for concurrent use; any number of
// Sealers may seal for one Session concurrently.
type Sealer struct {
	s     *Session
	nonce [IVLen]byte
}

// NewSealer returns a Sealer for s. Allocate one per sealing goroutine, not
// per record.
func (s *Session) NewSealer() *Sealer { return &Sealer{s: s} }

// SealInPlace seals the plaintext buf[offset:offset+n] into a record under
// the current send key. The header goes into buf[offset-HeaderLen:offset]
// and the tag into buf[offset+n:offset+n+TagLen], which must be within
// cap(buf); the returned record is buf[offset-HeaderLen:offset+n+TagLen].
// Bytes before offset-HeaderLen are not touched. Errors: ErrShortBuffer,
// ErrTooLarge, ErrRecordLimit (rekey), ErrClosed. No allocation.
func (w *Sealer) SealInPlace(buf []byte, offset, n int) ([]byte, error) {
	if err := checkSealArgs(buf, offset, n); err != nil {
		return nil, err
	}
	st := w.s.send.Load()
	if st == nil {
		return nil, ErrClosed
	}
	seq := st.next.Add(1) - 1
	if seq >= RecordLimit {
		return nil, ErrRecordLimit
	}
	return st.seal(&w.nonce, buf, offset, n, seq), nil
}

// SealBatch seals bufs[i][offset:offset+sizes[i]] for each i, in order, as
// SealInPlace does, and stores the records in recs[i] (len(recs) and
// len(sizes) must be at least len(bufs)). It reserves all sequence numbers
// with one atomic operation. It returns how many records were sealed; if
// fewer than len(bufs), the error says why record n was not (records after
// it are not sealed either).
func (w *Sealer) SealBatch(bufs [][]byte, offset int, sizes []int, recs [][]byte) (int, error) {
	if len(sizes) < len(bufs) || len(recs) < len(bufs) {
		return 0, ErrShortBuffer
	}
	// Validate first so that no sequence number is spent on a record that
	// cannot be sealed.
	n := len(bufs)
	var argErr error
	for i, b := range bufs {
		if err := checkSealArgs(b, offset, sizes[i]); err != nil {
			n, argErr = i, err
			break
		}
	}
	if n == 0 {
		return 0, argErr
	}
	st := w.s.send.Load()
	if st == nil {
		return 0, ErrClosed
	}
	first := st.next.Add(uint64(n)) - uint64(n)
	for i := range n {
		seq := first + uint64(i)
		if seq >= RecordLimit {
			return i, ErrRecordLimit
		}
		recs[i] = st.seal(&w.nonce, bufs[i], offset, sizes[i], seq)
	}
	return n, argErr
}

func checkSealArgs(buf []byte, offset, n int) error {
	if offset < HeaderLen || n < 0 || offset > len(buf) || n > len(buf)-offset {
		return ErrShortBuffer
	}
	if n > MaxPlaintext {
		return ErrTooLarge
	}
	if n+TagLen > cap(buf)-offset {
		return ErrShortBuffer
	}
	return nil
}

// seal writes the record for seq; the arguments were checked.
func (st *sendState) seal(nonce *[IVLen]byte, buf []byte, offset, n int, seq uint64) []byte {
	rec := buf[offset-HeaderLen : offset+n+TagLen]
	putHeader(rec, st.epoch, seq, n+TagLen)
	st.nonce(nonce, st.epoch, seq)
	st.aead.Seal(rec[HeaderLen:HeaderLen], nonce[:], rec[HeaderLen:HeaderLen+n], rec[:HeaderLen])
	return rec
}
