package discovery

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	rec := testRecord(t)
	turn := TURNCredentials{URLs: []string{"stun:192.0.2.1:3478", "turn:192.0.2.1:3478?transport=udp"}, Username: "1700000000:node-a", Password: "c2VjcmV0", Expires: time.Unix(1700000000, 0)}
	tests := []struct {
		name  string
		frame []byte
		check func(t *testing.T, f frame)
	}{
		{"record", recordFrame(frameRecord, rec), func(t *testing.T, f frame) {
			if !bytes.Equal(f.raw, rec.raw) {
				t.Error("record bytes differ")
			}
		}},
		{"signal", signalFrame(7, "node-b", []byte("offer")), func(t *testing.T, f frame) {
			if f.id != 7 || f.name != "node-b" || string(f.payload) != "offer" {
				t.Errorf("got %+v", f)
			}
		}},
		{"ping", pingFrame(framePing, 42), func(t *testing.T, f frame) {
			if f.nonce != 42 {
				t.Errorf("nonce %d", f.nonce)
			}
		}},
		{"welcome", welcomeFrame("coord-1", 99, 1500*time.Millisecond, 5), func(t *testing.T, f frame) {
			if f.name != "coord-1" || f.since != 99 || f.period != 1500*time.Millisecond || f.version != 5 {
				t.Errorf("got %+v", f)
			}
		}},
		{"entry", entryFrame(withPresence(rec, Presence{Coordinator: "c", Since: time.Unix(0, 5), Online: true})), func(t *testing.T, f frame) {
			if !bytes.Equal(f.entry.raw, rec.raw) || f.entry.pres.Coordinator != "c" || !f.entry.pres.Online || f.entry.pres.Since.UnixNano() != 5 {
				t.Errorf("got %+v", f.entry)
			}
		}},
		{"remove", removeFrame("node-x", 3, removeRevoked), func(t *testing.T, f frame) {
			if f.name != "node-x" || f.version != 3 || removeReason(f.code) != removeRevoked {
				t.Errorf("got %+v", f)
			}
		}},
		{"deliver", deliverFrame("node-a", []byte{1, 2}), func(t *testing.T, f frame) {
			if f.name != "node-a" || !bytes.Equal(f.payload, []byte{1, 2}) {
				t.Errorf("got %+v", f)
			}
		}},
		{"signal-result", signalResultFrame(9, sigPeerOffline), func(t *testing.T, f frame) {
			if f.id != 9 || !errors.Is(signalCode(f.code).err(), ErrPeerOffline) {
				t.Errorf("got %+v", f)
			}
		}},
		{"turn", turnFrame(turn), func(t *testing.T, f frame) {
			if !reflect.DeepEqual(f.turn, turn) {
				t.Errorf("got %+v want %+v", f.turn, turn)
			}
		}},
		{"error", errorFrame(CodeStaleRecord, 12, "too old"), func(t *testing.T, f frame) {
			if ErrorCode(f.code) != CodeStaleRecord || f.version != 12 || f.text != "too old" {
				t.Errorf("got %+v", f)
			}
		}},
		{"crl", crlFrame([]byte{0x30, 0x01, 0x00}), func(t *testing.T, f frame) {
			if !bytes.Equal(f.crl, []byte{0x30, 0x01, 0x00}) {
				t.Errorf("got %x", f.crl)
			}
		}},
		{"snapshot-end", encodeFrame(frameSnapshotEnd, nil), func(t *testing.T, f frame) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, n, err := decodeFrame(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(tt.frame) {
				t.Fatalf("used %d of %d bytes", n, len(tt.frame))
			}
			tt.check(t, f)
			// The stream reader agrees with the slice decoder.
			var hdr [frameHeaderLen]byte
			g, err := readFrame(bytes.NewReader(tt.frame), &hdr)
			if err != nil || g.typ != f.typ {
				t.Fatalf("readFrame: %v, type %v", err, g.typ)
			}
		})
	}
}

func TestFrameRejects(t *testing.T) {
	header := func(version, typ byte, n uint32) []byte {
		b := []byte{version, typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[2:], n)
		return b
	}
	trailing := append(pingFrame(framePing, 1), 0)
	binary.BigEndian.PutUint32(trailing[2:], 9)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"oversized", header(frameVersion, byte(frameSignal), MaxFrameSize+1), ErrFrameTooLarge},
		{"huge length", header(frameVersion, byte(frameSignal), 0xffffffff), ErrFrameTooLarge},
		{"unknown version", append(header(2, byte(framePing), 8), make([]byte, 8)...), ErrUnsupportedVersion},
		{"unknown type", header(frameVersion, 0x7e, 0), ErrMalformed},
		{"truncated header", []byte{1, 4, 0}, ErrMalformed},
		{"truncated payload", header(frameVersion, byte(framePing), 8), ErrMalformed},
		{"short ping", append(header(frameVersion, byte(framePing), 4), 1, 2, 3, 4), ErrMalformed},
		{"trailing bytes", trailing, ErrMalformed},
		{"empty record", header(frameVersion, byte(frameRecord), 0), ErrMalformed},
		{"empty crl", header(frameVersion, byte(frameCRL), 0), ErrMalformed},
		{"bad bool", append(header(frameVersion, byte(frameEntry), 21), append(append([]byte{1, 'c'}, make([]byte, 16)...), 2, 0, 0)...), ErrMalformed},
		{"signal name too long", append(header(frameVersion, byte(frameSignal), 4+1+64+2), append([]byte{0, 0, 0, 1, 64}, make([]byte, 66)...)...), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decodeFrame(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestGossipRoundTrip(t *testing.T) {
	rec := withPresence(testRecord(t), Presence{Coordinator: "c1", Since: time.Unix(0, 10), Changed: time.Unix(0, 11), Online: true})
	for _, msg := range [][]byte{
		encodeGossipEntry(rec),
		encodeGossipPresence("node-a", rec.Presence),
		encodeGossipSignal(5, "c1", "node-a", "node-b", []byte("x")),
		encodeGossipSignalResult(5, sigUnknownPeer),
		encodeGossipCRL([]byte{1, 2, 3}),
		encodeGossipBatch([][]byte{encodeGossipSignalResult(1, sigOK), encodeGossipPresence("n", Presence{})}),
		encodeGossipState([]byte{9}, []*Record{rec, rec}),
	} {
		m, err := decodeGossip(msg)
		if err != nil {
			t.Fatalf("type %d: %v", msg[0], err)
		}
		if m.typ != msg[0] {
			t.Fatalf("type %d decoded as %d", msg[0], m.typ)
		}
	}
	m, _ := decodeGossip(encodeGossipState(nil, []*Record{rec}))
	if len(m.entries) != 1 || !bytes.Equal(m.entries[0].raw, rec.raw) || m.entries[0].pres != rec.Presence {
		t.Fatalf("state entry round trip: %+v", m.entries)
	}
	for _, bad := range [][]byte{nil, {gossipEntry}, {gossipEntry, 9}, {99, gossipVersion}, append(encodeGossipSignalResult(1, 0), 0)} {
		if _, err := decodeGossip(bad); err == nil {
			t.Errorf("decodeGossip(%x) accepted", bad)
		}
	}
}

// FuzzDecodeFrame: any input decodes to a frame or an error, never a panic,
// and what decodes re-encodes to a frame that decodes the same way.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(pingFrame(framePing, 1))
	f.Add(signalFrame(1, "node-b", []byte("payload")))
	f.Add(welcomeFrame("c", 1, time.Second, 1))
	f.Add(turnFrame(TURNCredentials{URLs: []string{"stun:h:1"}, Username: "u", Password: "p"}))
	f.Add(errorFrame(CodeProtocol, 0, "x"))
	f.Add(encodeFrame(frameEntry, func(w *wbuf) { encodePresence(w, Presence{}); w.bytes16([]byte{1, 2}) }))
	f.Add([]byte{1, 0x15, 0, 0, 0, 3, 1, 'a', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := decodeFrame(b)
		if err != nil {
			return
		}
		if n > len(b) || n < frameHeaderLen {
			t.Fatalf("used %d of %d bytes", n, len(b))
		}
		var hdr [frameHeaderLen]byte
		g, err := readFrame(bytes.NewReader(b[:n]), &hdr)
		if err != nil || g.typ != fr.typ {
			t.Fatalf("readFrame disagrees: %v", err)
		}
	})
}

// FuzzDecodeGossip covers gossip messages and push/pull state.
func FuzzDecodeGossip(f *testing.F) {
	f.Add(encodeGossipSignal(1, "c", "a", "b", []byte("p")))
	f.Add(encodeGossipBatch([][]byte{encodeGossipSignalResult(1, 0)}))
	f.Add(encodeGossipState(nil, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeGossip(b)
	})
}
