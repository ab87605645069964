package tunnel

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestRemoteCandidateLimit is the decision table of the per-link bound:
// duplicates are free, a session takes maxRemoteCandidates, a new session
// starts a new count but not a new bucket, and the bucket refills at
// candidateRate.
func TestRemoteCandidateLimit(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	cand := func(i int) string {
		return fmt.Sprintf("candidate:%d 1 udp 2130706431 127.0.0.1 %d typ host", i, 20000+i)
	}
	var r remoteCandLimit
	count := func(gen uint64, from, to int, at time.Time) map[candVerdict]int {
		got := map[candVerdict]int{}
		for i := from; i < to; i++ {
			got[r.admit(gen, cand(i), at)]++
		}
		return got
	}
	if got := count(1, 0, 200, t0); got[candNew] != maxRemoteCandidates || got[candOverCap] != 200-maxRemoteCandidates {
		t.Fatalf("one session, 200 candidates: %v; want %d new, the rest over the cap", got, maxRemoteCandidates)
	}
	if got := count(1, 0, maxRemoteCandidates, t0); got[candDuplicate] != maxRemoteCandidates {
		t.Fatalf("repeats of added candidates: %v; want all duplicates", got)
	}
	// A second session at once: the bucket has candidateBurst-32 left.
	if got := count(2, 0, 200, t0); got[candNew] != candidateBurst-maxRemoteCandidates {
		t.Fatalf("second session at once: %v; want %d new", got, candidateBurst-maxRemoteCandidates)
	}
	// Sessions in a loop get nothing more until the bucket refills...
	if got := count(3, 0, 10, t0); got[candOverRate] != 10 {
		t.Fatalf("third session at once: %v; want all over the rate", got)
	}
	// ...at candidateRate per second.
	if got := count(4, 0, 100, t0.Add(2*time.Second)); got[candNew] != 2*candidateRate {
		t.Fatalf("two seconds later: %v; want %d new", got, 2*candidateRate)
	}
	// A quiet peer gets a full bucket back, never more.
	if got := count(5, 0, 200, t0.Add(time.Hour)); got[candNew] != maxRemoteCandidates {
		t.Fatalf("an hour later: %v; want a full session", got)
	}
}

// TestRemoteCandidateFlood: a connected peer that sends 200 candidates of
// the current session gets at most maxRemoteCandidates into the ICE agent
// (each would be checked with STUN from this node), the rest are counted,
// and the link stays up.
func TestRemoteCandidateFlood(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	ma := startManager(t, sig, a, nil)
	mb := startManager(t, sig, b, nil)
	ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "both links connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	remotes := func() int {
		ab.mu.Lock()
		ag := ab.snap.agent
		ab.mu.Unlock()
		cs, err := ag.GetRemoteCandidates()
		if err != nil {
			t.Fatal(err)
		}
		return len(cs)
	}
	before := remotes()
	gen := ab.Status().Generation
	const flood = 200
	for i := range flood {
		// Loopback ports nobody listens on: the checks stay on this host.
		s := signal{kind: kindCandidate, generation: gen, candidate: fmt.Sprintf("candidate:%d 1 udp 2130706431 127.0.0.1 %d typ host", 9000+i, 20000+i)}
		p, err := s.marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := ma.HandleSignal("bravo", p); err != nil {
			t.Fatal(err)
		}
	}
	// Every injected candidate is accounted for: added, refused by the
	// bound, or dropped by a full inbox.
	testutil.WaitFor(t, 10*time.Second, "every injected candidate handled", func() bool {
		st := ma.Stats()
		return uint64(remotes()-before)+st.CandidatesDropped+st.SignalsDropped >= flood
	})
	if n := remotes(); n > maxRemoteCandidates {
		t.Fatalf("the agent holds %d remote candidates; the bound is %d", n, maxRemoteCandidates)
	}
	if st := ma.Stats(); st.CandidatesDropped == 0 {
		t.Fatalf("no dropped candidates counted: %+v", st)
	}
	if ab.Status().Generation != gen || ab.State() != StateConnected {
		t.Fatalf("the flood disturbed the link: %v, generation %d (was %d)", ab.State(), ab.Status().Generation, gen)
	}
	exchange(t, ab, &atB, "after-flood", 5*time.Second)
}
