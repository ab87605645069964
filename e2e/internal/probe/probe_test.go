package probe

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// freeUDP returns a free UDP port on addr (loopback).
func freeUDP(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(addr)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func startServer(t *testing.T, opts ServerOptions) *Server {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	s, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		_ = s.Close()
		<-s.Done()
	})
	return s
}

// On loopback nothing translates or filters: every target observes the same
// address (EIM) and every reply of the filtering test arrives (EIF).
func TestLoopbackEchoAndFilter(t *testing.T) {
	testutil.LeakCheck(t)
	a1 := freeUDP(t, "127.0.0.1")
	a2 := freeUDP(t, "127.0.0.1")
	b1 := freeUDP(t, "127.0.0.2")
	tcp := netip.MustParseAddrPort("127.0.0.1:0")
	s := startServer(t, ServerOptions{UDP: []netip.AddrPort{a1, a2, b1}, TCP: []netip.AddrPort{tcp}})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bind := freeUDP(t, "127.0.0.1")
	got, err := Echo(ctx, bind, []netip.AddrPort{a1, b1, a2})
	if err != nil {
		t.Fatal(err)
	}
	for i, ap := range got {
		if ap != bind {
			t.Errorf("target %d observed %v, want %v", i, ap, bind)
		}
	}

	fbind := freeUDP(t, "127.0.0.1")
	fr, err := Filter(ctx, fbind, a1, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if fr.Observed != fbind {
		t.Errorf("filter observed %v, want %v", fr.Observed, fbind)
	}
	for _, ap := range []netip.AddrPort{a1, a2, b1} {
		if !fr.Passed(ap) {
			t.Errorf("reply from %v did not arrive on loopback; got %v", ap, fr.From)
		}
	}

	tcpAddr := s.tcp[0].Addr().(*net.TCPAddr).AddrPort()
	obs, err := TCPEcho(ctx, tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if obs.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("tcp observed %v", obs)
	}
}

// A target with no server must fail with ErrNoReply when the context ends,
// not hang and not report success.
func TestEchoNoServer(t *testing.T) {
	testutil.LeakCheck(t)
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	_, err := Echo(ctx, freeUDP(t, "127.0.0.1"), []netip.AddrPort{freeUDP(t, "127.0.0.1")})
	if !errors.Is(err, ErrNoReply) {
		t.Fatalf("err = %v, want ErrNoReply", err)
	}
}

// Servers must drop garbage and foreign versions without replying or dying.
func TestServerDropsMalformed(t *testing.T) {
	testutil.LeakCheck(t)
	a := freeUDP(t, "127.0.0.1")
	startServer(t, ServerOptions{UDP: []netip.AddrPort{a}})
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(a))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"", "{", `{"v":2,"op":"echo","id":1}`, `{"v":1,"op":"rm","id":1}`, string(make([]byte, 2000))} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1024)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("server answered malformed input: %q", buf[:n])
	}
	// Still serving.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := Echo(ctx, freeUDP(t, "127.0.0.1"), []netip.AddrPort{a}); err != nil {
		t.Fatalf("server stopped serving after malformed input: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	cases := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"not json", "hello"},
		{"wrong version", `{"v":0,"id":1,"from":"1.2.3.4:5","observed":"1.2.3.4:6"}`},
		{"missing addresses", `{"v":1,"id":1}`},
		{"bad address", `{"v":1,"id":1,"from":"x","observed":"1.2.3.4:6"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeReply([]byte(tc.in)); !errors.Is(err, ErrBadMessage) {
				t.Fatalf("decodeReply(%q) err = %v, want ErrBadMessage", tc.in, err)
			}
		})
	}
}

// freeUDP6 is freeUDP on ::1; it skips the test where the host has no IPv6
// loopback.
func freeUDP6(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// An IPv6 server and client speak IPv6 end to end: the server observes the
// client's IPv6 address, over UDP and TCP.
func TestLoopbackIPv6(t *testing.T) {
	testutil.LeakCheck(t)
	a := freeUDP6(t)
	s := startServer(t, ServerOptions{UDP: []netip.AddrPort{a}, TCP: []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bind := freeUDP6(t)
	got, err := Echo(ctx, bind, []netip.AddrPort{a})
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != bind {
		t.Errorf("observed %v, want %v", got[0], bind)
	}
	obs, err := TCPEcho(ctx, s.tcp[0].Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	if obs.Addr() != netip.IPv6Loopback() {
		t.Errorf("tcp observed %v, want ::1", obs)
	}
}

// Two punches aimed at each other both hear the other, in either family; a
// punch with nobody at the other end fails with ErrNoReply.
func TestPunch(t *testing.T) {
	testutil.LeakCheck(t)
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			free := func() netip.AddrPort { return freeUDP(t, "127.0.0.1") }
			if fam == "ipv6" {
				free = func() netip.AddrPort { return freeUDP6(t) }
			}
			a, b := free(), free()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			type result struct {
				heard netip.AddrPort
				err   error
			}
			ch := make(chan result, 1)
			go func() {
				h, err := Punch(ctx, b, a, 200*time.Millisecond)
				ch <- result{h, err}
			}()
			heardA, err := Punch(ctx, a, b, 200*time.Millisecond)
			if err != nil {
				t.Fatalf("punch from %v: %v", a, err)
			}
			r := <-ch
			if r.err != nil {
				t.Fatalf("punch from %v: %v", b, r.err)
			}
			if heardA != b || r.heard != a {
				t.Errorf("heard %v and %v, want %v and %v", heardA, r.heard, b, a)
			}

			lone, cancel2 := context.WithTimeout(context.Background(), 600*time.Millisecond)
			defer cancel2()
			if h, err := Punch(lone, free(), free(), 100*time.Millisecond); !errors.Is(err, ErrNoReply) {
				t.Errorf("punch at nobody: heard %v, err %v; want ErrNoReply", h, err)
			}
		})
	}
}

// FuzzDecode: the decoders of the probe wire format never panic, and what
// they accept is a message of this version within the size bound.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"v":1,"op":"echo","id":7}`))
	f.Add([]byte(`{"v":1,"id":7,"from":"[2001:db8::10]:3478","observed":"198.51.100.12:5000"}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeRequest(b); err == nil && (r.V != Version || len(b) > maxMessage || (r.Op != OpEcho && r.Op != OpFilter)) {
			t.Fatalf("decodeRequest accepted %q as %+v", b, r)
		}
		if r, err := decodeReply(b); err == nil && (r.V != Version || len(b) > maxMessage || !r.From.IsValid() || !r.Observed.IsValid()) {
			t.Fatalf("decodeReply accepted %q as %+v", b, r)
		}
	})
}
