package tunnel

import (
	"net/netip"
	"testing"
	"time"
)

// pvAt is pv with the remote address set, so the pair has a family.
func pvAt(key, lt, rt, remote string, selected bool, lastResp time.Time, rtt time.Duration) pairView {
	p := pv(key, lt, rt, selected, lastResp, rtt)
	p.remote.Addr = netip.MustParseAddrPort(remote)
	return p
}

// policyTicker returns tick: it advances a policy in 250 ms steps for d
// from from, keeping the listed pairs alive, and returns the first move.
func policyTicker(tm Timers) func(p *pathPolicy, v *pairsView, from time.Time, d time.Duration, alive ...int) (time.Time, *pairView, string) {
	return func(p *pathPolicy, v *pairsView, from time.Time, d time.Duration, alive ...int) (time.Time, *pairView, string) {
		now := from
		for end := from.Add(d); now.Before(end); {
			now = now.Add(250 * time.Millisecond)
			for _, i := range alive {
				v.pairs[i].lastResponse = now
			}
			if tgt, why := p.decide(now, *v, tm); tgt != nil {
				return now, tgt, why
			}
		}
		return now, nil, ""
	}
}

// TestPathPolicyPrefersIPv6: a link running directly over IPv4 moves to a
// direct IPv6 pair that has answered for UpgradeHold with an RTT no worse,
// once; a slower IPv6 pair does not move it, and after the IPv6 pair dies
// and the link falls back to IPv4 it stays there (no flapping between
// families).
func TestPathPolicyPrefersIPv6(t *testing.T) {
	tm := DefaultTimers() // keepalive 750ms, path timeout 2s, upgrade hold 2s
	t0 := time.Unix(1000, 0)
	tick := policyTicker(tm)

	for _, tc := range []struct {
		name         string
		rtt4, rtt6   time.Duration
		wantMove     bool
		selectedIsV6 bool
	}{
		{"same RTT", 10 * time.Millisecond, 10 * time.Millisecond, true, false},
		{"IPv6 a little slower, within noise", 10 * time.Millisecond, 11 * time.Millisecond, true, false},
		{"IPv6 faster", 10 * time.Millisecond, 2 * time.Millisecond, true, false},
		{"IPv6 slower", 10 * time.Millisecond, 30 * time.Millisecond, false, false},
		{"IPv6 RTT unmeasured", 10 * time.Millisecond, 0, false, false},
		{"already on IPv6", 10 * time.Millisecond, 10 * time.Millisecond, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p pathPolicy
			v := pairsView{pairs: []pairView{
				pvAt("v4", "srflx", "srflx", "198.51.100.7:51830", !tc.selectedIsV6, t0, tc.rtt4),
				pvAt("v6", "host", "host", "[2001:db8::7]:51830", tc.selectedIsV6, t0, tc.rtt6),
				pvAt("relay", "relay", "host", "203.0.113.1:50000", false, t0, tc.rtt4),
			}}
			p.decide(t0, v, tm)
			_, tgt, why := tick(&p, &v, t0, 2*tm.UpgradeHold, 0, 1, 2)
			if !tc.wantMove {
				if tgt != nil {
					t.Fatalf("moved to %s (%s)", tgt.key, why)
				}
				return
			}
			if tgt == nil || tgt.key != "v6" || why != PathReasonIPv6 {
				t.Fatalf("target %v (%s), want the IPv6 pair (%s)", tgt, why, PathReasonIPv6)
			}
		})
	}

	// Never flap: once on IPv6, a dead IPv6 pair falls back to IPv4, and
	// IPv4 stays selected when IPv6 answers again.
	var p pathPolicy
	v := pairsView{pairs: []pairView{
		pvAt("v4", "host", "host", "198.51.100.7:51830", true, t0, 5*time.Millisecond),
		pvAt("v6", "host", "host", "[2001:db8::7]:51830", false, t0, 5*time.Millisecond),
	}}
	p.decide(t0, v, tm)
	now, tgt, _ := tick(&p, &v, t0, 2*tm.UpgradeHold, 0, 1)
	if tgt == nil || tgt.key != "v6" {
		t.Fatalf("did not move to IPv6: %v", tgt)
	}
	v.pairs[0].selected, v.pairs[1].selected = false, true
	now, tgt, why := tick(&p, &v, now, 2*tm.PathTimeout, 0) // IPv6 goes silent
	if tgt == nil || tgt.key != "v4" || why != PathReasonFailed {
		t.Fatalf("dead IPv6 pair: target %v (%s), want IPv4 (%s)", tgt, why, PathReasonFailed)
	}
	v.pairs[0].selected, v.pairs[1].selected = true, false
	if _, tgt, why := tick(&p, &v, now, 10*tm.UpgradeHold, 0, 1); tgt != nil {
		t.Fatalf("moved back to %s (%s) after falling back from IPv6", tgt.key, why)
	}

	// A relayed link upgrading picks IPv6 over an equally fast IPv4 pair.
	var q pathPolicy
	w := pairsView{pairs: []pairView{
		pvAt("relay", "relay", "host", "203.0.113.1:50000", true, t0, 20*time.Millisecond),
		pvAt("v4", "srflx", "srflx", "198.51.100.7:51830", false, t0, 5*time.Millisecond),
		pvAt("v6", "srflx", "srflx", "[2001:db8::7]:51830", false, t0, 5*time.Millisecond),
	}}
	q.decide(t0, w, tm)
	if _, tgt, why := tick(&q, &w, t0, 2*tm.UpgradeHold, 0, 1, 2); tgt == nil || tgt.key != "v6" || why != PathReasonDirect {
		t.Fatalf("upgrade from the relay: %v (%s), want the IPv6 pair", tgt, why)
	}
}
