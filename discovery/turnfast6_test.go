package discovery

import (
	"log/slog"
	"net"
	"testing"

	"github.com/pion/stun/v4"
)

// TestTURNFastRelaysPerFamily: a dual-stack relay may hold an IPv4 and an
// IPv6 relay socket on the same port; the fast path tells them apart by
// family, so an Allocate answer naming the IPv4 relayed address attaches
// its client to the IPv4 socket even after the IPv6 one opened.
func TestTURNFastRelaysPerFamily(t *testing.T) {
	ln := listenUDP(t, "udp6", "[::1]:0")
	f := newTURNFast(newPeerPolicy(&TURNOptions{}, slog.New(slog.DiscardHandler)))
	if f == nil {
		t.Skip("no batched UDP I/O on this platform")
	}
	if _, ok := f.wrapListener(ln); !ok {
		t.Skip("no batched UDP I/O on this socket")
	}
	r4 := listenUDP(t, "udp4", "127.0.0.1:0")
	port := r4.LocalAddr().(*net.UDPAddr).Port
	r6, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback, Port: port})
	if err != nil {
		t.Skipf("port %d not free on ::1: %v", port, err)
	}
	t.Cleanup(func() { _ = r6.Close() })
	s4 := f.wrapRelay(r4)
	s6 := f.wrapRelay(r6)

	answer := func(relayed *net.UDPAddr) []byte {
		m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse))
		if err != nil {
			t.Fatal(err)
		}
		if err := (&stun.XORMappedAddress{IP: relayed.IP, Port: relayed.Port}).AddToAs(m, stun.AttrXORRelayedAddress); err != nil {
			t.Fatal(err)
		}
		return m.Raw
	}
	c4 := clientID{addr: mustAddrPort("[2001:db8::4]:4000")}
	c6 := clientID{addr: mustAddrPort("[2001:db8::6]:6000")}
	f.observeAnswer(answer(&net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}), c4)
	f.observeAnswer(answer(&net.UDPAddr{IP: net.IPv6loopback, Port: port}), c6)
	f.mu.Lock()
	got4, got6 := f.clients[c4], f.clients[c6]
	f.mu.Unlock()
	if got4 != s4 || got6 != s6 {
		t.Fatalf("clients attached to %p and %p, want the IPv4 socket %p and the IPv6 one %p", got4, got6, s4, s6)
	}
	// Closing one family's socket leaves the other's registration.
	_ = s4.Close()
	f.mu.Lock()
	_, still6 := f.clients[c6]
	f.mu.Unlock()
	if !still6 {
		t.Fatal("closing the IPv4 relay socket dropped the IPv6 one's client")
	}
	_ = s6.Close()
}
