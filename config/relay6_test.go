package config

import (
	"net/netip"
	"testing"
)

// TestTURNRelayAddress6: a dual-stack coordinator names its public IPv6
// relay address beside the IPv4 one; relay_address6 alone serves an
// IPv6-only host on a wildcard listener; and what cannot be an IPv6 relay
// address is refused with its key.
func TestTURNRelayAddress6(t *testing.T) {
	coord := minimal + `
[coordinator]
enabled = true
session_listen = "[::]:7443"
gossip_key = "` + testGossipKey + `"
[coordinator.turn]
`
	for _, tc := range []struct {
		name, turn    string
		relay, relay6 string
		want          []wantErr // nil = valid
	}{
		{"dual-stack", "relay_address = \"203.0.113.7\"\nrelay_address6 = \"2001:db8::7\"\n", "203.0.113.7", "2001:db8::7", nil},
		{"IPv6 only on a wildcard", "relay_address6 = \"2001:db8::7\"\n", "", "2001:db8::7", nil},
		{"IPv4 in relay_address6", "relay_address = \"203.0.113.7\"\nrelay_address6 = \"198.51.100.7\"\n", "", "",
			[]wantErr{{8, 1, "coordinator.turn.relay_address6", ErrInvalid, "not an IPv6 address"}}},
		{"IPv4-mapped in relay_address6", "relay_address6 = \"::ffff:198.51.100.7\"\n", "", "",
			[]wantErr{{7, 1, "coordinator.turn.relay_address6", ErrInvalid, "not an IPv6 address"}}},
		{"two IPv6 relay addresses", "relay_address = \"2001:db8::7\"\nrelay_address6 = \"2001:db8::8\"\n", "", "",
			[]wantErr{{8, 1, "coordinator.turn.relay_address6", ErrInvalid, "IPv6 already"}}},
		{"wildcard relay_address6", "relay_address = \"203.0.113.7\"\nrelay_address6 = \"::\"\n", "", "",
			[]wantErr{{8, 1, "coordinator.turn.relay_address6", ErrInvalid, "cannot be advertised"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("meshd.toml", []byte(coord+tc.turn))
			if tc.want != nil {
				want := make([]wantErr, len(tc.want))
				for i, w := range tc.want {
					w.line += minimalLines
					want[i] = w
				}
				wantErrors(t, err, want)
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			addr := func(s string) netip.Addr {
				if s == "" {
					return netip.Addr{}
				}
				return netip.MustParseAddr(s)
			}
			if got := cfg.Coordinator.TURN; got.RelayAddress != addr(tc.relay) || got.RelayAddress6 != addr(tc.relay6) {
				t.Fatalf("relay_address %v, relay_address6 %v; want %s, %s", got.RelayAddress, got.RelayAddress6, tc.relay, tc.relay6)
			}
		})
	}
}
