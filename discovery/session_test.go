package discovery

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// rawSession is a hand-driven node session for protocol abuse tests.
type rawSession struct {
	t    *testing.T
	conn *tls.Conn
	br   *bufio.Reader
}

func tlsDial(addr string, creds *pki.Credentials) (*tls.Conn, error) {
	return tls.Dial("tcp", addr, &tls.Config{
		Certificates:       []tls.Certificate{creds.TLSCertificate()},
		InsecureSkipVerify: true, // this test client does not care who the coordinator is
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{sessionALPN},
	})
}

func dialRaw(t *testing.T, c *testCoord, creds *pki.Credentials) *rawSession {
	t.Helper()
	conn, err := tlsDial(c.addr(), creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawSession{t: t, conn: conn, br: bufio.NewReader(conn)}
}

func (r *rawSession) write(b []byte) {
	r.t.Helper()
	if _, err := r.conn.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// next reads frames until one of type want arrives; it fails on EOF.
func (r *rawSession) next(want frameType) frame {
	r.t.Helper()
	_ = r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [frameHeaderLen]byte
	for {
		f, err := readFrame(r.br, &hdr)
		if err != nil {
			r.t.Fatalf("waiting for a %s frame: %v", want, err)
		}
		if f.typ == want {
			return f
		}
	}
}

// closed reports whether the coordinator ends the session (EOF) after
// whatever it still sends.
func (r *rawSession) closed() bool {
	_ = r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, r.br)
	return err == nil || errors.Is(err, io.EOF)
}

func TestSessionRejectsBadInput(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t)
	a := m.creds(t, "node-a", 1)
	b := m.creds(t, "node-b", 2)
	recB, err := newLocalRecord(b, LocalInfo{}, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	forged := &Record{Name: "node-a", Cert: a.Cert, Addrs: []netip.Addr{a.Cert.Identity.Addr.Addr()}, Version: 9}
	if err := signRecord(forged, b.Key); err != nil {
		t.Fatal(err)
	}
	// Genuine, but one version short of the wrap: it would block every
	// later record of node-a.
	future, err := newLocalRecord(a, LocalInfo{}, math.MaxUint64-1, false)
	if err != nil {
		t.Fatal(err)
	}
	header := func(version byte, typ frameType, n uint32) []byte {
		h := []byte{version, byte(typ), 0, 0, 0, 0}
		binary.BigEndian.PutUint32(h[2:], n)
		return h
	}
	tests := []struct {
		name    string
		send    []byte
		code    ErrorCode
		counter func(CoordinatorStats) uint64
	}{
		{"oversized frame", header(frameVersion, frameRecord, MaxFrameSize+1), CodeProtocol, func(s CoordinatorStats) uint64 { return s.FramesTooLarge }},
		{"unknown frame version", append(header(7, framePing, 8), make([]byte, 8)...), CodeUnsupportedVersion, func(s CoordinatorStats) uint64 { return s.FramesBadVersion }},
		{"malformed frame", append(header(frameVersion, framePing, 3), 1, 2, 3), CodeProtocol, func(s CoordinatorStats) uint64 { return s.FramesMalformed }},
		{"coordinator-only frame type", welcomeFrame("x", 1, time.Second, 1), CodeProtocol, func(s CoordinatorStats) uint64 { return s.FramesMalformed }},
		{"malformed record", encodeFrame(frameRecord, func(w *wbuf) { w.b = append(w.b, 1, 0, 3, 'a') }), CodeInvalidRecord, func(s CoordinatorStats) uint64 { return s.RecordsMalformed }},
		{"forged record", recordFrame(frameRecord, forged), CodeInvalidRecord, func(s CoordinatorStats) uint64 { return s.RecordsBadSignature }},
		{"another node's record", recordFrame(frameRecord, recB), CodeInvalidRecord, func(s CoordinatorStats) uint64 { return s.RecordsInvalid }},
		{"record from the future", recordFrame(frameRecord, future), CodeInvalidRecord, func(s CoordinatorStats) uint64 { return s.RecordsInvalid }},
		{"record frame over the record size", rawFrame(frameRecord, MaxRecordSize+1, make([]byte, MaxRecordSize+1)...), CodeProtocol, func(s CoordinatorStats) uint64 { return s.FramesMalformed }},
		{"signal before registration", signalFrame(1, "node-b", nil), CodeProtocol, func(s CoordinatorStats) uint64 { return s.FramesMalformed }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.counter(c.Stats())
			r := dialRaw(t, c, a)
			r.write(tt.send)
			f := r.next(frameError)
			if ErrorCode(f.code) != tt.code {
				t.Fatalf("error code %v (%s), want %v", ErrorCode(f.code), f.text, tt.code)
			}
			if !r.closed() {
				t.Fatal("session not closed")
			}
			testutil.WaitFor(t, 2*time.Second, "rejection counted", func() bool { return tt.counter(c.Stats()) > before })
		})
	}
	if c.Stats().Sessions != 0 || coordHas(c.Coordinator, "node-a", nil) {
		t.Fatal("a rejected session registered")
	}
}

func (m *testMesh) startCluster1(t *testing.T, tweaks ...coordTweak) *testCoord {
	return m.startCoord(t, "coord-1", 200, nil, tweaks...)
}

func TestSessionReplayAndRateLimit(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t, func(o *CoordinatorOptions) { o.FrameRate, o.FrameBurst = 1, 5 })
	a := m.creds(t, "node-a", 1)
	now := time.Now()
	v1, _ := newLocalRecord(a, LocalInfo{}, uint64(now.UnixNano()), false)
	v2, _ := newLocalRecord(a, LocalInfo{Software: "v2"}, uint64(now.UnixNano())+1, false)

	r := dialRaw(t, c, a)
	r.write(recordFrame(frameRecord, v2))
	if w := r.next(frameWelcome); w.version != v2.Version || w.name != "coord-1" {
		t.Fatalf("welcome %+v", w)
	}
	r.next(frameSnapshotEnd)
	// Replaying the older version is refused (not fatal) and counted.
	r.write(recordFrame(frameRecord, v1))
	f := r.next(frameError)
	if ErrorCode(f.code) != CodeStaleRecord || f.version != v2.Version {
		t.Fatalf("replay answered with %v have=%d (%s)", ErrorCode(f.code), f.version, f.text)
	}
	if c.Stats().RecordsStale == 0 {
		t.Fatal("replay not counted")
	}
	r.write(pingFrame(framePing, 7))
	if p := r.next(framePong); p.nonce != 7 {
		t.Fatalf("pong %d", p.nonce)
	}
	// A burst beyond the token bucket: frames are dropped and counted; the
	// session survives.
	for range 20 {
		r.write(signalFrame(3, "node-a", []byte("x")))
	}
	testutil.WaitFor(t, 2*time.Second, "rate limit counted", func() bool { return c.Stats().FramesRateLimited > 0 })
	var limited bool
	for !limited {
		f := r.next(frameSignalResult)
		limited = signalCode(f.code) == sigRateLimited
	}
	if !coordHas(c.Coordinator, "node-a", func(r Record) bool { return r.Version == v2.Version && r.Presence.Online }) {
		t.Fatal("session or record lost")
	}
}

func TestGossipRejectsForgedAndStale(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t)
	a := m.creds(t, "node-a", 1)
	b := m.creds(t, "node-b", 2)
	now := time.Now()
	v1, _ := newLocalRecord(a, LocalInfo{}, uint64(now.UnixNano()), false)
	v2, _ := newLocalRecord(a, LocalInfo{Software: "v2"}, uint64(now.UnixNano())+1, false)
	pres := Presence{Coordinator: "coord-x", Since: now, Online: true, Changed: now}
	c.del.NotifyMsg(encodeGossipEntry(withPresence(v2, pres)))
	testutil.WaitFor(t, 2*time.Second, "gossiped record stored", func() bool {
		return coordHas(c.Coordinator, "node-a", func(r Record) bool { return r.Version == v2.Version })
	})
	before := c.Stats()
	forged := &Record{Name: "node-a", Cert: a.Cert, Addrs: v2.Addrs, Groups: v2.Groups, Version: v2.Version + 100}
	if err := signRecord(forged, b.Key); err != nil {
		t.Fatal(err)
	}
	future, _ := newLocalRecord(a, LocalInfo{}, math.MaxUint64-1, false)
	c.del.NotifyMsg(encodeGossipEntry(withPresence(forged, pres)))
	c.del.NotifyMsg(encodeGossipEntry(withPresence(future, pres)))
	c.del.NotifyMsg(encodeGossipEntry(withPresence(v1, pres)))
	c.del.NotifyMsg([]byte{gossipEntry, gossipVersion, 0xff})
	c.del.NotifyMsg([]byte{gossipEntry, 9})
	c.del.MergeRemoteState(encodeGossipState(nil, []*Record{withPresence(v1, pres)}), false)
	testutil.WaitFor(t, 2*time.Second, "forged, stale and malformed gossip counted", func() bool {
		s := c.Stats()
		return s.RecordsBadSignature > before.RecordsBadSignature && s.RecordsInvalid > before.RecordsInvalid && s.RecordsStale >= before.RecordsStale+2 &&
			s.GossipMalformed >= before.GossipMalformed+2
	})
	if !coordHas(c.Coordinator, "node-a", func(r Record) bool { return r.Version == v2.Version }) {
		t.Fatal("registry changed by rejected gossip")
	}
}

// TestCoordinatorRefusesNodesWhenRegistryFull: a coordinator holding
// MaxRegistryEntries records refuses a new node as overloaded (it would
// otherwise send snapshots its nodes refuse) and keeps serving held ones.
func TestCoordinatorRefusesNodesWhenRegistryFull(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t)
	a := m.creds(t, "node-a", 1)
	b := m.creds(t, "node-b", 2)
	recA, err := newLocalRecord(a, LocalInfo{}, uint64(time.Now().UnixNano()), false)
	if err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, c, a)
	r.write(recordFrame(frameRecord, recA))
	r.next(frameSnapshotEnd)
	// Fill the replica with copies of node-a's entry under other names
	// (only the count matters), on the run goroutine that owns it.
	if err := c.do(func() {
		held := c.reg.get("node-a").rec
		for i := len(c.reg.entries); i < MaxRegistryEntries; i++ {
			r := held.Clone()
			r.Name = fmt.Sprintf("fill-%05d", i)
			c.reg.put(&r)
		}
	}); err != nil {
		t.Fatal(err)
	}
	before := c.Stats().RecordsOverLimit
	recB, err := newLocalRecord(b, LocalInfo{}, uint64(time.Now().UnixNano()), false)
	if err != nil {
		t.Fatal(err)
	}
	rb := dialRaw(t, c, b)
	rb.write(recordFrame(frameRecord, recB))
	if f := rb.next(frameError); ErrorCode(f.code) != CodeOverloaded {
		t.Fatalf("error code %v (%s), want overloaded", ErrorCode(f.code), f.text)
	}
	if !rb.closed() {
		t.Fatal("session not closed")
	}
	if c.Stats().RecordsOverLimit <= before || coordHas(c.Coordinator, "node-b", nil) {
		t.Fatal("new node not refused and counted")
	}
	// A held node still updates.
	recA2, err := newLocalRecord(a, LocalInfo{Software: "v2"}, recA.Version+1, false)
	if err != nil {
		t.Fatal(err)
	}
	r.write(recordFrame(frameRecord, recA2))
	testutil.WaitFor(t, 5*time.Second, "held node updated", func() bool {
		return coordHas(c.Coordinator, "node-a", func(r Record) bool { return r.Software == "v2" })
	})
}
