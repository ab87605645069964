package main

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/internal/testutil"
)

var (
	relayReply = control.PingReply{Peer: "vps", Address: addr("100.64.0.3"), Path: control.PathRelay,
		Relay: "198.51.100.20:3478", Endpoint: ap("198.51.100.77:40000"), RTT: 12300 * time.Microsecond}
	directReply = control.PingReply{Peer: "vps", Address: addr("100.64.0.3"), Path: control.PathDirect,
		Endpoint: ap("203.0.113.5:51820"), RTT: 1200 * time.Microsecond}
	lostReply = control.PingReply{Peer: "vps", Address: addr("100.64.0.3"), Error: "timeout"}
)

func TestPingLines(t *testing.T) {
	tests := []struct {
		r    control.PingReply
		want string
	}{
		{relayReply, "pong from vps (100.64.0.3) via relay 198.51.100.20:3478 in 12.3ms"},
		{directReply, "pong from vps (100.64.0.3) via 203.0.113.5:51820 (direct) in 1.2ms"},
		{lostReply, "no reply from vps (100.64.0.3): timeout"},
		{control.PingReply{Peer: "vps", RTT: 800 * time.Microsecond}, "pong from vps in 0.80ms"},
	}
	for _, tt := range tests {
		if got := pingLine(tt.r); got != tt.want {
			t.Errorf("pingLine(%+v) = %q, want %q", tt.r, got, tt.want)
		}
	}
}

func TestPingCommand(t *testing.T) {
	h := newHarness(t)
	fast := []string{"--interval", "10ms"}

	t.Run("stops at the first direct reply", func(t *testing.T) {
		h.b.SetPingReplies("vps", []control.PingReply{relayReply, lostReply, relayReply, directReply})
		out, err := h.run(t, append([]string{"ping", "vps", "-c", "10"}, fast...)...)
		if err != nil {
			t.Fatal(err)
		}
		want := `pong from vps (100.64.0.3) via relay 198.51.100.20:3478 in 12.3ms
no reply from vps (100.64.0.3): timeout
pong from vps (100.64.0.3) via relay 198.51.100.20:3478 in 12.3ms
pong from vps (100.64.0.3) via 203.0.113.5:51820 (direct) in 1.2ms
--- vps: 4 sent, 3 received (1 direct), 25% loss, rtt min/avg/max 1.2ms/8.6ms/12.3ms
`
		if out != want {
			t.Errorf("ping output:\n%s\nwant:\n%s", out, want)
		}
	})
	t.Run("relay only succeeds by default", func(t *testing.T) {
		h.b.SetPingReplies("vps", []control.PingReply{relayReply})
		out, err := h.run(t, append([]string{"ping", "vps", "-c", "3"}, fast...)...)
		if err != nil {
			t.Errorf("ping over a working relay: %v (exit %d)", err, exitCode(err))
		}
		if strings.Count(out, "via relay") != 3 {
			t.Errorf("want 3 relay replies:\n%s", out)
		}
	})
	t.Run("relay only is an error with an explicit until-direct", func(t *testing.T) {
		h.b.SetPingReplies("vps", []control.PingReply{relayReply})
		out, err := h.run(t, append([]string{"ping", "vps", "-c", "3", "--until-direct"}, fast...)...)
		if exitCode(err) != 1 || !strings.Contains(err.Error(), "direct path to vps not established after 3 pings") {
			t.Errorf("ping over relay only: %v (exit %d)", err, exitCode(err))
		}
		if strings.Count(out, "via relay") != 3 {
			t.Errorf("want 3 relay replies:\n%s", out)
		}
	})
	t.Run("until-direct=false sends all", func(t *testing.T) {
		h.b.SetPingReplies("vps", []control.PingReply{directReply})
		out, err := h.run(t, append([]string{"ping", "vps", "-c", "3", "--until-direct=false"}, fast...)...)
		if err != nil || strings.Count(out, "(direct)") != 3 {
			t.Errorf("ping --until-direct=false: %v\n%s", err, out)
		}
	})
	t.Run("no replies", func(t *testing.T) {
		h.b.SetPingReplies("vps", []control.PingReply{lostReply})
		_, err := h.run(t, append([]string{"ping", "vps", "-c", "2"}, fast...)...)
		if exitCode(err) != 1 || err.Error() != "no reply from vps after 2 pings" {
			t.Errorf("ping with no replies: %v", err)
		}
	})
	t.Run("unknown peer", func(t *testing.T) {
		_, err := h.run(t, "ping", "ghost")
		if !errors.Is(err, control.ErrPeerNotFound) {
			t.Errorf("ping ghost: %v, want ErrPeerNotFound", err)
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		for _, args := range [][]string{{"ping", "vps", "-c", "0"}, {"ping", "vps", "--interval", "1ms"}, {"ping"}} {
			if _, err := h.run(t, args...); err == nil {
				t.Errorf("meshctl %v succeeded", args)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		h.b.SetPingReplies("vps", []control.PingReply{relayReply, directReply})
		out, err := h.run(t, append([]string{"ping", "vps", "--json"}, fast...)...)
		if err != nil {
			t.Fatal(err)
		}
		var replies []control.PingReply
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var r control.PingReply
			if err := control.Decode(sc.Bytes(), &r); err != nil {
				t.Fatalf("ping --json line %q: %v", sc.Text(), err)
			}
			replies = append(replies, r)
		}
		if len(replies) != 2 || replies[0].Relay != relayReply.Relay || replies[1].Path != control.PathDirect || replies[1].Seq != 2 {
			t.Errorf("ping --json: %+v", replies)
		}
	})
	t.Run("interrupt", func(t *testing.T) {
		h.b.SetPingReplies("vps", []control.PingReply{relayReply})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- runMeshctlTo(ctx, &out, h.sock, "ping", "vps", "-c", "10000", "--interval", "10ms")
		}()
		testutil.WaitFor(t, 5*time.Second, "two replies", func() bool { return strings.Count(out.String(), "pong") >= 2 })
		cancel()
		if err := <-done; err != nil {
			t.Errorf("interrupted ping with replies: %v, want exit 0", err)
		}
		if !strings.Contains(out.String(), "--- vps: ") {
			t.Errorf("interrupted ping printed no summary:\n%s", out.String())
		}
		testutil.WaitFor(t, 5*time.Second, "daemon-side ping to stop", func() bool { return h.b.ActivePings() == 0 })
	})
}
