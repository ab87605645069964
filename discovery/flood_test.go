package discovery

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// bigCRL is a CA-signed CRL listing n certificates (~40 bytes each), the
// kind of list a mesh that has revoked many nodes carries.
func bigCRL(t *testing.T, m *testMesh, n int) *pki.CRL {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	certs := make([]*x509.Certificate, n)
	for i := range certs {
		nc, err := m.ca.Sign(key.Public(), testIdentity("revoked", i%200), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certs[i] = nc.Cert
	}
	crl, err := m.ca.Revoke(nil, certs, "retired", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(crl.Raw) > MaxFrameSize {
		t.Fatalf("CRL of %d bytes does not fit a frame", len(crl.Raw))
	}
	return crl
}

// flooder sends frames on one session as fast as it can while another
// goroutine reads (so that the coordinator is never held up by an unread
// connection) and records the first fatal error frame.
type flooder struct {
	conn   *tls.Conn
	code   atomic.Uint32 // first fatal error code received
	text   atomic.Pointer[string]
	sent   atomic.Int64
	wg     sync.WaitGroup
	quit   chan struct{}
	frames [][]byte
}

func startFlooder(t *testing.T, addr string, creds *pki.Credentials, register []byte, frames [][]byte) *flooder {
	t.Helper()
	conn, err := tlsDial(addr, creds)
	if err != nil {
		t.Fatal(err)
	}
	f := &flooder{conn: conn, quit: make(chan struct{}), frames: frames}
	br := bufio.NewReader(conn)
	if register != nil {
		if _, err := conn.Write(register); err != nil {
			t.Fatal(err)
		}
		var hdr [frameHeaderLen]byte
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			fr, err := readFrame(br, &hdr)
			if err != nil {
				t.Fatalf("flooder registration: %v", err)
			}
			if fr.typ == frameSnapshotEnd {
				break
			}
		}
		_ = conn.SetReadDeadline(time.Time{})
	}
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		var hdr [frameHeaderLen]byte
		for {
			fr, err := readFrame(br, &hdr)
			if err != nil {
				return
			}
			if fr.typ == frameError && ErrorCode(fr.code).fatal() && f.code.Load() == 0 {
				text := fr.text
				f.text.Store(&text)
				f.code.Store(uint32(fr.code))
			}
		}
	}()
	go func() {
		defer f.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-f.quit:
				return
			default:
			}
			_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(f.frames[i%len(f.frames)]); err != nil {
				return
			}
			f.sent.Add(1)
		}
	}()
	t.Cleanup(f.stop)
	return f
}

func (f *flooder) stop() {
	select {
	case <-f.quit:
	default:
		close(f.quit)
	}
	_ = f.conn.Close()
	f.wg.Wait()
}

// TestFloodingMemberCannotSaturateCoordinator: one member floods the
// coordinator with every frame kind from its registered session and with
// CRL frames (a large, valid, CA-signed CRL) from further connections that
// never register. A registry change still reaches every other session
// within 1 s, the unregistered connections are refused at their first CRL,
// the repeated CRL is verified once, and the flooding session is closed
// with CodeFlooding, which the node reads and logs.
func TestFloodingMemberCannotSaturateCoordinator(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t, func(o *CoordinatorOptions) { o.FloodDrops = 5000 })
	crl := bigCRL(t, m, 1000)
	names := []string{"node-b", "node-c", "node-d"}
	var clients []*testClient
	for i, n := range names {
		clients = append(clients, m.startClient(t, m.creds(t, n, i+2), []string{c.addr()}))
	}
	testutil.WaitFor(t, 10*time.Second, "nodes see each other", func() bool {
		for _, cl := range clients {
			if !seesAll(cl.Client, names, true) {
				return false
			}
		}
		return true
	})

	a := m.creds(t, "node-a", 1)
	recA, err := newLocalRecord(a, LocalInfo{}, uint64(time.Now().UnixNano()), false)
	if err != nil {
		t.Fatal(err)
	}
	crlF := crlFrame(crl.Raw)
	mixed := [][]byte{crlF, pingFrame(framePing, 1), recordFrame(frameRecord, recA), signalFrame(1, "node-b", []byte("x")), crlF}
	reg := startFlooder(t, c.addr(), a, recordFrame(frameRecord, recA), mixed)
	var unreg []*flooder
	for range 8 {
		unreg = append(unreg, startFlooder(t, c.addr(), a, nil, [][]byte{crlF}))
	}
	testutil.WaitFor(t, 5*time.Second, "flood under way", func() bool { return reg.sent.Load() > 50 })

	b := clients[0]
	if err := b.UpdateRecord(LocalInfo{Software: "v2"}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testutil.WaitFor(t, time.Second, "registry change reaches every other session within 1 s", func() bool {
		for _, cl := range clients[1:] {
			p, ok := cl.Peer("node-b")
			if !ok || p.Software != "v2" {
				return false
			}
		}
		return true
	})
	t.Logf("change reached every session in %v while %d frames were flooded", time.Since(start), reg.sent.Load())

	for i, f := range unreg {
		testutil.WaitFor(t, 5*time.Second, "unregistered CRL sender refused", func() bool { return f.code.Load() != 0 })
		if code := ErrorCode(f.code.Load()); code != CodeProtocol {
			t.Errorf("unregistered connection %d closed with %v (%s), want %v", i, code, *f.text.Load(), CodeProtocol)
		}
	}
	testutil.WaitFor(t, 20*time.Second, "flooding session closed", func() bool { return reg.code.Load() != 0 })
	if code := ErrorCode(reg.code.Load()); code != CodeFlooding {
		t.Fatalf("flooding session closed with %v (%s), want %v", code, *reg.text.Load(), CodeFlooding)
	}
	t.Logf("flooder closed: %s", *reg.text.Load())
	st := c.Stats()
	if st.SessionsFlooding == 0 || st.CRLsRepeated == 0 {
		t.Errorf("stats %+v: want the flood and the repeated CRL counted", st)
	}
	if !c.log.contains("closing node session: flooding", "peer=node-a") {
		t.Error("coordinator did not log the flooding session")
	}
}

// TestClientLogsFloodingRefusal: a node closed for flooding logs the reason.
func TestClientLogsFloodingRefusal(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t, func(o *CoordinatorOptions) { o.FrameRate, o.FrameBurst, o.FloodDrops = 1, 1, 2 })
	a := m.startClient(t, m.creds(t, "node-a", 1), []string{c.addr()})
	testutil.WaitFor(t, 5*time.Second, "registered", func() bool { return a.Status().Connected })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// 20 dropped signals weigh as 2 other frames (floodWeight).
	for range 40 {
		_ = a.SendSignal(ctx, "nobody", []byte("x"))
	}
	testutil.WaitFor(t, 5*time.Second, "refusal logged", func() bool {
		return a.log.contains("coordinator refused the session", "code=flooding")
	})
}

// TestFloodWeights: 500 dropped Pings, Records or CRLs within the window
// are a flood; a node whose many links meet the signal bucket needs ten
// times as many dropped Signals; a new window starts over.
func TestFloodWeights(t *testing.T) {
	tests := []struct {
		kind  frameType
		drops int // the drop that makes the session flooding
	}{
		{framePing, 500},
		{frameRecord, 500},
		{frameCRL, 500},
		{frameSignal, 5000},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			var l sessionLimits
			now := time.Unix(1000, 0)
			for i := 1; i <= tt.drops; i++ {
				tell, flooding := l.drop(tt.kind, now, 10*time.Second, 500)
				if tell != (i == 1) {
					t.Fatalf("drop %d: tell = %v", i, tell)
				}
				if flooding != (i == tt.drops) {
					t.Fatalf("drop %d: flooding = %v, want it first at %d", i, flooding, tt.drops)
				}
			}
			if _, flooding := l.drop(tt.kind, now.Add(11*time.Second), 10*time.Second, 500); flooding {
				t.Fatal("a new window still counts the old drops")
			}
		})
	}
}
