package ratelog

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func newTest(window time.Duration, burst int) (*slog.Logger, *bytes.Buffer, *time.Time) {
	var buf bytes.Buffer
	h := New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), window, burst)
	now := time.Unix(1_800_000_000, 0)
	h.st.now = func() time.Time { return now }
	return slog.New(h), &buf, &now
}

func lines(b *bytes.Buffer) []string {
	s := strings.TrimSpace(b.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// A flood of one message costs burst lines per window; the next window's
// first line says how many were dropped.
func TestFloodIsLimitedAndCounted(t *testing.T) {
	log, buf, now := newTest(10*time.Second, 5)
	for i := 0; i < 21217; i++ {
		log.Info("session refused", "remote", "198.51.100.7:40000", "error", "tls: first record does not look like a TLS handshake")
	}
	if n := len(lines(buf)); n != 5 {
		t.Fatalf("%d lines for a flood, want 5", n)
	}
	buf.Reset()
	*now = now.Add(10 * time.Second)
	log.Info("session refused", "remote", "198.51.100.8:40000")
	got := lines(buf)
	if len(got) != 1 || !strings.Contains(got[0], "suppressed=21212") || !strings.Contains(got[0], "suppressed_window=10s") {
		t.Fatalf("after the window: %q, want one line with suppressed=21212", got)
	}
}

// Kinds are independent: another message, another level, or a logger with
// other attributes (another peer) is not limited by the flood.
func TestKindsAreIndependent(t *testing.T) {
	log, buf, _ := newTest(10*time.Second, 2)
	for i := 0; i < 10; i++ {
		log.Info("session refused")
	}
	log.Warn("session refused")
	log.Info("link up")
	for _, peer := range []string{"a", "b", "c", "d"} {
		log.With("peer", peer).Info("link up")
	}
	for i := 0; i < 10; i++ {
		log.Debug("per-packet detail") // asked for: never limited
	}
	if n := len(lines(buf)); n != 2+1+1+4+10 {
		t.Fatalf("%d lines, want 18:\n%s", n, buf)
	}
}

// Ever-new kinds do not grow memory without bound.
func TestKindsBounded(t *testing.T) {
	log, _, now := newTest(time.Second, 1)
	h := log.Handler().(*Handler)
	for i := 0; i < 3*maxKinds; i++ {
		log.With("i", i).Info("x")
		if i%maxKinds == 0 {
			*now = now.Add(2 * time.Second)
		}
	}
	if n := len(h.st.kinds); n > maxKinds {
		t.Fatalf("%d kinds remembered, want at most %d", n, maxKinds)
	}
}

// A logger per connection makes each connection its own kind; the message
// cap still holds the flood to messageBurst lines, and all records together
// to totalBurst.
func TestPerConnectionLoggersAreCapped(t *testing.T) {
	log, buf, _ := newTest(10*time.Second, 5)
	for i := 0; i < 20000; i++ {
		log.With("remote", fmt.Sprintf("198.51.100.7:%d", 1024+i)).Info("node session handshake failed")
	}
	if n := len(lines(buf)); n != messageBurst {
		t.Fatalf("%d lines, want %d", n, messageBurst)
	}
	// Addresses in the text do not make a message new.
	buf.Reset()
	for i := 0; i < 20000; i++ {
		log.Warn(fmt.Sprintf("discarding stream with unacceptable label \"\": from=198.51.100.7:%d", i))
	}
	if n := len(lines(buf)); n != 5 {
		t.Fatalf("%d lines of one message with changing addresses, want 5", n)
	}
	// Messages that really differ: the total cap.
	buf.Reset()
	words := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	for i := 0; i < 20000; i++ {
		log.Error(words[i%10] + words[i/10%10] + words[i/100%10] + words[i/1000%10] + words[i/10000%10])
	}
	if n := len(lines(buf)); n != totalBurst-messageBurst-5 {
		t.Fatalf("%d lines of distinct messages, want %d (the total cap)", n, totalBurst-messageBurst-5)
	}
}
