package tunnel

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel/record"
)

func TestBackoff(t *testing.T) {
	min, max := 100*time.Millisecond, 2*time.Second
	for n, base := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: 1600 * time.Millisecond, 6: 2 * time.Second, 50: 2 * time.Second} {
		for i := 0; i < 100; i++ {
			d := backoff(n, min, max)
			lo, hi := time.Duration(float64(base)*0.8), time.Duration(float64(base)*1.2)
			if d < lo || d > hi {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, lo, hi)
			}
		}
	}
}

func TestStateStrings(t *testing.T) {
	for s, want := range map[State]string{
		StateNew: "new", StateChecking: "checking", StateHandshaking: "handshaking", StateConnected: "connected",
		StateDisconnected: "disconnected", StateFailed: "failed", StateClosed: "closed", State(42): "State(42)",
	} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(s), s, want)
		}
	}
	for p, want := range map[Path]string{PathNone: "none", PathDirect: "direct", PathRelay: "relay", Path(9): "Path(9)"} {
		if p.String() != want {
			t.Errorf("Path %d = %q, want %q", int(p), p, want)
		}
	}
	if EventState.String() != "state" || EventPath.String() != "path" {
		t.Error("EventKind strings")
	}
}

func TestLinkDownError(t *testing.T) {
	alias := errors.New("overlay: link down")
	e := &linkDownError{alias: alias}
	if !errors.Is(e, ErrLinkDown) || !errors.Is(e, alias) || errors.Is(e, ErrClosed) {
		t.Fatal("linkDownError matches the wrong sentinels")
	}
	cause := errors.New("boom")
	w := &linkDownError{alias: alias, cause: cause}
	if !errors.Is(w, cause) || !errors.Is(w, alias) || w.Error() != "tunnel: link down: boom" {
		t.Fatalf("wrapped: %v", w)
	}
}

func TestOptionsValidation(t *testing.T) {
	ca := newTestCA(t, "mesh")
	a := ca.node(t, "alpha", 1, 0, nil)
	base := func() Options {
		return Options{Credentials: a.creds, Verifier: nil, Signaler: newMemSignals().from("alpha")}
	}
	bad := []func(*Options){
		func(o *Options) {}, // no verifier
		func(o *Options) { o.Credentials = nil },
		func(o *Options) { o.Signaler = nil },
		func(o *Options) { o.ListenPort = 70000 },
		func(o *Options) { o.Timers.RetryMin = 2 * time.Minute },
		func(o *Options) { o.Timers.CheckInterval = -1 },
		func(o *Options) { o.Timers.PathTimeout = 500 * time.Millisecond }, // <= keepalive (1s)
		func(o *Options) { o.ExcludePrefixes = []netip.Prefix{{}} },
		func(o *Options) { o.Cipher = record.Cipher(9) },
		func(o *Options) { o.RekeyAfterRecords = record.RecordLimit + 1 },
		func(o *Options) { o.Timers.RekeyOverlap = -time.Second },
	}
	for i, f := range bad {
		o := base()
		if i > 0 {
			o.Verifier = startVerifier(a)
		}
		f(&o)
		if _, err := NewManager(o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("case %d: NewManager = %v, want ErrInvalidOptions", i, err)
		}
	}
	o := base()
	o.Verifier = startVerifier(a)
	m, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	if m.timers != DefaultTimers() {
		t.Errorf("zero timers were not defaulted: %+v", m.timers)
	}
}

func TestAddrFilter(t *testing.T) {
	overlayPrefix := netip.MustParsePrefix("100.64.0.0/10")
	any := addrFilter(true, []netip.Prefix{overlayPrefix})
	bound := addrFilter(false, []netip.Prefix{overlayPrefix})
	for _, tc := range []struct {
		ip         string
		any, bound bool
	}{
		{"192.0.2.1", true, true},
		{"127.0.0.1", false, true},
		{"fe80::1", false, true},
		{"100.64.0.7", false, false},
		{"::ffff:100.64.0.7", false, false},
		{"0.0.0.0", false, false},
		{"224.0.0.1", false, false},
	} {
		ip := netip.MustParseAddr(tc.ip)
		if any(ip) != tc.any || bound(ip) != tc.bound {
			t.Errorf("%s: unspecified-bind %v bound %v; want %v %v", tc.ip, any(ip), bound(ip), tc.any, tc.bound)
		}
	}
}

func TestNotifierOrderAndUnsubscribe(t *testing.T) {
	testutil.LeakCheck(t)
	n := newNotifier()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { n.run(stop); close(done) }()
	var mu sync.Mutex
	var got []State
	unsub := n.subscribe(func(ev Event) {
		mu.Lock()
		got = append(got, ev.State)
		mu.Unlock()
	})
	for i := 0; i < 100; i++ {
		n.publish(Event{State: State(i)})
	}
	testutil.WaitFor(t, 5*time.Second, "100 events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 100
	})
	unsub()
	unsub()
	n.publish(Event{State: 1000})
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	for i, s := range got {
		if s != State(i) {
			t.Fatalf("event %d is %v: order lost", i, s)
		}
	}
	if len(got) != 100 {
		t.Fatalf("got %d events after unsubscribe", len(got))
	}
}

// pv builds a pairView for policy tests.
func pv(key, lt, rt string, selected bool, lastResp time.Time, rtt time.Duration) pairView {
	return pairView{key: key, local: Candidate{Type: lt}, remote: Candidate{Type: rt}, selected: selected,
		lastResponse: lastResp, rtt: rtt, state: ice.CandidatePairStateSucceeded}
}

func TestPathPolicy(t *testing.T) {
	tm := DefaultTimers() // keepalive 750ms, path timeout 2s, upgrade hold 2s
	t0 := time.Unix(1000, 0)
	var p pathPolicy

	// Direct selected and answering: stay.
	v := pairsView{pairs: []pairView{
		pv("d", "host", "srflx", true, t0, time.Millisecond),
		pv("r", "relay", "srflx", false, t0, 5*time.Millisecond),
	}}
	if tgt, _ := p.decide(t0, v, tm); tgt != nil {
		t.Fatalf("moved off a healthy direct pair to %s", tgt.key)
	}
	// The direct pair goes quiet but not for PathTimeout yet: stay.
	now := t0.Add(1500 * time.Millisecond)
	v.pairs[1].lastResponse = now
	if tgt, _ := p.decide(now, v, tm); tgt != nil {
		t.Fatalf("moved after %v of silence", now.Sub(t0))
	}
	// Past PathTimeout: move to the relay.
	now = t0.Add(2100 * time.Millisecond)
	v.pairs[1].lastResponse = now
	tgt, why := p.decide(now, v, tm)
	if tgt == nil || tgt.key != "r" {
		t.Fatalf("dead direct pair: target %v (%s), want the relay", tgt, why)
	}
	// While the renomination is pending, nothing else happens.
	if tgt, _ := p.decide(now.Add(100*time.Millisecond), v, tm); tgt != nil {
		t.Fatalf("renominated again while pending: %s", tgt.key)
	}
	// The relay is now selected; the direct pair starts answering again.
	v.pairs[0].selected, v.pairs[1].selected = false, true
	now = now.Add(500 * time.Millisecond)
	v.pairs[0].lastResponse, v.pairs[1].lastResponse = now, now
	if tgt, _ := p.decide(now, v, tm); tgt != nil {
		t.Fatalf("upgraded before UpgradeHold: %s", tgt.key)
	}
	for i := 0; i < 3; i++ {
		now = now.Add(time.Second)
		v.pairs[0].lastResponse, v.pairs[1].lastResponse = now, now
		tgt, why = p.decide(now, v, tm)
		if tgt != nil {
			break
		}
	}
	if tgt == nil || tgt.key != "d" {
		t.Fatalf("relayed with a healthy direct pair: target %v (%s)", tgt, why)
	}

	// Among alive pairs a direct one wins over a relay, then lower RTT.
	var q pathPolicy
	base := t0.Add(time.Hour)
	w := pairsView{pairs: []pairView{
		pv("sel", "host", "host", true, base, time.Millisecond),
		pv("relay-fast", "relay", "host", false, base.Add(3*time.Second), time.Millisecond),
		pv("srflx-slow", "srflx", "srflx", false, base.Add(3*time.Second), 40*time.Millisecond),
		pv("srflx-fast", "srflx", "prflx", false, base.Add(3*time.Second), 10*time.Millisecond),
		pv("dead", "host", "srflx", false, base, time.Microsecond),
	}}
	q.decide(base, w, tm)
	tgt, _ = q.decide(base.Add(3*time.Second), w, tm)
	if tgt == nil || tgt.key != "srflx-fast" {
		t.Fatalf("best alive pair: %v, want srflx-fast", tgt)
	}

	// No alive alternative: stay (ICE will time out and restart).
	var r pathPolicy
	x := pairsView{pairs: []pairView{pv("sel", "host", "host", true, base, 0), pv("other", "relay", "host", false, time.Time{}, 0)}}
	r.decide(base, x, tm)
	if tgt, _ := r.decide(base.Add(10*time.Second), x, tm); tgt != nil {
		t.Fatalf("moved to a pair that never answered: %s", tgt.key)
	}
}

func startVerifier(n *testNode) *pki.Verifier { return pki.NewVerifier(n.creds.CA, n.creds.Cert) }
