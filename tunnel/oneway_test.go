package tunnel

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestOneWay is the rule itself: the peer heard but this side's checks
// unanswered for PathTimeout + KeepaliveInterval, counted from when the
// link became active.
func TestOneWay(t *testing.T) {
	tm := testTimers()
	t0 := time.Unix(9_000_000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	limit := int((tm.PathTimeout + tm.KeepaliveInterval) / time.Millisecond)
	tests := []struct {
		name                          string
		now, heard, answered, rebound time.Time
		since                         time.Time
		want                          bool
	}{
		// heard: the peer's data, credited to the selected pair; rebound:
		// its checks from a new mapping at the pair's socket.
		{"a new mapping, answered recently", ms(limit + 100), ms(limit + 90), ms(200), ms(limit + 90), t0, false},
		{"a new mapping, unanswered for the limit", ms(limit + 100), ms(limit + 90), ms(100), ms(limit + 90), t0, true},
		{"a new mapping, unanswered just under the limit", ms(limit + 99), ms(limit + 90), ms(100), ms(limit + 90), t0, false},
		{"a new mapping, but no longer checking", ms(limit + 100), ms(limit + 90), ms(100), ms(limit + 100 - int(tm.PathTimeout/time.Millisecond)), t0, false},
		{"the new mapping is all that is heard", ms(limit + 100), ms(10), ms(100), ms(limit + 50), t0, true},
		{"never answered since active", ms(limit + 600), ms(limit + 590), time.Time{}, ms(limit + 590), ms(500), true},
		{"active only since recently", ms(limit + 100), ms(limit + 90), ms(100), ms(limit + 90), ms(500), false},
		// The peer's data arrives, ours is unanswered, but no new mapping
		// checks us: the peer moved the link and this side's checks on the
		// new pair are slow to be answered, or the path is dead both ways.
		// Liveness, relayLost and the path policy judge those.
		{"heard, unanswered, no new mapping", ms(limit + 100), ms(limit + 90), ms(100), time.Time{}, t0, false},
		{"never heard", ms(limit + 100), time.Time{}, time.Time{}, time.Time{}, t0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := oneWay(tt.now, pairTimes{heard: tt.heard, answered: tt.answered, rebound: tt.rebound}, tt.since, tm)
			if got != tt.want {
				t.Errorf("oneWay = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestOneWayAfterRebind: the NAT in front of the controlling side forgets
// its mapping while both sides send (a flushed conntrack: the lab's
// TestPaths/roaming). The controlling side's packets now leave from a new
// address, its checks are answered there, and the controlled side hears
// it; what the controlled side sends still goes to the forgotten mapping.
// Before oneway.go the controlled side waited for ICE's timers on a direct
// pair and, on a pair through its own relay (which credits the peer's
// data to the selected pair), for as long as the peer kept sending; now it
// restarts the link for ErrPathOneWay and traffic flows both ways again.
func TestOneWayAfterRebind(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 120*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	if !b.peer.controlling(a.peer.Fingerprint) {
		a, b = b, a // a is the controlling side: the one behind the NAT
	}
	for _, tc := range []struct {
		name   string
		tweakB func(t *testing.T) func(*Options)
	}{
		{"direct", func(*testing.T) func(*Options) { return nil }},
		{"through the controlled side's relay", func(t *testing.T) func(*Options) {
			turn := startLoopbackTURN(t)
			return func(o *Options) {
				o.ForceRelay = true
				o.Servers = func() []ICEServer {
					return []ICEServer{{URL: "turn:" + turn.udpAddr + "?transport=udp", Username: "user", Password: "pass"}}
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nat := newRebindingConn(t)
			p := startLinkedPair(t, a, b, func(o *Options) { o.PacketConn = nat }, tc.tweakB(t))
			t.Logf("%s (controlling, behind the NAT) → %s: %s", a.name, b.name, describeLink(p.ab))
			tr := startPinging(p)
			defer tr.stop()

			nat.rebind(t)
			at := time.Now()
			from := tr.next()
			testutil.WaitFor(t, 30*time.Second, b.name+"'s packets reach "+a.name+" again after its NAT rebound", func() bool {
				return tr.arrivedSince(p.atA, "ba", from)
			})
			t.Logf("traffic to the rebound side flows again %v after the rebind: %s", time.Since(at).Round(time.Millisecond), describeLink(p.ba))
			testutil.WaitFor(t, 10*time.Second, a.name+"'s packets reach "+b.name, func() bool { return tr.arrivedSince(p.atB, "ab", from) })
			if st := p.ba.Status(); !errors.Is(st.LastError, ErrPathOneWay) {
				t.Errorf("%s restarted the link for %v after %d failures, want %v", b.name, st.LastError, st.Failures, ErrPathOneWay)
			}
		})
	}
}

func describeLink(l *Link) string {
	st := l.Status()
	return fmt.Sprintf("%s %s/%s %s", st.Path, st.Local.Type, st.Remote.Type, st.Remote.Addr)
}

// pinging sends a numbered packet each way every 20 ms, as a ping and its
// replies do.
type pinging struct {
	wg   sync.WaitGroup
	done chan struct{}
	mu   sync.Mutex
	seq  int
}

func startPinging(p *linkedPair) *pinging {
	tr := &pinging{done: make(chan struct{})}
	tr.wg.Add(1)
	go func() {
		defer tr.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-tr.done:
				return
			case <-tick.C:
			}
			tr.mu.Lock()
			tr.seq = i
			tr.mu.Unlock()
			_, _ = p.ab.WriteBatch([][]byte{packet(fmt.Sprintf("ab-%d", i))}, HeaderRoom)
			_, _ = p.ba.WriteBatch([][]byte{packet(fmt.Sprintf("ba-%d", i))}, HeaderRoom)
		}
	}()
	return tr
}

func (tr *pinging) stop() { close(tr.done); tr.wg.Wait() }

// next is the number of the next packet to be sent.
func (tr *pinging) next() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.seq + 1
}

// arrivedSince reports whether c has a packet tag-i with i >= from.
func (tr *pinging) arrivedSince(c *collector, tag string, from int) bool {
	last := tr.next() - 1
	for i := from; i <= last; i++ {
		if c.has([]byte(fmt.Sprintf("%s-%d", tag, i))) {
			return true
		}
	}
	return false
}

// rebindingConn is a socket behind a NAT that can forget its mapping: its
// candidates name the first socket's address; after rebind, packets leave
// from a new port and what arrives at the old one is dropped.
type rebindingConn struct {
	home   *net.UDPConn
	reads  chan datagram
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu      sync.Mutex
	out     *net.UDPConn
	rebound bool
	extra   []*net.UDPConn
}

func newRebindingConn(t *testing.T) *rebindingConn {
	t.Helper()
	c := &rebindingConn{reads: make(chan datagram, 256), closed: make(chan struct{})}
	c.home = c.listen(t)
	c.out = c.home
	return c
}

func (c *rebindingConn) listen(t *testing.T) *net.UDPConn {
	t.Helper()
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			buf := make([]byte, 2048)
			n, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			forgotten := c.rebound && uc == c.home
			c.mu.Unlock()
			if forgotten {
				continue
			}
			select {
			case c.reads <- datagram{b: buf[:n], from: from}:
			case <-c.closed:
				return
			}
		}
	}()
	return uc
}

// rebind makes the NAT forget the mapping: a new source port from now on.
func (c *rebindingConn) rebind(t *testing.T) {
	uc := c.listen(t)
	c.mu.Lock()
	c.out, c.rebound = uc, true
	c.extra = append(c.extra, uc)
	c.mu.Unlock()
}

func (c *rebindingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-c.reads:
		return copy(b, d.b), d.from, nil
	case <-c.closed:
		return 0, nil, net.ErrClosed
	}
}

func (c *rebindingConn) WriteTo(b []byte, a net.Addr) (int, error) {
	c.mu.Lock()
	out := c.out
	c.mu.Unlock()
	return out.WriteTo(b, a)
}

func (c *rebindingConn) LocalAddr() net.Addr              { return c.home.LocalAddr() }
func (c *rebindingConn) SetDeadline(time.Time) error      { return nil }
func (c *rebindingConn) SetReadDeadline(time.Time) error  { return nil }
func (c *rebindingConn) SetWriteDeadline(time.Time) error { return nil }
func (c *rebindingConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	err := c.home.Close()
	c.mu.Lock()
	for _, uc := range c.extra {
		_ = uc.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return err
}
