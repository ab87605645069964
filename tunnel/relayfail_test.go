package tunnel

import (
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestRelayLost is the rule that restarts a relayed link whose relay went
// silent: only a relayed path, only after PathTimeout of silence (counted
// from when the link became active), and only when no other pair answers
// (else the path policy moves the link to it).
func TestRelayLost(t *testing.T) {
	tm := testTimers()
	now := time.Unix(9_000_000, 0)
	sel := pairView{selected: true, lastResponse: now.Add(-5 * time.Second)}
	warm := pairView{lastResponse: now.Add(-tm.PathTimeout / 2)}
	stale := pairView{lastResponse: now.Add(-2 * tm.PathTimeout)}
	// The controlling side checks a warm pair; the controlled side does
	// not (pion's controlled agent checks only the selected pair).
	checked := pairView{lastRequest: now.Add(-tm.PathTimeout / 2)}
	tests := []struct {
		name       string
		path       Path
		controlled bool
		heard      time.Time
		since      time.Time
		others     []pairView
		want       bool
	}{
		{"relayed, silent, nothing else", PathRelay, false, now.Add(-tm.PathTimeout), time.Time{}, nil, true},
		{"relayed, silent, others stale", PathRelay, false, now.Add(-2 * tm.PathTimeout), time.Time{}, []pairView{stale, {}}, true},
		{"relayed, heard lately", PathRelay, false, now.Add(-tm.PathTimeout / 2), time.Time{}, nil, false},
		{"relayed, silent, but active only lately", PathRelay, false, now.Add(-time.Minute), now.Add(-tm.PathTimeout / 2), nil, false},
		{"relayed, silent, a warm pair answers", PathRelay, false, now.Add(-2 * tm.PathTimeout), time.Time{}, []pairView{warm}, false},
		{"direct, silent", PathDirect, false, now.Add(-time.Minute), time.Time{}, nil, false},
		{"controlled, silent, the peer checks a warm pair", PathRelay, true, now.Add(-2 * tm.PathTimeout), time.Time{}, []pairView{checked}, false},
		{"controlling, silent, the peer checks a warm pair", PathRelay, false, now.Add(-2 * tm.PathTimeout), time.Time{}, []pairView{checked}, true},
		{"controlled, silent, the peer checked long ago", PathRelay, true, now.Add(-2 * tm.PathTimeout), time.Time{}, []pairView{{lastRequest: now.Add(-2 * tm.PathTimeout)}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := pairsView{pairs: append([]pairView{sel}, tt.others...)}
			if got := relayLost(now, tt.heard, tt.since, tt.path, !tt.controlled, v, tm); got != tt.want {
				t.Errorf("relayLost = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTurnHostListed(t *testing.T) {
	servers := []ICEServer{{URL: "stun:198.51.100.9:3478"}, {URL: "turn:198.51.100.10:3478?transport=tcp"}}
	for _, tt := range []struct {
		addr    string
		servers []ICEServer
		want    bool
	}{
		{"198.51.100.10", servers, true},
		{"198.51.100.9", servers, false}, // a STUN server relays nothing
		{"198.51.100.11", servers, false},
		{"198.51.100.11", append(servers, ICEServer{URL: "turn:turn.example.net"}), true}, // a name: cannot tell
		{"198.51.100.10", nil, false},
	} {
		if got := turnHostListed(netip.MustParseAddr(tt.addr), tt.servers); got != tt.want {
			t.Errorf("turnHostListed(%s, %v) = %v, want %v", tt.addr, tt.servers, got, tt.want)
		}
	}
}

// TestRelayFailover: two relay-only links through one TURN server (pion's,
// in process); the server dies and the nodes are offered another. The
// links must notice the dead relay themselves (relayLost, not ICE's
// failed timeout: LastError says which), or at once when told the relays
// changed (RelaysChanged, what the daemon calls when its coordinator
// session hands out other TURN credentials), and come back through the
// other server carrying traffic.
func TestRelayFailover(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 90*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	for _, told := range []bool{false, true} {
		name := "noticed"
		if told {
			name = "told"
		}
		t.Run(name, func(t *testing.T) {
			first, second := startLoopbackTURN(t), startLoopbackTURN(t)
			var servers atomic.Pointer[[]ICEServer]
			use := func(s *loopbackTURN) {
				list := []ICEServer{{URL: "turn:" + s.udpAddr + "?transport=udp", Username: "user", Password: "pass"}}
				servers.Store(&list)
			}
			use(first)
			sig := newMemSignals()
			tweak := func(o *Options) {
				o.ForceRelay = true
				o.Servers = func() []ICEServer { return *servers.Load() }
			}
			ma := startManager(t, sig, a, tweak)
			mb := startManager(t, sig, b, tweak)
			ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
			var atB collector
			ba.SetReceiver(atB.receive)
			via := func(s *loopbackTURN) bool {
				for _, l := range []*Link{ab, ba} {
					if st := l.Status(); st.State != StateConnected || !strings.HasPrefix(st.RelayServer, s.udpAddr) {
						return false
					}
				}
				return true
			}
			testutil.WaitFor(t, 20*time.Second, "links relayed through the first server", func() bool { return via(first) })
			exchange(t, ab, &atB, "before", 5*time.Second)

			use(second)
			_ = first.server.Close()
			if told {
				ma.RelaysChanged()
				mb.RelaysChanged()
			}
			testutil.WaitFor(t, 30*time.Second, "links relayed through the second server", func() bool { return via(second) })
			exchange(t, ab, &atB, "after", 5*time.Second)
			// Each side restarted for the lost relay, or because the other
			// did (whichever noticed first); never by ICE's failed timeout.
			// Following the other side takes one of two forms, by role: the
			// controlling side asked by the controlled one fails with
			// ErrPeerRestart (restartSoon); the controlled side offered a
			// new session by the controlling one follows it straight from
			// its live session (onOffer) without failing, so it shows no
			// failure at all. Which side notices first is a race between
			// the two path tickers, and the role follows the random
			// fingerprints, so any of these may be seen.
			lost := 0
			for _, l := range []*Link{ab, ba} {
				switch st := l.Status(); {
				case errors.Is(st.LastError, ErrRelayLost):
					lost++
				case errors.Is(st.LastError, ErrPeerRestart) && st.Controlling:
				case st.LastError == nil && st.Failures == 0 && !st.Controlling:
				default:
					t.Errorf("%s (controlling %v): the link restarted for %v after %d failures, want ErrRelayLost (not ICE's failed timeout)",
						st.Peer, st.Controlling, st.LastError, st.Failures)
				}
			}
			if lost == 0 {
				t.Error("neither side restarted for the lost relay")
			}
			_ = ma.Close()
			_ = mb.Close()
		})
	}
}
