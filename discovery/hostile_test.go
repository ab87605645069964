package discovery

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// hostile_test.go: a node facing a hostile coordinator (security review,
// issue 13). No frame from a coordinator may crash or exhaust a node, and no
// coordinator may push a node's record version towards the 2^64 wrap.

// fakeCoord is a hand-driven coordinator for client abuse tests: it accepts
// node sessions as a real coordinator does (a mesh certificate, ALPN, TLS
// 1.3) and lets the test read what the node sends and write any bytes back.
type fakeCoord struct {
	t     *testing.T
	ln    net.Listener
	conns chan *fakeSession
	wg    sync.WaitGroup
}

type fakeSession struct {
	t    *testing.T
	conn *tls.Conn
	br   *bufio.Reader
}

func (m *testMesh) startFakeCoord(t *testing.T) *fakeCoord {
	t.Helper()
	creds := m.coordCreds(t, "coord-fake", 200) // a hostile coordinator: it has the role
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{creds.TLSCertificate()},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{sessionALPN},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCoord{t: t, ln: ln, conns: make(chan *fakeSession, 16)}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conn := c.(*tls.Conn)
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if err := conn.Handshake(); err != nil {
				_ = conn.Close()
				continue
			}
			_ = conn.SetDeadline(time.Time{})
			select {
			case f.conns <- &fakeSession{t: t, conn: conn, br: bufio.NewReader(conn)}:
			default:
				_ = conn.Close() // the test is not taking sessions
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		f.wg.Wait()
		for {
			select {
			case s := <-f.conns:
				_ = s.conn.Close()
			default:
				return
			}
		}
	})
	return f
}

func (f *fakeCoord) addr() string { return f.ln.Addr().String() }

// accept returns the node's next session.
func (f *fakeCoord) accept() *fakeSession {
	f.t.Helper()
	select {
	case s := <-f.conns:
		f.t.Cleanup(func() { _ = s.conn.Close() })
		return s
	case <-time.After(5 * time.Second):
		f.t.Fatal("the node did not connect")
		return nil
	}
}

func (s *fakeSession) write(b []byte) {
	s.t.Helper()
	_ = s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.conn.Write(b); err != nil {
		s.t.Fatalf("write: %v", err)
	}
}

// next reads frames until one of type want arrives.
func (s *fakeSession) next(want frameType) frame {
	s.t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [frameHeaderLen]byte
	for {
		f, err := readFrame(s.br, &hdr)
		if err != nil {
			s.t.Fatalf("waiting for a %s frame: %v", want, err)
		}
		if f.typ == want {
			return f
		}
	}
}

// closedByNode reads until the node ends the session and returns the
// frames it sent meanwhile; it fails the test if the node keeps it open.
func (s *fakeSession) closedByNode() []frame {
	s.t.Helper()
	_ = s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [frameHeaderLen]byte
	var got []frame
	for {
		f, err := readFrame(s.br, &hdr)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.t.Fatalf("the node kept the session open (read %d frames)", len(got))
			}
			return got
		}
		got = append(got, f)
	}
}

// recordVersionOf decodes the version of the record in a Record frame.
func recordVersionOf(t *testing.T, f frame) uint64 {
	t.Helper()
	d, err := decodeRecord(f.raw)
	if err != nil {
		t.Fatalf("node sent an undecodable record: %v", err)
	}
	return d.rec.Version
}

// rawFrame builds a frame with any header length and payload.
func rawFrame(t frameType, length uint32, payload ...byte) []byte {
	b := []byte{frameVersion, byte(t), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], length)
	return append(b, payload...)
}

// TestClientSurvivesHostileFrames: a coordinator that announces absurd
// counts and lengths (the review's 10-byte SnapshotBegin with a count of
// 0xFFFFFFFF, which used to pre-size a map of four billion entries and kill
// the node) gets the session ended with a clear error; the node stays up,
// installs nothing from the bad session and reconnects.
func TestClientSurvivesHostileFrames(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	now := time.Now()
	var peers []*Record
	for i, name := range []string{"node-b", "node-c"} {
		r, err := newLocalRecord(m.creds(t, name, i+2), LocalInfo{}, uint64(now.UnixNano()), false)
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, withPresence(r, Presence{Coordinator: "coord-fake", Since: now, Online: true, Changed: now}))
	}
	hugeRecord := encodeFrame(frameEntry, func(w *wbuf) { encodePresence(w, Presence{}); w.u16(0xffff) })
	tests := []struct {
		name string
		send [][]byte // after Welcome
		want error
	}{
		{"snapshot count 0xFFFFFFFF", [][]byte{rawFrame(frameSnapshotBegin, 4, 0xff, 0xff, 0xff, 0xff)}, ErrLimitExceeded},
		{"snapshot count one over the registry limit", [][]byte{snapshotBeginFrame(MaxRegistryEntries + 1)}, ErrLimitExceeded},
		{"more entries than the snapshot announced", [][]byte{snapshotBeginFrame(1), entryFrame(peers[0]), entryFrame(peers[1])}, ErrLimitExceeded},
		{"snapshot begin inside a snapshot", [][]byte{snapshotBeginFrame(1), snapshotBeginFrame(1)}, ErrMalformed},
		{"frame length 0xFFFFFFFF", [][]byte{rawFrame(frameEntry, 0xffffffff)}, ErrFrameTooLarge},
		{"TURN URL count 255", [][]byte{rawFrame(frameTURN, 1, 255)}, ErrLimitExceeded},
		{"entry record length 0xFFFF", [][]byte{hugeRecord}, ErrLimitExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := m.startFakeCoord(t)
			n := m.startClient(t, m.creds(t, "node-a", 1), []string{f.addr()})
			s := f.accept()
			s.next(frameRecord)
			s.write(welcomeFrame("coord-fake", now.UnixNano(), time.Minute, 1))
			for _, b := range tt.send {
				s.write(b)
			}
			s.closedByNode()
			testutil.WaitFor(t, 5*time.Second, "session failure recorded", func() bool { return n.Status().LastError != nil })
			if err := n.Status().LastError; !errors.Is(err, tt.want) {
				t.Fatalf("session ended with %v, want %v", err, tt.want)
			}
			if n.Stats().FramesMalformed == 0 {
				t.Error("bad frame not counted")
			}
			if len(n.Peers()) != 0 {
				t.Errorf("installed peers from a bad session: %v", peerNames(n.Client))
			}
			// The node is alive and registers again.
			f.accept().next(frameRecord)
		})
	}
}

// TestClientRefusesFutureStaleVersion: a coordinator answering "stale,
// holding v" makes the node sign above v only while v is within
// MaxVersionSkew of its clock. The review's attack (v = 2^64-2, so the node
// signs 2^64-1 and its next version wraps to 0, locking it out until its
// record expires) now leaves the node's version where it was: it ends the
// session, logs once, and retries with the same record.
func TestClientRefusesFutureStaleVersion(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	now := time.Now()
	tests := []struct {
		name   string
		held   uint64
		follow bool
	}{
		{"2^64-2", math.MaxUint64 - 1, false},
		{"2^64-1", math.MaxUint64, false},
		{"an hour ahead", uint64(now.Add(time.Hour).UnixNano()), false},
		{"just beyond the skew", uint64(now.Add(MaxVersionSkew + time.Minute).UnixNano()), false},
		{"a minute ahead is followed", uint64(now.Add(time.Minute).UnixNano()), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := m.startFakeCoord(t)
			n := m.startClient(t, m.creds(t, "node-a", 1), []string{f.addr()})
			s := f.accept()
			v0 := recordVersionOf(t, s.next(frameRecord))
			if v0 > versionLimit(time.Now()) {
				t.Fatalf("first version %d is ahead of the clock", v0)
			}
			s.write(errorFrame(CodeStaleRecord, tt.held, "stale record"))
			if tt.follow {
				v1 := recordVersionOf(t, s.next(frameRecord))
				if v1 <= tt.held || v1 > versionLimit(time.Now()) {
					t.Fatalf("re-signed version %d, want above %d and within the skew", v1, tt.held)
				}
				return
			}
			const rounds = 3
			for round := range rounds {
				for _, fr := range s.closedByNode() {
					if fr.typ == frameRecord {
						t.Fatalf("round %d: the node re-signed (version %d) instead of refusing", round, recordVersionOf(t, fr))
					}
				}
				s = f.accept()
				if v := recordVersionOf(t, s.next(frameRecord)); v != v0 {
					t.Fatalf("round %d: the node moved its version from %d to %d", round, v0, v)
				}
				if round < rounds-1 {
					s.write(errorFrame(CodeStaleRecord, tt.held, "stale record"))
				}
			}
			if err := n.Status().LastError; !errors.Is(err, ErrFutureVersion) {
				t.Errorf("last error %v, want ErrFutureVersion", err)
			}
			if got := n.Stats().VersionsRefused; got != rounds {
				t.Errorf("%d refusals counted, want %d", got, rounds)
			}
			if got := strings.Count(n.log.String(), "not following it"); got != 1 {
				t.Errorf("refusal logged %d times, want once", got)
			}
		})
	}
}

// TestClientThrottlesChangeFlood: a coordinator streaming changes faster
// than the node's subscribers take them does not grow the change queue
// without bound: the node stops reading the session (backpressure) and
// resumes, losing nothing, once subscribers catch up.
func TestClientThrottlesChangeFlood(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	f := m.startFakeCoord(t)
	now := time.Now()
	peer, err := newLocalRecord(m.creds(t, "node-b", 2), LocalInfo{}, uint64(now.UnixNano()), false)
	if err != nil {
		t.Fatal(err)
	}
	const backlog, flood = 8, 300

	creds := m.creds(t, "node-a", 1)
	c, err := NewClient(ClientOptions{
		Credentials:  creds,
		Verifier:     m.verifier(creds),
		Coordinators: []string{f.addr()},
		DialTimeout:  2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.changeBacklog = backlog
	release := make(chan struct{})
	var delivered sync.WaitGroup
	delivered.Add(flood)
	c.Subscribe(func(Change) {
		<-release
		delivered.Done()
	})
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before Close: a blocked subscriber would hold it up

	s := f.accept()
	s.next(frameRecord)
	s.write(welcomeFrame("coord-fake", now.UnixNano(), time.Minute, 1))
	s.write(snapshotBeginFrame(0))
	s.write(encodeFrame(frameSnapshotEnd, nil))
	// Every entry carries a later presence, so each is one PeerUpdated
	// change (the first one PeerAdded). The writer blocks once the node
	// stops reading; closing the session at cleanup ends it.
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		for i := range flood {
			at := now.Add(time.Duration(i) * time.Millisecond)
			fr := entryFrame(withPresence(peer, Presence{Coordinator: "coord-fake", Since: at, Online: true, Changed: at}))
			_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := s.conn.Write(fr); err != nil {
				return
			}
		}
	}()
	t.Cleanup(writer.Wait)

	testutil.WaitFor(t, 5*time.Second, "change queue reaches the backlog limit", func() bool { return c.changes.backlog() >= backlog })
	if testutil.Eventually(300*time.Millisecond, func() bool { return c.changes.backlog() > backlog+1 }) {
		t.Fatalf("change queue grew to %d, limit %d (+1 for the frame being applied)", c.changes.backlog(), backlog)
	}
	unblock()
	done := make(chan struct{})
	go func() { delivered.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("not every change was delivered after the subscriber caught up (backlog %d)", c.changes.backlog())
	}
	if !c.Status().Connected {
		t.Error("session lost")
	}
}

// offlineSession gives c a session on an in-memory connection that nobody
// reads, so that a test can apply frames with handleFrame as the run
// goroutine does (c must not be started). close closes both ends.
func offlineSession(c *Client) *clientSession {
	p1, p2 := net.Pipe()
	_ = p2.Close() // writes fail at once; nothing here writes (the writer is not running)
	s := &clientSession{
		addr:       "offline",
		conn:       tls.Client(p1, &tls.Config{}),
		out:        make(chan []byte, 1024),
		quit:       make(chan struct{}),
		readerDone: make(chan struct{}),
		pending:    map[uint32]chan error{},
	}
	c.sess = s
	return s
}

// TestClientPeerLimit: a coordinator sending peers one Entry at a time
// beyond MaxRegistryEntries does not grow the node past it; held peers
// still update.
func TestClientPeerLimit(t *testing.T) {
	m, cs := shared(t)
	c, err := NewClient(ClientOptions{Credentials: cs[0], Verifier: m.verifier(cs[0]), Coordinators: []string{"192.0.2.1:7000"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	s := offlineSession(c)
	defer s.close()
	now := time.Now()
	entry := func(creds int, version uint64) frame {
		r, err := newLocalRecord(cs[creds], LocalInfo{}, version, false)
		if err != nil {
			t.Fatal(err)
		}
		fr, _, err := decodeFrame(entryFrame(withPresence(r, Presence{Coordinator: "coord-x", Since: now, Online: true, Changed: now})))
		if err != nil {
			t.Fatal(err)
		}
		return fr
	}
	c.handleFrame(entry(1, uint64(now.UnixNano())))
	held := c.reg["node-b"]
	if held == nil {
		t.Fatal("first peer not added")
	}
	// Fill up with copies of node-b under other names (only the count matters).
	for i := len(c.reg); i < MaxRegistryEntries; i++ {
		r := held.Clone()
		r.Name = fmt.Sprintf("fill-%05d", i)
		c.reg[r.Name] = &r
	}
	c.handleFrame(entry(2, uint64(now.UnixNano())))
	if c.reg["node-c"] != nil || len(c.reg) != MaxRegistryEntries || c.Stats().RecordsOverLimit != 1 {
		t.Fatalf("peer beyond the limit: held %d, over-limit count %d", len(c.reg), c.Stats().RecordsOverLimit)
	}
	c.handleFrame(entry(1, uint64(now.UnixNano())+1))
	if c.reg["node-b"].Version != uint64(now.UnixNano())+1 || s.endErr != nil {
		t.Fatalf("held peer not updated (session error %v)", s.endErr)
	}
}

// FuzzClientFrames feeds a stream of coordinator frames to the node's frame
// handling, as its run goroutine applies them on a session, and checks after
// every frame that nothing the coordinator said grew the node beyond its
// limits or moved its record version out of bounds: the snapshot stays
// within the count it announced (itself at most MaxRegistryEntries), the
// registry within MaxRegistryEntries, and the node's version within
// MaxVersionSkew of its clock.
func FuzzClientFrames(f *testing.F) {
	m, cs := shared(f)
	self := cs[0]
	verifier := m.verifier(self)
	now := time.Now()
	var peers []*Record
	for _, c := range cs[1:] {
		r, err := newLocalRecord(c, LocalInfo{}, uint64(now.UnixNano()), false)
		if err != nil {
			f.Fatal(err)
		}
		peers = append(peers, withPresence(r, Presence{Coordinator: "coord-x", Since: now, Online: true, Changed: now}))
	}
	join := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	welcome := welcomeFrame("coord-x", now.UnixNano(), time.Second, 1)
	end := encodeFrame(frameSnapshotEnd, nil)
	f.Add(join(welcome, snapshotBeginFrame(2), entryFrame(peers[0]), entryFrame(peers[1]), end, removeFrame("node-b", 0, removeLeft)))
	f.Add(join(welcome, snapshotBeginFrame(1), entryFrame(peers[0]), entryFrame(peers[1]), end))
	f.Add(join(welcome, snapshotBeginFrame(1), snapshotBeginFrame(1)))
	f.Add(join(welcome, entryFrame(peers[0]), deliverFrame("node-b", []byte("x")), signalResultFrame(1, sigOK)))
	f.Add(join(errorFrame(CodeStaleRecord, uint64(now.Add(time.Minute).UnixNano()), "stale"), welcome))
	for _, h := range hostileFrameSeeds() {
		f.Add(join(welcome, h))
		f.Add(join(welcome, snapshotBeginFrame(1), h, end))
	}
	// One client, its run-goroutine state reset for every input (signing
	// its record per input would dominate the run).
	c, err := NewClient(ClientOptions{Credentials: self, Verifier: verifier, Coordinators: []string{"192.0.2.1:7000"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = c.Close() })
	c.ping = time.NewTicker(time.Hour)
	f.Cleanup(c.ping.Stop)
	local, info := c.local, c.info
	f.Fuzz(func(t *testing.T, b []byte) {
		c.reg, c.local, c.info, c.refusedHeld, c.everUp = map[string]*Record{}, local, info, 0, false
		s := offlineSession(c)
		defer s.close()
		v0 := c.local.Version
		for len(b) > 0 && s.endErr == nil {
			fr, n, err := decodeFrame(b)
			if err != nil {
				return // the session reader ends the session here
			}
			b = b[n:]
			checkFrameBounded(t, fr)
			c.handleFrame(fr)
			if s.snapshot != nil && (s.snapCount > MaxRegistryEntries || s.snapGot > s.snapCount || len(s.snapshot) > int(s.snapGot)) {
				t.Fatalf("snapshot of %d records after %d entries, %d announced", len(s.snapshot), s.snapGot, s.snapCount)
			}
			if len(c.reg) > MaxRegistryEntries {
				t.Fatalf("%d peers held", len(c.reg))
			}
			if v := c.local.Version; v < v0 || v > versionLimit(time.Now()) {
				t.Fatalf("record version moved from %d to %d", v0, v)
			}
		}
	})
}
