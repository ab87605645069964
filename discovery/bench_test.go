package discovery

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/pki"
)

// benchCreds are minted once per process: every simulated session is its own
// node with its own certificate and key (records are per node), and ECDSA
// P-256 keeps a thousand of them cheap.
var (
	benchCredsMu sync.Mutex
	benchCreds   []*pki.Credentials
	benchMesh    *testMesh
)

func benchSetup(b *testing.B, n int) (*testMesh, []*pki.Credentials) {
	benchCredsMu.Lock()
	defer benchCredsMu.Unlock()
	if benchMesh == nil {
		benchMesh = newTestMesh(b)
	}
	for len(benchCreds) < n {
		i := len(benchCreds)
		benchCreds = append(benchCreds, benchMesh.creds(b, fmt.Sprintf("sim-%04d", i), i))
	}
	return benchMesh, benchCreds[:n]
}

// benchSession is a minimal node session: it registers, then reads and
// decodes every frame, noting when the probe record's awaited version arrives.
type benchSession struct {
	conn  *tls.Conn
	ready chan struct{}
}

type fanoutProbe struct {
	name    string
	want    atomic.Uint64 // version being awaited
	t0      atomic.Int64  // unix ns the change was sent
	got     atomic.Int64
	n       int64
	lat     []int64 // per session, written once per round by its reader
	done    atomic.Pointer[chan struct{}]
	readers sync.WaitGroup
}

func recordVersion(raw []byte, name string) (uint64, bool) {
	off := 3 + len(name)
	if len(raw) < off+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(raw[off:]), true
}

func (p *fanoutProbe) read(i int, s *benchSession) {
	defer p.readers.Done()
	br := bufio.NewReaderSize(s.conn, 4<<10)
	var hdr [frameHeaderLen]byte
	readyClosed := false
	for {
		f, err := readFrame(br, &hdr)
		if err != nil {
			if !readyClosed {
				close(s.ready)
			}
			return
		}
		switch f.typ {
		case frameSnapshotEnd:
			if !readyClosed {
				readyClosed = true
				close(s.ready)
			}
		case frameEntry:
			name, ok := peekRecordName(f.entry.raw)
			if !ok || name != p.name {
				continue
			}
			if v, ok := recordVersion(f.entry.raw, name); ok && v == p.want.Load() {
				p.lat[i] = time.Now().UnixNano() - p.t0.Load()
				if p.got.Add(1) == p.n {
					close(*p.done.Load())
				}
			}
		}
	}
}

// BenchmarkSessionFanout: N simulated node sessions (default 1000, override
// with DISCOVERY_BENCH_SESSIONS) on one coordinator; each iteration one node
// publishes a new record version and the time until every session has
// received it is measured. Reported: p50/p99 of per-session delivery latency,
// the mean time until the last session has it, and heap+stack per session
// (both ends of the loopback sessions live in this process, so it is an upper
// bound for the coordinator side). Run with e.g.
//
//	go test -run XXX -bench SessionFanout -benchtime 50x ./discovery
func BenchmarkSessionFanout(b *testing.B) {
	n := 1000
	if s := os.Getenv("DISCOVERY_BENCH_SESSIONS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 2 {
			b.Fatalf("DISCOVERY_BENCH_SESSIONS=%q", s)
		}
	}
	m, creds := benchSetup(b, n)
	c := m.startCoord(b, "coord-bench", 1023, nil, func(o *CoordinatorOptions) {
		o.MaxSessions = n + 10
		o.KeepaliveInterval = time.Minute
		o.HandshakeTimeout = time.Minute
		o.SweepInterval = time.Second
	})
	probe := &fanoutProbe{name: creds[0].Cert.Identity.Name, n: int64(n), lat: make([]int64, n)}
	initDone := make(chan struct{})
	probe.done.Store(&initDone)

	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)

	sessions := make([]*benchSession, n)
	sem := make(chan struct{}, 32)
	var dial sync.WaitGroup
	var dialErr atomic.Pointer[error]
	for i := range n {
		dial.Add(1)
		sem <- struct{}{}
		go func() {
			defer dial.Done()
			defer func() { <-sem }()
			conn, err := tlsDial(c.addr(), creds[i])
			if err == nil {
				var rec *Record
				rec, err = newLocalRecord(creds[i], LocalInfo{}, 1, false)
				if err == nil {
					_, err = conn.Write(recordFrame(frameRecord, rec))
				}
			}
			if err != nil {
				dialErr.Store(&err)
				return
			}
			s := &benchSession{conn: conn, ready: make(chan struct{})}
			sessions[i] = s
			probe.readers.Add(1)
			go probe.read(i, s)
		}()
	}
	dial.Wait()
	b.Cleanup(func() {
		for _, s := range sessions {
			if s != nil {
				_ = s.conn.Close()
			}
		}
		probe.readers.Wait()
	})
	if p := dialErr.Load(); p != nil {
		b.Fatal(*p)
	}
	for _, s := range sessions {
		<-s.ready
	}
	if got := c.Stats().Sessions; got != n {
		b.Fatalf("%d sessions registered, want %d", got, n)
	}
	runtime.GC()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	perSession := float64(int64(ms1.HeapInuse+ms1.StackInuse)-int64(ms0.HeapInuse+ms0.StackInuse)) / float64(n)

	recs := make([]*Record, b.N)
	for i := range recs {
		var err error
		if recs[i], err = newLocalRecord(creds[0], LocalInfo{Software: "probe " + strconv.Itoa(i)}, uint64(i+2), false); err != nil {
			b.Fatal(err)
		}
	}
	var all []int64
	var lastSum int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		done := make(chan struct{})
		probe.done.Store(&done)
		probe.got.Store(0)
		probe.want.Store(recs[i].Version)
		probe.t0.Store(time.Now().UnixNano())
		if _, err := sessions[0].conn.Write(recordFrame(frameRecord, recs[i])); err != nil {
			b.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			b.Fatalf("round %d: %d of %d sessions got the change", i, probe.got.Load(), n)
		}
		all = append(all, probe.lat...)
		lastSum += slices.Max(probe.lat)
	}
	b.StopTimer()
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))]) / 1e6 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lastSum)/float64(b.N)/1e6, "all-sessions-ms")
	b.ReportMetric(perSession, "B/session")
	b.ReportMetric(float64(n), "sessions")
}
