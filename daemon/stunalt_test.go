package daemon

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshd/meshd/internal/testutil"
)

func TestAnswerBinding(t *testing.T) {
	from := netip.MustParseAddrPort("198.51.100.7:40000")
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	var rq, rs stun.Message
	out, ok := answerBinding(&rq, &rs, req.Raw, from)
	if !ok {
		t.Fatal("a Binding request was not answered")
	}
	resp := &stun.Message{Raw: append([]byte(nil), out...)}
	if err := resp.Decode(); err != nil || resp.Type != stun.BindingSuccess || resp.TransactionID != req.TransactionID {
		t.Fatalf("response %v (%v), want a Binding success for the request", resp, err)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(resp); err != nil || xor.String() != from.String() {
		t.Fatalf("XOR-MAPPED-ADDRESS %v (%v), want %v", xor, err, from)
	}
	if len(out) > 52 {
		t.Errorf("response of %d bytes: an amplifier", len(out))
	}
	for name, data := range map[string][]byte{
		"not STUN":         []byte("GET / HTTP/1.1\r\n\r\n"),
		"empty":            nil,
		"binding response": stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw,
		"allocate request": stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)).Raw,
		"truncated":        req.Raw[:len(req.Raw)-3],
	} {
		if _, ok := answerBinding(&rq, &rs, data, from); ok {
			t.Errorf("%s: answered", name)
		}
	}
}

// The responder answers a real client over UDP with the address it sees.
func TestSTUNResponder(t *testing.T) {
	testutil.LeakCheck(t)
	s, err := newSTUNResponder(netip.MustParseAddrPort("127.0.0.1:0"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.DialUDP("udp", nil, s.conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("garbage"))
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := c.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	resp := &stun.Message{Raw: buf[:n]}
	var xor stun.XORMappedAddress
	if err := resp.Decode(); err != nil || xor.GetFrom(resp) != nil || xor.String() != c.LocalAddr().String() {
		t.Fatalf("mapped %v, want %v (%v)", xor, c.LocalAddr(), err)
	}
	testutil.WaitFor(t, 5*time.Second, "the garbage counted", func() bool { return s.dropped.Load() == 1 })
}

func FuzzAnswerBinding(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw)
	f.Add([]byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	from := netip.MustParseAddrPort("[2001:db8::1]:9")
	f.Fuzz(func(t *testing.T, data []byte) {
		var rq, rs stun.Message
		out, ok := answerBinding(&rq, &rs, data, from)
		if ok && len(out) > 64 {
			t.Fatalf("answered %d bytes with %d", len(data), len(out))
		}
	})
}
