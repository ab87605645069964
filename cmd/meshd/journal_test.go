package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/meshd/meshd/config"
)

// TestJournalLines: under systemd every line starts with its sd-daemon
// priority, so `journalctl -p warning` keeps errors and warnings and drops
// info and debug; journald stamps lines itself, so there is no time= key.
func TestJournalLines(t *testing.T) {
	for _, format := range []config.LogFormat{config.LogText, config.LogJSON} {
		t.Run(string(format), func(t *testing.T) {
			var buf bytes.Buffer
			level := new(slog.LevelVar)
			level.Set(slog.LevelDebug)
			log := newLogger(format, level, &buf, true).With("peer", "beta")
			log.Error("link failed", "error", "boom")
			log.Warn("certificate expires soon")
			log.Info("peer up")
			log.Debug("candidate", "n", 3)
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			want := []struct {
				prefix, msg string
			}{{"<3>", "link failed"}, {"<4>", "certificate expires soon"}, {"<6>", "peer up"}, {"<7>", "candidate"}}
			if len(lines) != len(want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
			}
			for i, w := range want {
				line := lines[i]
				rest, ok := strings.CutPrefix(line, w.prefix)
				if !ok {
					t.Errorf("line %q does not start with %s", line, w.prefix)
					continue
				}
				if strings.Contains(rest, "time=") || strings.Contains(rest, `"time"`) {
					t.Errorf("line %q has a timestamp", line)
				}
				if !strings.Contains(rest, w.msg) || !strings.Contains(rest, "beta") {
					t.Errorf("line %q lacks %q or the peer", line, w.msg)
				}
				if format == config.LogJSON {
					var m map[string]any
					if err := json.Unmarshal([]byte(rest), &m); err != nil {
						t.Errorf("line %q after the prefix is not JSON: %v", line, err)
					}
				}
			}
		})
	}
}

// TestPlainLines: outside systemd lines keep their timestamp and carry no
// prefix.
func TestPlainLines(t *testing.T) {
	var buf bytes.Buffer
	newLogger(config.LogText, new(slog.LevelVar), &buf, false).Error("x")
	if s := buf.String(); strings.HasPrefix(s, "<") || !strings.HasPrefix(s, "time=") {
		t.Errorf("plain line %q", s)
	}
}

// TestJournalStream: the prefixes are used only when stderr is the stream
// JOURNAL_STREAM names.
func TestJournalStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	match := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	tests := []struct {
		env  string
		w    any
		want bool
	}{
		{match, f, true},
		{"", f, false},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), f, false},
		{"garbage", f, false},
		{match, &bytes.Buffer{}, false},
	}
	for _, tc := range tests {
		w, _ := tc.w.(interface{ Write([]byte) (int, error) })
		if got := journalStream(tc.env, w); got != tc.want {
			t.Errorf("journalStream(%q, %T) = %v, want %v", tc.env, tc.w, got, tc.want)
		}
	}
}

// FuzzJournalStream: JOURNAL_STREAM comes from the environment; any value
// is handled, and only the one naming the stream matches.
func FuzzJournalStream(f *testing.F) {
	file, err := os.Create(filepath.Join(f.TempDir(), "stderr"))
	if err != nil {
		f.Fatal(err)
	}
	defer file.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(file.Fd()), &st); err != nil {
		f.Fatal(err)
	}
	match := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	for _, s := range []string{match, "", ":", "1:", ":2", "18446744073709551616:1", "-1:-1", match + ":3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, env string) {
		if got := journalStream(env, file); got != (env == match || canonical(env) == match) {
			t.Fatalf("journalStream(%q) = %v", env, got)
		}
	})
}

// canonical parses "a:b" as the code does and prints it back, so that
// "+5:07"-style spellings of the same numbers compare equal.
func canonical(env string) string {
	a, b, ok := strings.Cut(env, ":")
	if !ok {
		return ""
	}
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", x, y)
}
