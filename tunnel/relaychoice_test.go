package tunnel

import (
	"testing"
	"time"
)

// TestPathPolicyBetterRelay: a relayed link moves to another relayed pair
// that has been clearly faster (and the fastest) for UpgradeHold; relays
// of about the same RTT, a single fast sample, a pair that stops answering
// and a slower relay never take it; after the move it does not go back.
func TestPathPolicyBetterRelay(t *testing.T) {
	tm := DefaultTimers() // keepalive 750ms, path timeout 2s, upgrade hold 2s
	t0 := time.Unix(1000, 0)

	tick := policyTicker(tm)

	for _, tc := range []struct {
		name     string
		sel      time.Duration
		others   []time.Duration // relay-1, relay-2
		wantMove string
	}{
		{"a clearly faster relay", 40 * time.Millisecond, []time.Duration{20 * time.Millisecond, 35 * time.Millisecond}, "relay-1"},
		{"the fastest of two faster relays", 40 * time.Millisecond, []time.Duration{20 * time.Millisecond, 8 * time.Millisecond}, "relay-2"},
		{"about the same RTT", 40 * time.Millisecond, []time.Duration{32 * time.Millisecond, 45 * time.Millisecond}, ""},
		{"faster by ratio, not by enough time", 6 * time.Millisecond, []time.Duration{2 * time.Millisecond, 9 * time.Millisecond}, ""},
		{"slower relays", 10 * time.Millisecond, []time.Duration{20 * time.Millisecond, 30 * time.Millisecond}, ""},
		{"selected RTT unmeasured", 0, []time.Duration{20 * time.Millisecond, 30 * time.Millisecond}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p pathPolicy
			v := pairsView{pairs: []pairView{
				pv("relay-0", "relay", "srflx", true, t0, tc.sel),
				pv("relay-1", "relay", "srflx", false, t0, tc.others[0]),
				pv("relay-2", "srflx", "relay", false, t0, tc.others[1]),
				pv("direct", "host", "host", false, time.Time{}, 0), // never answers
			}}
			p.decide(t0, v, tm)
			at, tgt, why := tick(&p, &v, t0, 3*tm.UpgradeHold, 0, 1, 2)
			if tc.wantMove == "" {
				if tgt != nil {
					t.Fatalf("moved to %s (%s)", tgt.key, why)
				}
				return
			}
			if tgt == nil || tgt.key != tc.wantMove || why != PathReasonRelay {
				t.Fatalf("target %v (%s), want %s (%s)", tgt, why, tc.wantMove, PathReasonRelay)
			}
			if at.Sub(t0) < tm.UpgradeHold {
				t.Fatalf("moved after %v, before UpgradeHold", at.Sub(t0))
			}
		})
	}

	// One fast sample, then back to normal: no move.
	var p pathPolicy
	v := pairsView{pairs: []pairView{
		pv("sel", "relay", "srflx", true, t0, 40*time.Millisecond),
		pv("other", "relay", "srflx", false, t0, 10*time.Millisecond),
	}}
	p.decide(t0, v, tm)
	now, tgt, _ := tick(&p, &v, t0, tm.UpgradeHold/2, 0, 1)
	if tgt != nil {
		t.Fatalf("moved within half the hold: %s", tgt.key)
	}
	v.pairs[1].rtt = 38 * time.Millisecond
	now, tgt, _ = tick(&p, &v, now, 250*time.Millisecond, 0, 1)
	if tgt != nil {
		t.Fatalf("moved to a pair no longer faster: %s", tgt.key)
	}
	v.pairs[1].rtt = 10 * time.Millisecond
	if _, tgt, _ = tick(&p, &v, now, tm.UpgradeHold-250*time.Millisecond, 0, 1); tgt != nil {
		t.Fatalf("the hold did not restart after the pair was no longer faster: moved to %s", tgt.key)
	}

	// A faster pair that stops answering (its last answer a second ago)
	// is not moved to.
	var q pathPolicy
	w := pairsView{pairs: []pairView{
		pv("sel", "relay", "srflx", true, t0, 40*time.Millisecond),
		pv("other", "relay", "srflx", false, t0.Add(-time.Second), 10*time.Millisecond),
	}}
	q.decide(t0, w, tm)
	if _, tgt, _ := tick(&q, &w, t0, 3*tm.UpgradeHold, 0); tgt != nil {
		t.Fatalf("moved to a silent pair: %s", tgt.key)
	}

	// After the move, the old relay (now slower) does not take it back.
	var r pathPolicy
	x := pairsView{pairs: []pairView{
		pv("old", "relay", "srflx", true, t0, 40*time.Millisecond),
		pv("new", "relay", "srflx", false, t0, 10*time.Millisecond),
	}}
	r.decide(t0, x, tm)
	now, tgt, _ = tick(&r, &x, t0, 3*tm.UpgradeHold, 0, 1)
	if tgt == nil || tgt.key != "new" {
		t.Fatalf("no move to the faster relay: %v", tgt)
	}
	x.pairs[0].selected, x.pairs[1].selected = false, true
	if _, tgt, _ := tick(&r, &x, now, 5*tm.UpgradeHold, 0, 1); tgt != nil {
		t.Fatalf("flapped back to %s", tgt.key)
	}
}
