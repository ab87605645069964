package tunnel

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
	"github.com/pion/transport/v5/vnet"

	"github.com/meshd/meshd/internal/testutil"
)

// idleTimers are the production idle timers with the test path timers.
func idleTimers() Timers {
	t := DefaultTimers()
	t.PathTimeout = 2 * time.Second
	t.DisconnectedTimeout = 3 * time.Second
	t.FailedTimeout = 7 * time.Second
	return t.withDefaults()
}

// TestIdleTracker drives the tracker with a fake clock through a link's
// life: traffic, silence, idle keepalives answered, one lost, traffic again.
func TestIdleTracker(t *testing.T) {
	tm := idleTimers()
	t0 := time.Unix(1_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	var tr idleTracker
	tr.reset(t0, 0)
	const never = -1
	steps := []struct {
		name      string
		now       time.Duration
		count     uint64
		heard     time.Duration // since t0
		elsewhere time.Duration // since t0; never: no check from another address
		idle      bool
		woke      bool
	}{
		{"traffic keeps it active", 5 * time.Second, 10, 5 * time.Second, never, false, false},
		{"quiet, but not for IdleAfter yet", 14 * time.Second, 10, 14 * time.Second, never, false, false},
		{"quiet for IdleAfter, pair answering: idle", 15 * time.Second, 10, 14 * time.Second, never, true, false},
		{"idle keepalive not yet due: still idle", 30 * time.Second, 10, 14 * time.Second, never, true, false},
		{"keepalive answered", 35 * time.Second, 10, 35 * time.Second, never, true, false},
		{"one keepalive late but within 2 PathTimeouts", 58 * time.Second, 10, 35 * time.Second, never, true, false},
		{"a keepalive lost: wake and probe fast", 59500 * time.Millisecond, 10, 35 * time.Second, never, false, true},
		{"after waking it stays active for IdleAfter", 60 * time.Second, 10, 59 * time.Second, never, false, false},
		{"then idle again", 69500 * time.Millisecond, 10, 69 * time.Second, never, true, false},
		{"a data record wakes it at once", 70 * time.Second, 11, 69 * time.Second, never, false, true},
		{"active while data is recent", 75 * time.Second, 11, 74 * time.Second, never, false, false},
		{"quiet for IdleAfter: idle again", 80 * time.Second, 11, 79 * time.Second, never, true, false},
		{"the peer checks from another address: wake", 85 * time.Second, 11, 79 * time.Second, 84 * time.Second, false, true},
		{"that check is old news: idle again", 96 * time.Second, 11, 95 * time.Second, 84 * time.Second, true, false},
		{"data again", 101 * time.Second, 12, 99 * time.Second, 84 * time.Second, false, true},
		{"no idling while the pair is silent", 115 * time.Second, 12, 105 * time.Second, 84 * time.Second, false, false},
	}
	for _, s := range steps {
		var elsewhere time.Time
		if s.elsewhere != never {
			elsewhere = at(s.elsewhere)
		}
		idle, woke := tr.observe(at(s.now), s.count, at(s.heard), elsewhere, tm)
		if idle != s.idle || woke != s.woke {
			t.Fatalf("%s: idle=%v woke=%v, want idle=%v woke=%v", s.name, idle, woke, s.idle, s.woke)
		}
		if woke && !tr.activeSince.Equal(at(s.now)) {
			t.Fatalf("%s: activeSince %v, want the wake time", s.name, tr.activeSince.Sub(t0))
		}
	}
}

// TestIdleKeepaliveWithinNATTimeout: between two keepalives an idle link
// stays silent at most IdleKeepalive plus one pion tick, under the 25 s
// NAT mapping timeouts seen in the field, and it costs one exchange per
// IdleKeepalive: within the budget of one packet per 10 s each way.
func TestIdleKeepaliveWithinNATTimeout(t *testing.T) {
	tm := idleTimers()
	if gap := tm.IdleKeepalive + DefaultTimers().KeepaliveInterval; gap >= 25*time.Second {
		t.Errorf("an idle link may be silent %v, NAT mappings of 25 s would expire", gap)
	}
	if tm.IdleKeepalive < 10*time.Second {
		t.Errorf("IdleKeepalive %v: more than one packet per 10 s each way", tm.IdleKeepalive)
	}
	// A pion keepalive every KeepaliveInterval for 10 minutes: what the
	// controlling side's gate lets out.
	now := time.Unix(2_000_000, 0)
	g := newIdleGate(true, tm.IdleKeepalive)
	g.now = func() time.Time { return now }
	dst := netip.MustParseAddrPort("198.51.100.7:5000")
	other := netip.MustParseAddrPort("198.51.100.8:5000")
	g.setSelected(dst, false)
	g.setIdle(true)
	sent, last, maxGap := 0, now, time.Duration(0)
	start := now
	for now.Sub(start) < 10*time.Minute {
		now = now.Add(DefaultTimers().KeepaliveInterval)
		if g.allow(other, false) || g.allow(dst, true) {
			t.Fatal("the gate let out a check on a pair that is not the selected one")
		}
		if g.allow(dst, false) {
			sent++
			maxGap = max(maxGap, now.Sub(last))
			last = now
		}
	}
	if rate := float64(sent) / 600; rate > 0.1 || sent == 0 {
		t.Errorf("idle link sent %d checks in 10 minutes (%.3f/s), want ≤ 0.1/s and some", sent, rate)
	}
	if maxGap >= 25*time.Second {
		t.Errorf("longest gap between idle keepalives %v, want < 25 s", maxGap)
	}
	t.Logf("idle: %d keepalives in 10 min, longest gap %v", sent, maxGap)
}

func TestIdleGate(t *testing.T) {
	now := time.Unix(3_000_000, 0)
	dst := netip.MustParseAddrPort("198.51.100.7:5000")
	for _, tc := range []struct {
		name        string
		controlling bool
		idle        bool
		selRelay    bool
		dst         netip.AddrPort
		relayed     bool
		advance     time.Duration
		want        bool
	}{
		{"active: everything passes", false, false, false, dst, false, 0, true},
		{"active controlling: other pairs pass", true, false, false, netip.MustParseAddrPort("203.0.113.1:9"), true, 0, true},
		{"idle controlled: its own checks are withheld", false, true, false, dst, false, time.Minute, false},
		{"idle controlling: first keepalive half an interval after going idle", true, true, false, dst, false, 10 * time.Second, true},
		{"idle controlling: not before", true, true, false, dst, false, 9 * time.Second, false},
		{"idle controlling: relayed selected, ChannelData (no peer)", true, true, true, netip.AddrPort{}, true, 11 * time.Second, true},
		{"idle controlling: direct check while a relay is selected", true, true, true, dst, false, time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := now
			g := newIdleGate(tc.controlling, 20*time.Second)
			g.now = func() time.Time { return clock }
			g.setSelected(dst, tc.selRelay)
			g.setIdle(tc.idle)
			clock = clock.Add(tc.advance)
			if got := g.allow(tc.dst, tc.relayed); got != tc.want {
				t.Fatalf("allow = %v, want %v", got, tc.want)
			}
		})
	}
}

// bindingRequest builds the binding request pion's agent sends.
func bindingRequest(t testing.TB, username string) []byte {
	t.Helper()
	m, err := stun.Build(stun.BindingRequest, stun.TransactionID, stun.NewUsername(username),
		stun.NewShortTermIntegrity("password-of-the-peer-123"), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func channelData(ch uint16, payload []byte) []byte {
	b := make([]byte, channelDataHeaderLen+len(payload))
	binary.BigEndian.PutUint16(b[0:2], ch)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(payload)))
	copy(b[4:], payload)
	return b
}

func sendIndication(t testing.TB, peer netip.AddrPort, payload []byte) []byte {
	t.Helper()
	m := stun.New()
	m.Type = stun.NewType(stun.MethodSend, stun.ClassIndication)
	m.TransactionID = stun.NewTransactionID()
	m.WriteHeader()
	ip := peer.Addr().As4()
	xor := stun.XORMappedAddress{IP: ip[:], Port: int(peer.Port())}
	if err := xor.AddToAs(m, stun.AttrXORPeerAddress); err != nil {
		t.Fatal(err)
	}
	m.Add(stun.AttrData, payload)
	return m.Raw
}

// TestIdleGatesClassify: the gates find the session of a binding request
// sent directly, in ChannelData and in a Send indication, and let every
// other datagram (answers, DTLS, TURN's own requests) through.
func TestIdleGatesClassify(t *testing.T) {
	var gs idleGates
	now := time.Unix(4_000_000, 0)
	g := newIdleGate(false, 20*time.Second) // controlled, idle: withholds all its checks
	g.now = func() time.Time { return now }
	g.setIdle(true)
	gs.add("localUfrag", g)
	peer := netip.MustParseAddrPort("198.51.100.9:5000")
	req := bindingRequest(t, "remoteUfrag:localUfrag")
	foreign := bindingRequest(t, "remoteUfrag:someoneElse")
	resp, err := stun.Build(stun.BindingSuccess, stun.TransactionID, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		b       []byte
		relayed bool
		want    bool
	}{
		{"direct request", req, false, false},
		{"request in ChannelData", channelData(0x4001, req), true, false},
		{"request in a Send indication", sendIndication(t, peer, req), true, false},
		{"another session's request", foreign, false, true},
		{"a response", resp.Raw, false, true},
		{"a response in ChannelData", channelData(0x4001, resp.Raw), true, true},
		{"DTLS", []byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, false, true},
		{"truncated ChannelData", channelData(0x4001, req)[:30], true, true},
	} {
		if got := gs.allow(tc.b, peer, tc.relayed); got != tc.want {
			t.Errorf("%s: allow = %v, want %v", tc.name, got, tc.want)
		}
	}
	gs.remove("localUfrag")
	if !gs.allow(req, peer, false) {
		t.Error("a removed session's gate still withholds checks")
	}
}

func TestLiveness(t *testing.T) {
	tm := idleTimers()
	t0 := time.Unix(5_000_000, 0)
	for _, tc := range []struct {
		name         string
		heard, since time.Duration
		now          time.Duration
		want         ice.ConnectionState
	}{
		{"heard just now", 10 * time.Second, 0, 10 * time.Second, ice.ConnectionStateConnected},
		{"silent past DisconnectedTimeout", 10 * time.Second, 0, 13500 * time.Millisecond, ice.ConnectionStateDisconnected},
		{"silent past both timeouts", 10 * time.Second, 0, 20500 * time.Millisecond, ice.ConnectionStateFailed},
		{"silent while idle, just woke: counted from the wake", 10 * time.Second, 40 * time.Second, 41 * time.Second, ice.ConnectionStateConnected},
		{"woke, then silent past DisconnectedTimeout", 10 * time.Second, 40 * time.Second, 43500 * time.Millisecond, ice.ConnectionStateDisconnected},
	} {
		if got := liveness(t0.Add(tc.now), t0.Add(tc.heard), t0.Add(tc.since), tm); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzIdleClassify(f *testing.F) {
	req := bindingRequest(f, "r:l")
	f.Add(req)
	f.Add(channelData(0x4000, req))
	f.Add(sendIndication(f, netip.MustParseAddrPort("192.0.2.1:9"), req))
	f.Add([]byte{0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42})
	f.Fuzz(func(t *testing.T, b []byte) {
		requestUfrag(b)
		if inner, _ := unwrapTURN(b); inner != nil {
			requestUfrag(inner)
		}
		stunAttr(b, stunAttrUsername)
	})
}

// TestVNetIdleLinkIsQuiet: two nodes behind NATs with a STUN/TURN server
// (direct and relayed pairs, as in the field). Once the link has carried no
// data for IdleAfter it goes idle and each node's uplink carries about one
// packet per IdleKeepalive (before: a check on every pair every
// KeepaliveInterval, from both sides); the first packet after the idle
// spell is delivered; and a direct path that died while the link was idle
// is left for the relay as soon as traffic wants it, within the session.
func TestVNetIdleLinkIsQuiet(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 120*time.Second)
	timers := testTimers()
	timers.IdleAfter = time.Second
	timers.IdleKeepalive = 2 * time.Second
	nat := &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointIndependent}
	v := buildVNet(t, nat, nat)
	pubA, pubB := net.ParseIP(vnetPublicA), net.ParseIP(vnetPublicB)
	var fromA, fromB atomic.Uint64
	var seen wanLog
	v.wan.AddChunkFilter(func(c vnet.Chunk) bool {
		if src, ok := c.SourceAddr().(*net.UDPAddr); ok {
			switch {
			case src.IP.Equal(pubA):
				fromA.Add(1)
				seen.add("alpha", c)
			case src.IP.Equal(pubB):
				fromB.Add(1)
				seen.add("bravo", c)
			}
		}
		return true
	})
	ab, ba, _, _ := vnetPair(t, v, []ICEServer{stunServer(), turnServer()}, timers)
	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "links connected directly", func() bool {
		return ab.Status().Path == PathDirect && ba.Status().Path == PathDirect
	})
	exchange(t, ab, &atB, "before", 5*time.Second)
	exchange(t, ba, &atA, "before", 5*time.Second)
	gen := ab.Status().Generation

	testutil.WaitFor(t, 10*time.Second, "both ends idle", func() bool {
		return ab.Status().Idle && ba.Status().Idle
	})
	a0, b0 := fromA.Load(), fromB.Load()
	window := 5 * timers.IdleKeepalive
	seen.start()
	<-time.After(window) // a measurement period, not a wait for a condition
	a, b := fromA.Load()-a0, fromB.Load()-b0
	t.Logf("uplink packets in the window: %s", seen.stop())
	// One check per IdleKeepalive from the controlling side and its answer
	// from the other; one more each for a keepalive at either edge of the
	// window, and 2 for TURN upkeep.
	limit := uint64(window/timers.IdleKeepalive) + 1 + 2
	t.Logf("idle for %v (keepalive %v): %d packets from alpha, %d from bravo (limit %d each)", window, timers.IdleKeepalive, a, b, limit)
	if a > limit || b > limit {
		t.Errorf("an idle link sent %d / %d packets in %v, want ≤ %d each", a, b, window, limit)
	}
	if st := ab.Status(); st.State != StateConnected || !st.Idle || st.Generation != gen {
		t.Errorf("after the idle window: state %v idle %v generation %d (was %d), want connected, idle, same session", st.State, st.Idle, st.Generation, gen)
	}

	// The first packet after the idle spell arrives (no reconnect).
	sent := time.Now()
	if _, err := ab.WriteBatch([][]byte{packet("after-idle")}, HeaderRoom); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Second, "the first packet after idling delivered", func() bool { return atB.has([]byte("after-idle")) })
	t.Logf("first packet after idling delivered in %v", time.Since(sent).Round(time.Microsecond))
	testutil.WaitFor(t, 2*time.Second, "the link wakes up", func() bool { return !ab.Status().Idle && !ba.Status().Idle })

	// The direct path dies while the link is idle: traffic that follows
	// wakes the link, which moves to the relay within the session.
	testutil.WaitFor(t, 10*time.Second, "both ends idle again", func() bool {
		return ab.Status().Idle && ba.Status().Idle
	})
	v.cut.Store(true)
	cutAt := time.Now()
	exchange(t, ab, &atB, "after-cut", 15*time.Second)
	exchange(t, ba, &atA, "after-cut", 15*time.Second)
	t.Logf("direct path cut while idle: traffic flows both ways over %v after %v", ab.Status().Path, time.Since(cutAt).Round(time.Millisecond))
	if st := ab.Status(); st.Path != PathRelay || st.Generation != gen {
		t.Errorf("after the cut: path %v generation %d (was %d), want the relay within the same session", st.Path, st.Generation, gen)
	}
}

// wanLog counts the datagrams the nodes send over the WAN while started,
// by sender, destination and kind, so that a loud idle link shows which
// packets it sent.
type wanLog struct {
	mu          sync.Mutex
	on          bool
	t0          time.Time
	n           map[string]int
	first, last map[string]time.Duration
}

func (w *wanLog) start() {
	w.mu.Lock()
	w.on, w.t0, w.n = true, time.Now(), map[string]int{}
	w.first, w.last = map[string]time.Duration{}, map[string]time.Duration{}
	w.mu.Unlock()
}

func (w *wanLog) stop() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.on = false
	keys := make([]string, 0, len(w.n))
	for k := range w.n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n\t%s: %d (%v to %v into the window)", k, w.n[k], w.first[k].Round(time.Millisecond), w.last[k].Round(time.Millisecond))
	}
	return b.String()
}

func (w *wanLog) add(from string, c vnet.Chunk) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.on {
		k := fmt.Sprintf("%s → %s %s", from, c.DestinationAddr(), datagramKind(c.UserData()))
		d := time.Since(w.t0)
		if w.n[k] == 0 {
			w.first[k] = d
		}
		w.n[k]++
		w.last[k] = d
	}
}

// datagramKind names what a node's datagram is: a STUN message by type
// (inside TURN framing: the TURN frame, then the STUN message it carries),
// a DTLS record, or other.
func datagramKind(b []byte) string {
	stunType := func(b []byte) (string, bool) {
		if len(b) < stunHeaderLen || binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
			return "", false
		}
		return fmt.Sprintf("stun %#04x", binary.BigEndian.Uint16(b[0:2])), true
	}
	if inner, _ := unwrapTURN(b); inner != nil {
		outer := "channel-data"
		if len(b) >= 2 && b[0]&0xc0 != 0x40 {
			outer = "send-indication"
		}
		if k, ok := stunType(inner); ok {
			return outer + "(" + k + ")"
		}
		return outer + "(other)"
	}
	if k, ok := stunType(b); ok {
		return k
	}
	if len(b) > 0 && b[0] >= 20 && b[0] <= 63 {
		return "dtls"
	}
	return "other"
}

// TestPairHeard: an idle link's keepalive leaves through the gate for the
// selected remote address once per IdleKeepalive, for whichever pair pion
// wrote it; a server-reflexive local candidate sends from its host base,
// so its pair to the same remote address is the same path on the wire and
// its answer is the selected pair's. Before, only the selected pair's own
// stats counted: when pion's check for the twin pair won the gate, the
// selected pair looked silent, the link woke after IdleKeepalive +
// 2*PathTimeout and checked every pair at the active pace
// (TestVNetIdleLinkIsQuiet's flake). A relayed pair, another base or
// another remote address is another path and does not count.
func TestPairHeard(t *testing.T) {
	t0 := time.Unix(9_000_000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	remotes := map[string]string{"r-srflx": "203.0.113.2:49152", "r-host": "10.0.2.2:5000", "r-relay": "198.51.100.20:5001", "r-prflx": "203.0.113.2:50111"}
	prflx := map[string]bool{"r-prflx": true}
	wire := map[string]string{
		"l-host": "10.0.1.2:5000", "l-srflx": "10.0.1.2:5000", // the srflx candidate's base is the host one
		"l-host2": "10.0.9.2:5000", "l-relay": "id:l-relay",
	}
	sel := ice.CandidatePairStats{LocalCandidateID: "l-host", RemoteCandidateID: "r-srflx", LastPacketReceivedTimestamp: at(1)}
	pair := func(local, remote string, resp, req int) ice.CandidatePairStats {
		st := ice.CandidatePairStats{LocalCandidateID: local, RemoteCandidateID: remote}
		if resp > 0 {
			st.LastResponseTimestamp = at(resp)
		}
		if req > 0 {
			st.LastRequestReceivedTimestamp = at(req)
		}
		return st
	}
	tests := []struct {
		name                                string
		stats                               []ice.CandidatePairStats
		heard, answered, elsewhere, rebound time.Time
	}{
		{"the selected pair answered", []ice.CandidatePairStats{pair("l-host", "r-srflx", 5, 0), pair("l-srflx", "r-srflx", 3, 0)}, at(5), at(5), time.Time{}, time.Time{}},
		{"its twin through the same base answered", []ice.CandidatePairStats{pair("l-host", "r-srflx", 2, 0), pair("l-srflx", "r-srflx", 9, 0)}, at(9), at(9), time.Time{}, time.Time{}},
		{"the peer checked the twin", []ice.CandidatePairStats{pair("l-host", "r-srflx", 2, 0), pair("l-srflx", "r-srflx", 0, 8)}, at(8), at(2), time.Time{}, time.Time{}},
		{"a relayed pair to the same address is another path", []ice.CandidatePairStats{pair("l-host", "r-srflx", 2, 0), pair("l-relay", "r-srflx", 9, 0)}, at(2), at(2), time.Time{}, time.Time{}},
		{"another base is another path", []ice.CandidatePairStats{pair("l-host", "r-srflx", 2, 0), pair("l-host2", "r-srflx", 9, 0)}, at(2), at(2), time.Time{}, time.Time{}},
		{"another remote address is elsewhere", []ice.CandidatePairStats{pair("l-host", "r-srflx", 2, 0), pair("l-srflx", "r-host", 9, 7)}, at(2), at(2), at(7), time.Time{}},
		{"the selected pair left the check list", []ice.CandidatePairStats{pair("l-srflx", "r-srflx", 9, 0)}, at(9), at(9), time.Time{}, time.Time{}},
		// The peer's NAT rebound: its checks come from a new address,
		// pion credits its data (at 1) to the selected pair, and none of
		// ours was answered: heard but not answered (oneway.go).
		{"only the peer's data and checks from its new address", []ice.CandidatePairStats{pair("l-host", "r-srflx", 0, 0), pair("l-host", "r-prflx", 6, 6)}, at(1), time.Time{}, at(6), at(6)},
		{"a new mapping checking the twin's socket", []ice.CandidatePairStats{pair("l-host", "r-srflx", 2, 0), pair("l-srflx", "r-prflx", 0, 6)}, at(2), at(2), at(6), at(6)},
		{"a new mapping at another socket is another path", []ice.CandidatePairStats{pair("l-host", "r-srflx", 2, 0), pair("l-relay", "r-prflx", 0, 6)}, at(2), at(2), at(6), time.Time{}},
		{"a signalled candidate checking the same socket is another pair", []ice.CandidatePairStats{pair("l-host", "r-srflx", 2, 0), pair("l-host", "r-relay", 0, 6)}, at(2), at(2), at(6), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt := pairHeard(sel, tt.stats, remotes, prflx, wire)
			if !pt.heard.Equal(tt.heard) || !pt.answered.Equal(tt.answered) || !pt.elsewhere.Equal(tt.elsewhere) || !pt.rebound.Equal(tt.rebound) {
				since := func(x time.Time) string {
					if x.IsZero() {
						return "never"
					}
					return x.Sub(t0).String()
				}
				t.Errorf("heard %s answered %s elsewhere %s rebound %s, want %s, %s, %s and %s", since(pt.heard), since(pt.answered), since(pt.elsewhere), since(pt.rebound),
					since(tt.heard), since(tt.answered), since(tt.elsewhere), since(tt.rebound))
			}
		})
	}
}
