package tunnel

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
)

func TestPunchTargets(t *testing.T) {
	c := func(typ, addr string) Candidate {
		return Candidate{Type: typ, Addr: netip.MustParseAddrPort(addr)}
	}
	v := pairsView{pairs: []pairView{
		// The selected relayed pair and other relayed ones: never.
		{local: c("host", "198.51.100.12:5000"), remote: c("relay", "198.51.100.10:56255"), state: ice.CandidatePairStateSucceeded, selected: true},
		{local: c("relay", "198.51.100.10:53288"), remote: c("host", "10.0.2.2:5000"), state: ice.CandidatePairStateInProgress},
		// Direct pairs not yet succeeded: the peer's addresses to open.
		{local: c("host", "198.51.100.12:5000"), remote: c("srflx", "198.51.100.14:5000"), state: ice.CandidatePairStateWaiting},
		{local: c("host", "198.51.100.12:5000"), remote: c("host", "10.0.2.2:5000"), state: ice.CandidatePairStateInProgress},
		{local: c("srflx", "198.51.100.12:5000"), remote: c("srflx", "198.51.100.14:5000"), state: ice.CandidatePairStateWaiting}, // same address once
		// Succeeded or failed direct pairs need nothing.
		{local: c("host", "198.51.100.12:5000"), remote: c("prflx", "198.51.100.15:6000"), state: ice.CandidatePairStateSucceeded},
		{local: c("host", "198.51.100.12:5000"), remote: c("host", "198.51.100.16:5000"), state: ice.CandidatePairStateFailed},
	}}
	got := punchTargets(v)
	want := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.14:5000"), netip.MustParseAddrPort("10.0.2.2:5000")}
	if !slices.Equal(got, want) {
		t.Fatalf("punchTargets = %v, want %v", got, want)
	}
	// Bounded, whatever the peer offers.
	var many pairsView
	for i := 0; i < 50; i++ {
		many.pairs = append(many.pairs, pairView{local: c("host", "198.51.100.12:5000"),
			remote: Candidate{Type: "host", Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 5000)}, state: ice.CandidatePairStateWaiting})
	}
	if n := len(punchTargets(many)); n != punchTargetsMax {
		t.Fatalf("%d targets, want at most %d", n, punchTargetsMax)
	}
}

// The punch datagram is a STUN Binding indication: the peer's demux hands
// it to the ICE mux (RFC 7983 first byte), which has nothing to answer.
func TestPunchMessage(t *testing.T) {
	m := &stun.Message{Raw: append([]byte(nil), punchMsg...)}
	if err := m.Decode(); err != nil || m.Type.Class != stun.ClassIndication || m.Type.Method != stun.MethodBinding {
		t.Fatalf("punch message %v (%v), want a Binding indication", m, err)
	}
	if punchMsg[0] > 3 {
		t.Fatalf("first byte %d is not in RFC 7983's STUN range", punchMsg[0])
	}
}
