package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string // substring; "" = parses
	}{
		{"30d", 30 * day, ""},
		{"364d", 364 * day, ""},
		{"1d12h", 36 * time.Hour, ""},
		{"1.5d", 36 * time.Hour, ""},
		{"0.5d30m", 12*time.Hour + 30*time.Minute, ""},
		{"-2d", -2 * day, ""},
		{"+2d", 2 * day, ""},
		{"0d", 0, ""},
		{"720h", 720 * time.Hour, ""},
		{"90m", 90 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"106751d", 106751 * day, ""},
		{"", 0, "invalid duration"},
		{"d", 0, "invalid duration"},
		{"-d", 0, "invalid duration"},
		{"30", 0, "missing unit"},
		{"30days", 0, "invalid duration"},
		{"1d1d", 0, "invalid duration"},
		{"1d-3h", 0, "invalid duration"},
		{"1h2d", 0, "invalid duration"},
		{"1e3d", 0, "invalid duration"},
		{"1..5d", 0, "invalid duration"},
		{"106752d", 0, "out of range"},
		{"99999999999999999999d", 0, "out of range"},
		{"106751d24h", 0, "out of range"},
		{strings.Repeat("1", 65) + "d", 0, "too long"},
	} {
		got, err := parseDuration(tc.in)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseDuration(%q) = %v, %v; want an error containing %q", tc.in, got, err, tc.err)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		365 * day:              "365d",
		36 * time.Hour:         "1d12h0m0s",
		-3 * day:               "-3d",
		12 * time.Hour:         "12h0m0s",
		0:                      "0s",
		day + time.Millisecond: "1d1ms",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
		if back, err := parseDuration(formatDuration(d)); err != nil || back != d {
			t.Errorf("parseDuration(formatDuration(%v)) = %v, %v", d, back, err)
		}
	}
}

// TestDurationFlags: every meshctl duration flag takes days, as cert show
// prints them: --duration 30d signs for 30 days.
func TestDurationFlags(t *testing.T) {
	root := t.TempDir()
	mustPKICmd(t, "ca", "init", "--name", "test-mesh", "--dir", root, "--duration", "3650d")
	mustPKICmd(t, "cert", "sign", "--ca-dir", root, "--name", "node-a", "--ip", "100.64.0.1/10", "--out", root, "--duration", "30d")
	show := mustPKICmd(t, "cert", "show", root+"/node-a.crt")
	if got := pkiFieldValue(t, show, "not after"); !strings.HasSuffix(got, "(expires in 29d)") {
		t.Errorf("--duration 30d: not after %q", got)
	}
	mustPKICmd(t, "ca", "revoke", "--ca-dir", root, root+"/node-a.crt", "--crl-validity", "7d")
	for _, args := range [][]string{
		{"ca", "init", "--help"}, {"cert", "sign", "--help"}, {"ca", "revoke", "--help"},
		{"ping", "--help"}, {"wait", "--help"},
	} {
		help := mustPKICmd(t, args...)
		if !strings.Contains(help, " duration ") {
			t.Errorf("%v: no duration flag in\n%s", args, help)
		}
		if strings.Contains(help, "(default 8760h0m0s)") || strings.Contains(help, "(default 87600h0m0s)") {
			t.Errorf("%v: default printed in hours:\n%s", args, help)
		}
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"30d", "1d12h", "1.5d", "-2d", "720h", "d", "1d1d", "106751d23h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDuration(s)
		if err != nil {
			return
		}
		back, err := parseDuration(formatDuration(d))
		if err != nil || back != d {
			t.Fatalf("%q = %v prints as %q, which reads back as %v, %v", s, d, formatDuration(d), back, err)
		}
	})
}
