package main

import (
	"testing"
	"time"
)

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		n    uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"},
		{5<<20 + 512<<10, "5.5 MiB"}, {3 << 30, "3.0 GiB"}, {1 << 40, "1.0 TiB"}, {1<<64 - 1, "16.0 EiB"},
	}
	for _, tt := range tests {
		if got := humanBytes(tt.n); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestHumanRTT(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "-"}, {-time.Second, "-"}, {850 * time.Microsecond, "0.85ms"}, {12300 * time.Microsecond, "12.3ms"},
		{999 * time.Millisecond, "999.0ms"}, {1250 * time.Millisecond, "1.25s"},
	}
	for _, tt := range tests {
		if got := humanRTT(tt.d); got != tt.want {
			t.Errorf("humanRTT(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestHumanAgoAndSpan(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "never"},
		{now.Add(time.Minute), "just now"},
		{now.Add(-500 * time.Millisecond), "just now"},
		{now.Add(-45 * time.Second), "45s ago"},
		{now.Add(-3*time.Minute - 59*time.Second), "3m ago"},
		{now.Add(-5*time.Hour - 30*time.Minute), "5h ago"},
		{now.Add(-50 * time.Hour), "2d ago"},
	}
	for _, tt := range ago {
		if got := humanAgo(tt.t, now); got != tt.want {
			t.Errorf("humanAgo(%v) = %q, want %q", now.Sub(tt.t), got, tt.want)
		}
	}
	span := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {59 * time.Second, "59s"}, {12 * time.Minute, "12m"}, {3 * time.Hour, "3h"},
		{3*time.Hour + 12*time.Minute + 5*time.Second, "3h12m"}, {52 * time.Hour, "2d4h"}, {48 * time.Hour, "2d"},
	}
	for _, tt := range span {
		if got := humanSpan(tt.d, true); got != tt.want {
			t.Errorf("humanSpan(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
