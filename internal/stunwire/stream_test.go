package stunwire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/pion/turn/v5"
)

// TestStreamFrame: the cut of each edge case, with pion's own cut of the
// same bytes checked beside it wherever a frame is cut.
func TestStreamFrame(t *testing.T) {
	cookie := []byte{0x21, 0x12, 0xa4, 0x42}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, tc := range []struct {
		name string
		b    []byte
		n    int
		kind FrameKind
	}{
		{"empty", nil, 0, FrameIncomplete},
		{"short", []byte{0x40, 0x01, 0, 5, 1, 2, 3}, 0, FrameIncomplete},
		{"empty channel data alone", []byte{0x40, 0x01, 0, 0}, 0, FrameIncomplete},
		{"empty channel data, then more", []byte{0x40, 0x01, 0, 0, 0x40, 0x01, 0, 0}, 4, FrameChannelData},
		{"channel data padded", []byte{0x40, 0x01, 0, 5, 1, 2, 3, 4}, 12, FrameChannelData},
		{"channel data aligned", []byte{0x7f, 0xff, 0, 8, 1, 2, 3, 4}, 12, FrameChannelData},
		{"channel 0x7fff, the last pion frames", []byte{0x7f, 0xff, 0, 1, 1, 2, 3, 4}, 8, FrameChannelData},
		{"stun", cat([]byte{0x00, 0x09, 0, 8}, cookie), 28, FrameSTUN},
		{"stun-looking channel data", cat([]byte{0x40, 0x01, 0, 8}, cookie), 0, FrameUnframed},
		{"empty channel data, then stun", cat([]byte{0x40, 0x01, 0, 0}, cookie), 0, FrameUnframed},
		{"cookie after a first byte of 0x80", cat([]byte{0x80, 0x01, 0, 8}, cookie), 0, FrameUnframed},
		{"neither", []byte{0x80, 0x01, 0, 8, 1, 2, 3, 4}, 0, FrameUnframed},
		{"no cookie, no channel", []byte{0x00, 0x01, 0, 8, 1, 2, 3, 4}, 0, FrameUnframed},
		{"longest channel data", []byte{0x40, 0x01, 0xff, 0xfb - 4, 1, 2, 3, 4}, 0xfffc, FrameChannelData},
		{"channel data length wraps in pion", []byte{0x40, 0x01, 0xff, 0xfd, 1, 2, 3, 4}, 0, FrameUnframed},
		{"channel data padding wraps in pion", []byte{0x40, 0x01, 0xff, 0xfb, 1, 2, 3, 4}, 0, FrameUnframed},
		{"longest stun", cat([]byte{0x00, 0x09, 0xff, 0xeb}, cookie), 0xffff, FrameSTUN},
		{"stun length wraps in pion", cat([]byte{0x00, 0x09, 0xff, 0xec}, cookie), 0, FrameUnframed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, kind := StreamFrame(tc.b)
			if n != tc.n || kind != tc.kind {
				t.Fatalf("StreamFrame = %d %v, want %d %v", n, kind, tc.n, tc.kind)
			}
			if kind == FrameSTUN || kind == FrameChannelData {
				// Padded out to the whole frame, and a frame after it.
				b := append(bytes.Clone(tc.b), make([]byte, max(0, n-len(tc.b)))...)
				checkPionCut(t, append(b, 0x40, 0x01, 0, 0, 0x40, 0x01, 0, 0), n)
			}
		})
	}
}

// FuzzStreamFrame: whatever the stream holds, the cut is bounded, and a
// frame cut here is cut the same by pion's STUNConn however much of the
// stream pion has buffered.
func FuzzStreamFrame(f *testing.F) {
	f.Add([]byte{0x40, 0x01, 0, 5, 'h', 'e', 'l', 'l', 'o', 0, 0, 0, 0x40, 0x02, 0, 1, 'x', 0, 0, 0})
	f.Add([]byte{0x00, 0x09, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x40, 0x01, 0, 0})
	f.Add([]byte{0x40, 0x01, 0, 4, 0x21, 0x12, 0xa4, 0x42, 0x40, 0x01, 0, 0})
	f.Add([]byte{0x40, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, kind := StreamFrame(b)
		switch kind {
		case FrameIncomplete:
			if len(b) >= 8 || n != 0 {
				t.Fatalf("incomplete (%d) with %d bytes", n, len(b))
			}
		case FrameUnframed:
			if n != 0 {
				t.Fatalf("unframed with a length %d", n)
			}
		case FrameSTUN, FrameChannelData:
			if n > 0xffff || n < ChannelHeaderLen || (kind == FrameSTUN && n < HeaderLen) || (kind == FrameChannelData && n%4 != 0) {
				t.Fatalf("%v frame of %d bytes", kind, n)
			}
			if n <= len(b) {
				checkPionCut(t, b, n)
			}
		default:
			t.Fatalf("kind %v", kind)
		}
	})
}

// checkPionCut fails t unless pion's STUNConn, given the first k bytes of
// b — every k up to 64, then n-1, n and len(b) — cuts a first frame of n
// bytes or waits for more; it must never cut another length or give up on
// the stream.
func checkPionCut(t *testing.T, b []byte, n int) {
	t.Helper()
	buf := make([]byte, len(b)+1)
	for k := 1; k <= len(b); k++ {
		if k > 64 && k != n-1 && k != n && k != len(b) {
			continue
		}
		got, _, err := turn.NewSTUNConn(&onceConn{b: b[:k]}).ReadFrom(buf)
		switch {
		case errors.Is(err, io.EOF):
			if k >= max(n, 9) {
				t.Fatalf("pion waits for more with %d of a %d-byte frame buffered", k, n)
			}
		case err != nil:
			t.Fatalf("pion, with %d bytes buffered, refuses the stream: %v", k, err)
		case got != n:
			t.Fatalf("pion, with %d bytes buffered, cuts %d bytes, not %d", k, got, n)
		}
	}
}

// onceConn is a stream that holds b, then ends.
type onceConn struct {
	net.Conn
	b    []byte
	done bool
}

func (c *onceConn) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	c.done = true
	return copy(p, c.b), nil
}

func (c *onceConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }
