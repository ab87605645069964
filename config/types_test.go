package config

import (
	"encoding"
	"log/slog"
	"testing"
	"time"
)

var (
	_ encoding.TextUnmarshaler = (*Duration)(nil)
	_ encoding.TextMarshaler   = Duration(0)
	_ encoding.TextUnmarshaler = (*PortRange)(nil)
	_ encoding.TextMarshaler   = PortRange{}
)

func TestDurationText(t *testing.T) {
	for in, want := range map[string]time.Duration{"25s": 25 * time.Second, "1m30s": 90 * time.Second, "200ms": 200 * time.Millisecond, "0s": 0} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || d.Std() != want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", in, d, err, want)
		}
		b, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Errorf("round trip of %v via %q = %v, %v", d, b, back, err)
		}
	}
	for _, in := range []string{"", "25", "1 minute", "5x"} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("UnmarshalText(%q) = %v, want error", in, d)
		}
	}
}

func TestPortRangeText(t *testing.T) {
	good := map[string]PortRange{
		"any": AnyPort, "80": {80, 80}, "1": {1, 1}, "65535": {65535, 65535}, "8000-8100": {8000, 8100}, "22-22": {22, 22},
	}
	for in, want := range good {
		var r PortRange
		if err := r.UnmarshalText([]byte(in)); err != nil || r != want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", in, r, err, want)
		}
		var back PortRange
		b, _ := r.MarshalText()
		if err := back.UnmarshalText(b); err != nil || back != r {
			t.Errorf("round trip of %v via %q = %v, %v", r, b, back, err)
		}
	}
	for _, in := range []string{"", "0", "80-", "-80", "+80", "65536", "100-90", "1-2-3", "http", "ANY", " 80", "80 "} {
		var r PortRange
		if err := r.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("UnmarshalText(%q) = %v, want error", in, r)
		}
	}
	if !AnyPort.IsAny() || !AnyPort.Contains(0) || !(PortRange{80, 90}).Contains(85) || (PortRange{80, 90}).Contains(91) {
		t.Error("IsAny/Contains disagree with the ranges")
	}
}

func TestLogLevelSlog(t *testing.T) {
	for l, want := range map[LogLevel]slog.Level{LogDebug: slog.LevelDebug, LogInfo: slog.LevelInfo, LogWarn: slog.LevelWarn, LogError: slog.LevelError} {
		if got := l.Slog(); got != want {
			t.Errorf("%s.Slog() = %v, want %v", l, got, want)
		}
	}
}

func TestNormalizeHostPort(t *testing.T) {
	good := map[string]string{
		"c.example.net":        "c.example.net:7443",
		"c.example.net:1":      "c.example.net:1",
		"198.51.100.1":         "198.51.100.1:7443",
		"[2001:db8::1]":        "[2001:db8::1]:7443",
		"[2001:db8::1]:8443":   "[2001:db8::1]:8443",
		"coord_1.lab.:7443":    "coord_1.lab.:7443",
		"localhost":            "localhost:7443",
		"a-b.example.net:7443": "a-b.example.net:7443",
	}
	for in, want := range good {
		if got, err := normalizeHostPort(in, 7443); err != nil || got != want {
			t.Errorf("normalizeHostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", ":7443", "host:", "host:0", "host:65536", "2001:db8::1", "a..b", "-a.example.net", "a b", "host:port", "[fe80::1%eth0]:1"} {
		if got, err := normalizeHostPort(in, 7443); err == nil {
			t.Errorf("normalizeHostPort(%q) = %q, want error", in, got)
		}
	}
}

func TestParseICEURL(t *testing.T) {
	good := []struct {
		in   string
		want iceURL
	}{
		{"stun:stun.example.net", iceURL{"stun", "stun.example.net", 3478, ""}},
		{"stun:198.51.100.1:3479", iceURL{"stun", "198.51.100.1", 3479, ""}},
		{"turn:t.example.net", iceURL{"turn", "t.example.net", 3478, "udp"}},
		{"turn:t.example.net:80?transport=tcp", iceURL{"turn", "t.example.net", 80, "tcp"}},
		{"turns:t.example.net", iceURL{"turns", "t.example.net", 5349, "tcp"}},
		{"turns:[2001:db8::1]:443?transport=tcp", iceURL{"turns", "2001:db8::1", 443, "tcp"}},
		{"TURN:t.example.net", iceURL{"turn", "t.example.net", 3478, "udp"}},
	}
	for _, tt := range good {
		got, err := parseICEURL(tt.in, "stun", "turn", "turns")
		if err != nil || got != tt.want {
			t.Errorf("parseICEURL(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "stun", "stun:", "http://x", "stun://x", "stun:x?transport=udp", "turn:x?transport=sctp",
		"turn:x?transport=tcp&x=1", "turns:x?transport=udp", "turn:x:0", "turn:2001:db8::1", "turn:a b"} {
		if got, err := parseICEURL(in, "stun", "turn", "turns"); err == nil {
			t.Errorf("parseICEURL(%q) = %+v, want error", in, got)
		}
	}
	if _, err := parseICEURL("stuns:x", "stun"); err == nil {
		t.Error("stuns: accepted where only stun: is allowed")
	}
}

func TestEditDistanceAndClosest(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"abc", "", 3}, {"mtu", "mut", 1}, {"gosip_key", "gossip_key", 1}, {"level", "levl", 1}, {"kitten", "sitting", 3}} {
		if got := editDistance(tt.a, tt.b); got != tt.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.d)
		}
	}
	keys := []string{"port", "stun_servers", "turn_servers", "relay_only"}
	for in, want := range map[string]string{"prot": "port", "stun_server": "stun_servers", "relay-only": "relay_only", "xyz": "", "turnservers": "turn_servers"} {
		if got, _ := closest(in, keys); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}
