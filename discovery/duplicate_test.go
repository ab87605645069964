package discovery

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// duplicate_test.go: two hosts with one identity (issue "Real hosts", item
// 5: a VM cloned with its /etc/meshd). The established session keeps the
// node; the clone is refused with the holder's address, both sides log it
// once; a node whose old session died silently, or that restarted, still
// gets in quickly.

// quickKeepalive makes a claimed session's fate (two keepalive intervals)
// quick to decide.
func quickKeepalive(o *CoordinatorOptions) { o.KeepaliveInterval = time.Second }

// quickConflict makes a refused node retry every 20-200 ms, so a test sees
// many refusals in little time.
func quickConflict(o *ClientOptions) {
	o.ConflictBackoffMin, o.ConflictBackoffMax = 20*time.Millisecond, 200*time.Millisecond
}

// sessionRemote is the address a coordinator sees name's session come from
// ("" if it holds none).
func sessionRemote(t *testing.T, c *testCoord, name string) string {
	t.Helper()
	var remote string
	if err := c.do(func() {
		if s := c.sessions[name]; s != nil {
			remote = s.remote
		}
	}); err != nil {
		t.Fatal(err)
	}
	return remote
}

// countLines counts log lines containing every part.
func (l *logBuf) countLines(parts ...string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			n++
		}
	}
	return n
}

// presenceOf returns a coordinator's record of name.
func presenceOf(c *Coordinator, name string) (Record, bool) {
	for _, r := range c.Records() {
		if r.Name == name {
			return r, true
		}
	}
	return Record{}, false
}

func TestDuplicateIdentityRefused(t *testing.T) {
	tests := []struct {
		name string
		// holder and clone index the cluster's coordinators.
		coords, holder, clone int
	}{
		{"same coordinator", 1, 0, 0},
		{"different coordinators", 2, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.LeakCheck(t)
			m := newTestMesh(t)
			coords := startCluster(t, m, tt.coords, quickKeepalive)
			ac := m.creds(t, "node-a", 1)
			a := m.startClient(t, ac, []string{coords[tt.holder].addr()})
			b := m.startClient(t, m.creds(t, "node-b", 2), []string{coords[tt.clone].addr()})
			testutil.WaitFor(t, 10*time.Second, "node-a registered and known to node-b", func() bool {
				p, ok := b.Peer("node-a")
				return a.Status().Connected && ok && p.Presence.Online && coordHas(coords[tt.clone].Coordinator, "node-a", func(r Record) bool { return r.Presence.Online })
			})
			before := a.Status()
			heldRec, _ := presenceOf(coords[tt.holder].Coordinator, "node-a")
			holder := sessionRemote(t, coords[tt.holder], "node-a")
			if holder == "" {
				t.Fatal("no session of node-a at its coordinator")
			}

			// The clone: same certificate and key, another host.
			clone := m.startClient(t, ac, []string{coords[tt.clone].addr()}, quickConflict)
			start := time.Now()
			// Knocking for longer than two holder silences (2 s each): the
			// genuine node's session is probed and must survive every one.
			testutil.WaitFor(t, 15*time.Second, "clone refused repeatedly for several keepalive intervals", func() bool {
				return time.Since(start) > 5*time.Second && clone.Stats().DuplicateRefusals >= 10
			})

			st := clone.Status()
			var re *RefusedError
			if st.Connected || !errors.Is(st.LastError, ErrDuplicateIdentity) || !errors.Is(st.LastError, ErrRefused) || !errors.As(st.LastError, &re) {
				t.Fatalf("clone status %+v", st)
			}
			want := "another host at " + holder + " is using this node's identity (refused by coordinator " + coords[tt.clone].Name() + ")"
			if st.Conflict.Holder != holder || re.Holder != holder || st.Conflict.String() != want || st.Conflict.Refusals < 10 {
				t.Fatalf("clone conflict %+v (%q), want holder %s: %q", st.Conflict, st.Conflict.String(), holder, want)
			}

			// The genuine node lost nothing: same session all along.
			after := a.Status()
			if !after.Connected || !after.Since.Equal(before.Since) || after.Failovers != 0 || a.Stats().Failovers != 0 || after.Conflict.Active() {
				t.Fatalf("node-a's session changed: before %+v after %+v", before, after)
			}
			if a.log.contains("coordinator session lost") || a.log.contains("superseded") {
				t.Fatalf("node-a lost its session:\n%s", a.log.String())
			}
			for _, c := range coords {
				r, ok := presenceOf(c.Coordinator, "node-a")
				if !ok || r.Version != heldRec.Version || !r.Presence.Since.Equal(heldRec.Presence.Since) || !r.Presence.Online ||
					r.Presence.Coordinator != coords[tt.holder].Name() {
					t.Fatalf("%s's record of node-a changed: %+v, was %+v", c.Name(), r, heldRec)
				}
				if n := c.Stats().HoldersPresumedDead; n != 0 {
					t.Fatalf("%s presumed %d live sessions dead", c.Name(), n)
				}
			}
			if p, _ := b.Peer("node-a"); p.Version != heldRec.Version || !p.Presence.Since.Equal(heldRec.Presence.Since) {
				t.Fatalf("node-b sees node-a changed: %+v", p)
			}

			// Counted on both ends, logged once on both ends.
			if cs := coords[tt.clone].Stats(); cs.SessionsDuplicate < 10 || cs.SessionsRefused < cs.SessionsDuplicate {
				t.Fatalf("refusals not counted: %+v", cs)
			}
			if n := coords[tt.clone].log.countLines("refused node session: another host holds this node's session", "holder="+holder); n != 1 {
				t.Errorf("coordinator logged the refusal %d times, want once:\n%s", n, coords[tt.clone].log.String())
			}
			if n := clone.log.countLines("level=ERROR", "another host is using this node's identity: coordinator refused the session", want); n != 1 {
				t.Errorf("clone logged the refusal %d times, want once:\n%s", n, clone.log.String())
			}
			// Nothing else about it above debug level, on either end.
			if n := clone.log.countLines("level=WARN") + clone.log.countLines("level=ERROR"); n != 1 {
				t.Errorf("clone logged %d warnings and errors, want the one refusal:\n%s", n, clone.log.String())
			}
			for _, c := range coords {
				if n := c.log.countLines("level=WARN", "peer=node-a") + c.log.countLines("level=INFO", "peer=node-a", "refused"); n != boolInt(c == coords[tt.clone]) {
					t.Errorf("%s logged %d lines about refusing node-a:\n%s", c.Name(), n, c.log.String())
				}
			}
			// Knocking a handful of times per retry cap, not hammering.
			if n := clone.Stats().DuplicateRefusals; n > uint64(time.Since(start)/(100*time.Millisecond)) {
				t.Errorf("%d refusals in %v: the clone does not back off", n, time.Since(start))
			}
		})
	}
}

// TestConflictBackoffGrows: a refused node's delay doubles from
// ConflictBackoffMin, follows the coordinator's hint once it retried, and
// stops at ConflictBackoffMax.
func TestConflictBackoffGrows(t *testing.T) {
	m := newTestMesh(t)
	c, err := NewClient(ClientOptions{Credentials: m.creds(t, "node-a", 1), Verifier: m.verifier(nil), Coordinators: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tests := []struct {
		streak   int
		hint     time.Duration
		min, max time.Duration // the delay lies in [min, max]
	}{
		{1, 0, time.Second, 1250 * time.Millisecond},
		{1, 9 * time.Second, time.Second, 1250 * time.Millisecond}, // first retry ignores the hint: a restart race clears fast
		{2, 0, 2 * time.Second, 2500 * time.Millisecond},
		{2, 7 * time.Second, 7 * time.Second, 8750 * time.Millisecond},
		{5, 3 * time.Second, 16 * time.Second, 20 * time.Second},
		{7, 0, time.Minute, 75 * time.Second},
		{40, 0, time.Minute, 75 * time.Second},
		{3, time.Hour, time.Minute, 75 * time.Second},
	}
	for _, tt := range tests {
		c.dupStreak, c.dupHint, c.dupNext = tt.streak, tt.hint, true
		for range 20 {
			if d := c.backoff(); d < tt.min || d > tt.max {
				t.Errorf("streak %d hint %v: delay %v, want [%v, %v]", tt.streak, tt.hint, d, tt.min, tt.max)
				break
			}
		}
	}
}

// blackholeProxy forwards TCP connections to target until blackhole is
// called; then it swallows everything, closes included, in both
// directions: to the coordinator the node's session goes silent, as when
// its host loses power or moves to another network.
type blackholeProxy struct {
	ln     net.Listener
	target string
	holed  atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = down.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, down, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(up, down)
			go p.pipe(down, up)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *blackholeProxy) addr() string { return p.ln.Addr().String() }

func (p *blackholeProxy) blackhole() { p.holed.Store(true) }

// pipe copies src to dst until src ends; once holed it discards, and an
// end is not passed on.
func (p *blackholeProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.holed.Load() {
			if err != nil {
				return
			}
			continue
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				_ = dst.(*net.TCPConn).CloseWrite()
			} else {
				_ = dst.Close()
			}
			return
		}
	}
}

// TestDuplicateIdentityDeadHolderReplaced: node-a's session dies silently
// (no FIN, no leave: power loss, or the host moved to another network), and
// node-a comes back from another address, at the same coordinator or at
// another one. It is refused while the old session may still be alive, and
// gets in once the holder's coordinator presumes that session dead: within
// two keepalive intervals of its last ping, not the three of the ordinary
// timeout.
func TestDuplicateIdentityDeadHolderReplaced(t *testing.T) {
	tests := []struct {
		name        string
		coords, via int // the comeback connects to coords[via]; the old session was at coords[0]
	}{
		{"same coordinator", 1, 0},
		{"other coordinator", 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testutil.LeakCheck(t)
			m := newTestMesh(t)
			coords := startCluster(t, m, tt.coords, quickKeepalive)
			ac := m.creds(t, "node-a", 1)
			proxy := startBlackholeProxy(t, coords[0].addr())
			a := m.startClient(t, ac, []string{proxy.addr()})
			b := m.startClient(t, m.creds(t, "node-b", 2), []string{coords[tt.via].addr()})
			testutil.WaitFor(t, 10*time.Second, "node-a registered via the proxy and known everywhere", func() bool {
				p, ok := b.Peer("node-a")
				return a.Status().Connected && ok && p.Presence.Online && coordHas(coords[tt.via].Coordinator, "node-a", func(r Record) bool { return r.Presence.Online })
			})
			old := sessionRemote(t, coords[0], "node-a")

			// The host vanishes: its coordinator hears nothing more.
			proxy.blackhole()
			_ = a.Close()
			start := time.Now()
			back := m.startClient(t, ac, []string{coords[tt.via].addr()}, quickConflict)
			testutil.WaitFor(t, 10*time.Second, "node-a back from its new address", func() bool {
				return back.Status().Connected && coordHas(coords[tt.via].Coordinator, "node-a", func(r Record) bool {
					return r.Presence.Online && r.Presence.Coordinator == coords[tt.via].Name()
				})
			})
			// The old session was at most one keepalive (1 s) old when the
			// comeback arrived; it is presumed dead two intervals after its
			// last ping, plus a sweep and a retry.
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("comeback took %v", took)
			}
			if n := coords[0].Stats().HoldersPresumedDead; n != 1 {
				t.Errorf("old session presumed dead %d times, want once", n)
			}
			if st := back.Status(); st.Conflict.Active() || st.Failovers != 0 {
				t.Errorf("comeback status %+v", st)
			}
			// While the old session might still have been alive, the
			// comeback was told who held it.
			if n := back.Stats().DuplicateRefusals; n == 0 || !back.log.contains("another host at "+old) {
				t.Errorf("comeback not refused while the old session was undecided (%d refusals):\n%s", n, back.log.String())
			}
			testutil.WaitFor(t, 5*time.Second, "node-b sees node-a online again", func() bool {
				p, ok := b.Peer("node-a")
				return ok && p.Presence.Online && p.Presence.Coordinator == coords[tt.via].Name()
			})
		})
	}
}

// TestRestartSameAddressReconnects: a node that restarts (its old session
// ends with a FIN) reconnects at once from the same address, with default
// conflict backoff, and no session is presumed dead.
func TestRestartSameAddressReconnects(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t)
	ac := m.creds(t, "node-a", 1)
	for i := range 3 {
		a := m.startClient(t, ac, []string{c.addr()})
		start := time.Now()
		testutil.WaitFor(t, 5*time.Second, "node-a (re)connected", func() bool { return a.Status().Connected })
		// One conflict backoff (1 s) at most, should the old session's end
		// reach the coordinator after the new registration.
		if took := time.Since(start); took > 2500*time.Millisecond {
			t.Errorf("restart %d took %v", i, took)
		}
		_ = a.Close()
	}
	if st := c.Stats(); st.HoldersPresumedDead != 0 {
		t.Errorf("a cleanly closed session was presumed dead: %+v", st)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
