package daemon

import (
	"slices"
	"testing"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/tunnel"
)

// TestMetricLinkStates: meshd_peer_link_state has a series for every state
// a peer can be in, so exactly one of a peer's series is 1, offline and
// idle peers included (offline peers used to export all zeros).
func TestMetricLinkStates(t *testing.T) {
	var states []control.LinkState
	for _, p := range []peerPlan{{Name: "x", Excluded: "revoked"}, {Name: "x", Idle: true}, {Name: "x"}} {
		states = append(states, peerDoc(&p, nil).State)
	}
	for s := tunnel.StateNew; s <= tunnel.StateClosed; s++ {
		states = append(states, linkState(s))
	}
	for _, s := range states {
		if !slices.Contains(metricLinkStates, s) {
			t.Errorf("state %q has no meshd_peer_link_state series", s)
		}
	}
}

// TestLinkTotalsPlus: retired totals add field by field.
func TestLinkTotalsPlus(t *testing.T) {
	a := linkTotals{rxBytes: 1, txBytes: 2, rxPackets: 3, txPackets: 4, sessions: 5, failures: 6}
	if got, want := a.plus(a), (linkTotals{2, 4, 6, 8, 10, 12}); got != want {
		t.Errorf("plus = %+v, want %+v", got, want)
	}
}
