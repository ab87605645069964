package discovery

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// wire.go holds the big-endian encoder and the bounds-checked decoder that
// every format of this package (records, session frames, gossip messages,
// the cache file) is built from. The decoder never panics: the first short
// read or bad length sets a sticky error and every later read returns zero
// values. Every length and count is checked against its limit (failLimit,
// count) before anything is allocated, sized or looped by it.

type wbuf struct{ b []byte }

func (w *wbuf) u8(v uint8)   { w.b = append(w.b, v) }
func (w *wbuf) u16(v uint16) { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *wbuf) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *wbuf) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *wbuf) i64(v int64)  { w.u64(uint64(v)) }

func (w *wbuf) bool(v bool) {
	if v {
		w.u8(1)
	} else {
		w.u8(0)
	}
}

// str8 writes a string of at most 255 bytes; callers validate lengths first.
func (w *wbuf) str8(s string) { w.u8(uint8(len(s))); w.b = append(w.b, s...) }

// bytes16 writes at most 65535 bytes with a 16-bit length.
func (w *wbuf) bytes16(p []byte) { w.u16(uint16(len(p))); w.b = append(w.b, p...) }

// bytes32 writes p with a 32-bit length.
func (w *wbuf) bytes32(p []byte) { w.u32(uint32(len(p))); w.b = append(w.b, p...) }

// addr writes an address as a 1-byte length (4 or 16) and its bytes; IPv4-
// mapped IPv6 addresses are written as IPv4.
func (w *wbuf) addr(a netip.Addr) {
	a = a.Unmap()
	if a.Is4() {
		v := a.As4()
		w.u8(4)
		w.b = append(w.b, v[:]...)
		return
	}
	v := a.As16()
	w.u8(16)
	w.b = append(w.b, v[:]...)
}

type rbuf struct {
	b   []byte
	err error
}

func (r *rbuf) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
}

// failLimit fails r for a count or length read from the wire that exceeds
// its limit. The error is both ErrMalformed (callers that classify input
// keep working) and ErrLimitExceeded (it says which bound held).
func (r *rbuf) failLimit(what string, n uint64, limit int) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %w: %s: %d, limit %d", ErrMalformed, ErrLimitExceeded, what, n, limit)
	}
}

// count reads a u32 count and bounds it by limit before anyone sizes
// memory or loops by it; over the limit it fails r and returns 0.
func (r *rbuf) count(what string, limit int) int {
	n := r.u32(what)
	if r.err == nil && uint64(n) > uint64(limit) {
		r.failLimit(what, uint64(n), limit)
		return 0
	}
	return int(n)
}

func (r *rbuf) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("%s: need %d bytes, have %d", what, n, len(r.b))
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *rbuf) u8(what string) uint8 {
	p := r.take(1, what)
	if p == nil {
		return 0
	}
	return p[0]
}

func (r *rbuf) u16(what string) uint16 {
	p := r.take(2, what)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (r *rbuf) u32(what string) uint32 {
	p := r.take(4, what)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (r *rbuf) u64(what string) uint64 {
	p := r.take(8, what)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

func (r *rbuf) i64(what string) int64 { return int64(r.u64(what)) }

func (r *rbuf) bool(what string) bool {
	v := r.u8(what)
	if v > 1 {
		r.fail("%s: boolean byte %d", what, v)
	}
	return v == 1
}

// str8 reads a string written by wbuf.str8 and checks it against max.
func (r *rbuf) str8(what string, max int) string {
	n := int(r.u8(what))
	if r.err == nil && n > max {
		r.failLimit(what+" bytes", uint64(n), max)
		return ""
	}
	return string(r.take(n, what))
}

// bytes16 reads a 16-bit length-prefixed byte string (aliasing r's buffer).
func (r *rbuf) bytes16(what string, max int) []byte {
	n := int(r.u16(what))
	if r.err == nil && n > max {
		r.failLimit(what+" bytes", uint64(n), max)
		return nil
	}
	return r.take(n, what)
}

// bytes32 reads a 32-bit length-prefixed byte string (aliasing r's buffer).
func (r *rbuf) bytes32(what string, max int) []byte {
	n := r.u32(what)
	if r.err == nil && uint64(n) > uint64(max) {
		r.failLimit(what+" bytes", uint64(n), max)
		return nil
	}
	return r.take(int(n), what)
}

func (r *rbuf) addr(what string) netip.Addr {
	n := r.u8(what)
	if r.err != nil {
		return netip.Addr{}
	}
	if n != 4 && n != 16 {
		r.fail("%s: address length %d", what, n)
		return netip.Addr{}
	}
	p := r.take(int(n), what)
	if p == nil {
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(p)
	if n == 16 && a.Is4In6() {
		r.fail("%s: IPv4-mapped address must be encoded as IPv4", what)
	}
	return a
}

// done fails r if bytes are left over: every format is exact, so trailing
// bytes mean a malformed or mismatched message.
func (r *rbuf) done(what string) error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%s: %d trailing bytes", what, len(r.b))
	}
	return r.err
}
