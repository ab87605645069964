package discovery

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
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
		{"snapshot-begin at the registry limit", snapshotBeginFrame(MaxRegistryEntries), func(t *testing.T, f frame) {
			if f.count != MaxRegistryEntries {
				t.Errorf("count %d", f.count)
			}
		}},
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
		// Counts and lengths over their limits are ErrLimitExceeded (and
		// still ErrMalformed), decided before anything is sized by them.
		{"snapshot count 0xFFFFFFFF", append(header(frameVersion, byte(frameSnapshotBegin), 4), 0xff, 0xff, 0xff, 0xff), ErrLimitExceeded},
		{"snapshot count over the registry limit", snapshotBeginFrame(MaxRegistryEntries + 1), ErrLimitExceeded},
		{"snapshot count 0xFFFFFFFF is malformed", append(header(frameVersion, byte(frameSnapshotBegin), 4), 0xff, 0xff, 0xff, 0xff), ErrMalformed},
		{"frame length 0xFFFFFFFF", header(frameVersion, byte(frameEntry), 0xffffffff), ErrLimitExceeded},
		{"TURN URL count 255", append(header(frameVersion, byte(frameTURN), 1), 255), ErrLimitExceeded},
		{"entry record length 0xFFFF", encodeFrame(frameEntry, func(w *wbuf) { encodePresence(w, Presence{}); w.u16(0xffff) }), ErrLimitExceeded},
		{"signal payload length 0xFFFF", encodeFrame(frameSignal, func(w *wbuf) { w.u32(1); w.str8("b"); w.u16(0xffff) }), ErrLimitExceeded},
		{"deliver payload length 0xFFFF", encodeFrame(frameDeliver, func(w *wbuf) { w.str8("b"); w.u16(0xffff) }), ErrLimitExceeded},
		{"error text length 0xFFFF", encodeFrame(frameError, func(w *wbuf) { w.u8(1); w.u64(0); w.u16(0xffff) }), ErrLimitExceeded},
		{"record frame over the record size", encodeFrame(frameRecord, func(w *wbuf) { w.b = append(w.b, make([]byte, MaxRecordSize+1)...) }), ErrLimitExceeded},
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
		encodeGossipDupQuery(3, "c2", "node-a", "192.0.2.7:41234"),
		encodeGossipDupAnswer(3, true, "[2001:db8::7]:41234", 1500*time.Millisecond),
		encodeGossipHello("c1", "c2", 42, true, []byte{0x30, 1}, []byte{7, 8}),
	} {
		m, err := decodeGossip(msg)
		if err != nil {
			t.Fatalf("type %d: %v", msg[0], err)
		}
		if m.typ != msg[0] {
			t.Fatalf("type %d decoded as %d", msg[0], m.typ)
		}
	}
	if q, err := decodeGossip(encodeGossipDupQuery(3, "c2", "node-a", "192.0.2.7:41234")); err != nil || q.fwdID != 3 || q.origin != "c2" || q.to != "node-a" || q.addr != "192.0.2.7:41234" {
		t.Fatalf("dup query round trip: %+v %v", q, err)
	}
	if a, err := decodeGossip(encodeGossipDupAnswer(4, true, "[2001:db8::7]:41234", 1500*time.Millisecond)); err != nil || a.fwdID != 4 || !a.held || a.addr != "[2001:db8::7]:41234" || a.retry != 1500*time.Millisecond {
		t.Fatalf("dup answer round trip: %+v %v", a, err)
	}
	if h, err := decodeGossip(encodeGossipHello("c1", "c2", 42, true, []byte{0x30, 1}, []byte{7, 8})); err != nil || h.from != "c1" || h.to != "c2" || h.at != 42 || !h.reply || !bytes.Equal(h.cert, []byte{0x30, 1}) || !bytes.Equal(h.sig, []byte{7, 8}) {
		t.Fatalf("hello round trip: %+v %v", h, err)
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

func TestDecodeLimits(t *testing.T) {
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	cache := func(count uint32) []byte {
		b := append([]byte(cacheMagic), cacheVersion)
		b = append(b, make([]byte, 8)...) // written
		b = append(b, u32(0)...)          // no CRL
		return append(b, u32(count)...)
	}
	tests := []struct {
		name   string
		decode func() error
	}{
		{"gossip batch count 0xFFFFFFFF", func() error {
			_, err := decodeGossip(append([]byte{gossipBatch, gossipVersion}, u32(0xffffffff)...))
			return err
		}},
		{"gossip batch count one over", func() error {
			_, err := decodeGossip(append([]byte{gossipBatch, gossipVersion}, u32(maxBatchMessages+1)...))
			return err
		}},
		{"gossip state count 0xFFFFFFFF", func() error {
			_, err := decodeGossip(append(append([]byte{gossipState, gossipVersion}, u32(0)...), u32(0xffffffff)...))
			return err
		}},
		{"gossip state count one over the registry limit", func() error {
			_, err := decodeGossip(append(append([]byte{gossipState, gossipVersion}, u32(0)...), u32(MaxRegistryEntries+1)...))
			return err
		}},
		{"gossip dup answer retry beyond an hour", func() error {
			b := encodeGossipDupAnswer(1, true, "192.0.2.7:1", 0)
			binary.BigEndian.PutUint32(b[len(b)-4:], maxRetryHintMillis+1)
			_, err := decodeGossip(b)
			return err
		}},
		{"gossip dup query claimant over 64 bytes", func() error {
			w := wbuf{}
			gossipHeader(&w, gossipDupQuery)
			w.u64(1)
			w.str8("c2")
			w.str8("node-a")
			w.str8(strings.Repeat("9", maxAddrText+1))
			_, err := decodeGossip(w.b)
			return err
		}},
		{"gossip CRL length 0xFFFFFFFF", func() error {
			_, err := decodeGossip(append([]byte{gossipCRL, gossipVersion}, u32(0xffffffff)...))
			return err
		}},
		{"cache count 0xFFFFFFFF", func() error {
			_, _, err := decodeCache(cache(0xffffffff))
			return err
		}},
		{"cache count one over", func() error {
			_, _, err := decodeCache(cache(maxCacheEntries + 1))
			return err
		}},
		{"record group count 255", func() error {
			w := wbuf{}
			w.u8(recordFormat)
			w.u8(0)
			w.str8("node-a")
			w.u64(1)
			w.bytes16([]byte{1})
			w.u8(0)   // addresses
			w.u8(255) // groups
			_, err := decodeRecord(w.b)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode()
			if !errors.Is(err, ErrLimitExceeded) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrLimitExceeded and ErrMalformed", err)
			}
		})
	}
}

// hostileFrameSeeds are frames whose counts and lengths are at or beyond
// their limits: seeds for every fuzz target that decodes session frames.
func hostileFrameSeeds() [][]byte {
	hdr := func(t frameType, n uint32) []byte {
		return binary.BigEndian.AppendUint32([]byte{frameVersion, byte(t)}, n)
	}
	return [][]byte{
		append(hdr(frameSnapshotBegin, 4), 0xff, 0xff, 0xff, 0xff), // the review's 10-byte frame
		snapshotBeginFrame(MaxRegistryEntries),
		snapshotBeginFrame(MaxRegistryEntries + 1),
		hdr(frameEntry, 0xffffffff),
		append(hdr(frameTURN, 1), 0xff),
		encodeFrame(frameEntry, func(w *wbuf) { encodePresence(w, Presence{}); w.u16(0xffff) }),
		encodeFrame(frameDeliver, func(w *wbuf) { w.str8("b"); w.u16(0xffff) }),
		encodeFrame(frameError, func(w *wbuf) { w.u8(uint8(CodeStaleRecord)); w.u64(math.MaxUint64 - 1); w.u16(0xffff) }),
		errorFrame(CodeStaleRecord, math.MaxUint64-1, "stale"),
		errorFrame(CodeStaleRecord, math.MaxUint64, "stale"),
	}
}

// checkFrameBounded fails t if a decoded frame holds more than its limits
// allow: whatever the input, decoding sizes nothing beyond them.
func checkFrameBounded(t *testing.T, fr frame) {
	t.Helper()
	switch {
	case fr.count > MaxRegistryEntries:
		t.Fatalf("snapshot count %d decoded, limit %d", fr.count, MaxRegistryEntries)
	case len(fr.turn.URLs) > maxTURNURLs:
		t.Fatalf("%d TURN URLs decoded", len(fr.turn.URLs))
	case len(fr.payload) > MaxSignalPayload:
		t.Fatalf("signal payload of %d bytes decoded", len(fr.payload))
	case len(fr.text) > maxErrorText:
		t.Fatalf("error text of %d bytes decoded", len(fr.text))
	case len(fr.raw) > MaxRecordSize, len(fr.entry.raw) > MaxRecordSize:
		t.Fatalf("record of %d/%d bytes decoded", len(fr.raw), len(fr.entry.raw))
	case len(fr.name) > maxNameLen, len(fr.entry.pres.Coordinator) > maxNameLen:
		t.Fatalf("name of %d bytes decoded", len(fr.name))
	case len(fr.crl) > MaxFrameSize:
		t.Fatalf("CRL of %d bytes decoded", len(fr.crl))
	}
}

// FuzzDecodeFrame: any input decodes to a frame or an error, never a panic,
// what decodes stays within every limit, and the stream reader agrees with
// the slice decoder.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(pingFrame(framePing, 1))
	f.Add(signalFrame(1, "node-b", []byte("payload")))
	f.Add(welcomeFrame("c", 1, time.Second, 1))
	f.Add(turnFrame(TURNCredentials{URLs: []string{"stun:h:1"}, Username: "u", Password: "p"}))
	f.Add(errorFrame(CodeProtocol, 0, "x"))
	f.Add(encodeFrame(frameEntry, func(w *wbuf) { encodePresence(w, Presence{}); w.bytes16([]byte{1, 2}) }))
	f.Add([]byte{1, 0x15, 0, 0, 0, 3, 1, 'a', 0})
	for _, b := range hostileFrameSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, n, err := decodeFrame(b)
		if err != nil {
			return
		}
		if n > len(b) || n < frameHeaderLen {
			t.Fatalf("used %d of %d bytes", n, len(b))
		}
		checkFrameBounded(t, fr)
		var hdr [frameHeaderLen]byte
		g, err := readFrame(bytes.NewReader(b[:n]), &hdr)
		if err != nil || g.typ != fr.typ {
			t.Fatalf("readFrame disagrees: %v", err)
		}
	})
}

// FuzzDecodeGossip covers gossip messages and push/pull state: no panic,
// and nothing decoded beyond its limits.
func FuzzDecodeGossip(f *testing.F) {
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	f.Add(encodeGossipSignal(1, "c", "a", "b", []byte("p")))
	f.Add(encodeGossipBatch([][]byte{encodeGossipSignalResult(1, 0)}))
	f.Add(encodeGossipState(nil, nil))
	f.Add(append([]byte{gossipBatch, gossipVersion}, u32(0xffffffff)...))
	f.Add(append(append([]byte{gossipState, gossipVersion}, u32(0)...), u32(0xffffffff)...))
	f.Add(append([]byte{gossipCRL, gossipVersion}, u32(0xffffffff)...))
	f.Add(encodeGossipHello("c1", "c2", 1, false, []byte{0x30}, []byte{1}))
	f.Add(encodeGossipRelays("c1", "c2", 1, []string{"turn:192.0.2.1:3478?transport=udp"}, []byte{1}))
	f.Add(append(encodeGossipRelays("c1", "c2", 1, nil, nil)[:2+8+3+3], 0xff))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeGossip(b)
		if err != nil {
			return
		}
		if len(m.batch) > maxBatchMessages || len(m.entries) > maxStateEntries || len(m.crl) > maxCRLBytes || len(m.payload) > MaxSignalPayload {
			t.Fatalf("decoded beyond the limits: batch %d, entries %d, crl %d, payload %d", len(m.batch), len(m.entries), len(m.crl), len(m.payload))
		}
		if len(m.cert) > maxCertLen || len(m.sig) > maxSigLen {
			t.Fatalf("hello beyond the limits: certificate %d, signature %d", len(m.cert), len(m.sig))
		}
		if len(m.urls) > maxRelayURLs {
			t.Fatalf("relays beyond the limit: %d URLs", len(m.urls))
		}
		for _, u := range m.urls {
			if len(u) > maxRelayURLLen {
				t.Fatalf("relay URL of %d bytes", len(u))
			}
		}
	})
}

// FuzzDecodeCache: the registry cache is read back from disk at start;
// whatever it holds, decoding stays within the limits.
func FuzzDecodeCache(f *testing.F) {
	rec := withPresence(testRecord(f), Presence{Coordinator: "c1", Since: time.Unix(0, 10), Online: true})
	f.Add(encodeCache(nil, []*Record{rec}, time.Unix(1, 0)))
	f.Add(encodeCache([]byte{0x30, 0}, nil, time.Unix(1, 0)))
	count := append([]byte(cacheMagic), cacheVersion)
	count = append(count, make([]byte, 8+4)...)
	f.Add(append(count, 0xff, 0xff, 0xff, 0xff))
	crl := append([]byte(cacheMagic), cacheVersion)
	crl = append(crl, make([]byte, 8)...)
	f.Add(append(crl, 0xff, 0xff, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, b []byte) {
		crl, entries, err := decodeCache(b)
		if err != nil {
			return
		}
		if len(entries) > maxCacheEntries || len(crl) > maxCRLBytes {
			t.Fatalf("decoded %d entries, CRL of %d bytes", len(entries), len(crl))
		}
		for _, e := range entries {
			if len(e.raw) > MaxRecordSize {
				t.Fatalf("cached record of %d bytes", len(e.raw))
			}
		}
	})
}

// TestDuplicateFrame: the duplicate-identity error frame carries the
// holder's address and a retry hint that the node reads back; whatever a
// coordinator puts there, the node keeps only a real "ip:port" and a
// bounded hint.
func TestDuplicateFrame(t *testing.T) {
	why := "another host is using this node's identity"
	tests := []struct {
		name       string
		frame      []byte
		holder     string
		reason     string
		retryAfter time.Duration
	}{
		{"IPv4 holder", duplicateFrame("192.0.2.7:41234", 2500*time.Millisecond, why), "192.0.2.7:41234", why, 2500 * time.Millisecond},
		{"IPv6 holder", duplicateFrame("[2001:db8::7]:41234", 0, why), "[2001:db8::7]:41234", why, 0},
		{"unknown holder", duplicateFrame("", time.Second, why), "", why, time.Second},
		{"negative hint", duplicateFrame("192.0.2.7:1", -time.Second, why), "192.0.2.7:1", why, 0},
		{"garbage holder", errorFrame(CodeDuplicateIdentity, 5, "\x1b[2J evil"), "", "\x1b[2J evil", 5 * time.Millisecond},
		{"no space", errorFrame(CodeDuplicateIdentity, 0, "192.0.2.7:41234"), "", "192.0.2.7:41234", 0},
		{"hint beyond an hour", errorFrame(CodeDuplicateIdentity, math.MaxUint64, "- x"), "", "x", time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _, err := decodeFrame(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			e := parseDuplicate("192.0.2.1:7000", f)
			if e.Holder != tt.holder || e.Reason != tt.reason || e.RetryAfter != tt.retryAfter {
				t.Fatalf("got holder %q reason %q retry %v", e.Holder, e.Reason, e.RetryAfter)
			}
			if !errors.Is(e, ErrDuplicateIdentity) || !errors.Is(e, ErrRefused) || errors.Is(e, ErrCertificateRejected) {
				t.Fatalf("%v does not match ErrDuplicateIdentity and ErrRefused only", e)
			}
		})
	}
}
