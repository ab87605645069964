package tunnel

import (
	"net/netip"
	"testing"
)

// TestRelayServerLabel: the relay label of a relayed pair names the
// configured server and the transport the allocation really uses. A
// server listed over UDP and over TCP (the usual coturn setup, and what a
// UDP-blocked node needs) must not show its TCP allocation as ".../udp".
func TestRelayServerLabel(t *testing.T) {
	both := []ICEServer{
		{URL: "stun:198.51.100.10:3478"},
		{URL: "turn:198.51.100.10:3478?transport=udp"},
		{URL: "turn:198.51.100.10:3478?transport=tcp"},
		{URL: "turns:198.51.100.10:5349"},
	}
	relay := func(proto string) Candidate {
		return Candidate{Type: "relay", Addr: netip.MustParseAddrPort("198.51.100.10:49183"), RelayProtocol: proto}
	}
	peer := Candidate{Type: "srflx", Addr: netip.MustParseAddrPort("203.0.113.7:5000")}
	tests := []struct {
		name    string
		servers []ICEServer
		local   Candidate
		remote  Candidate
		want    string
	}{
		{"udp allocation", both, relay("udp"), peer, "198.51.100.10:3478/udp"},
		{"tcp allocation", both, relay("tcp"), peer, "198.51.100.10:3478/tcp"},
		{"tls allocation", both, relay("tls"), peer, "198.51.100.10:5349/tls"},
		{"tcp allocation, only a udp URL listed", both[:2], relay("tcp"), peer, "198.51.100.10:3478/tcp"},
		{"unknown server", nil, relay("tcp"), peer, "198.51.100.10:49183 (peer's relay)"},
		{"peer's relay", both, peer, relay(""), "198.51.100.10:49183 (peer's relay)"},
		{"direct", both, peer, peer, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := relayServerFor(&pairView{local: tt.local, remote: tt.remote}, tt.servers)
			if got != tt.want {
				t.Errorf("relayServerFor = %q, want %q", got, tt.want)
			}
		})
	}
}
