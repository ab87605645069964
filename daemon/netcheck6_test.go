package daemon

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// testSTUNServer answers Binding requests on pc until it closes.
func testSTUNServer(t *testing.T, network, addr string) string {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { _ = pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil {
				continue
			}
			ua := from.(*net.UDPAddr)
			resp, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
				&stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
			if err == nil {
				_, _ = pc.WriteTo(resp.Raw, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// TestProbeSTUNBothFamilies: netcheck's probe asks STUN servers of both
// families, each over a socket of its family, and an IPv6 server's answer
// carries the IPv6 reflexive address.
func TestProbeSTUNBothFamilies(t *testing.T) {
	v4 := testSTUNServer(t, "udp4", "127.0.0.1:0")
	v6 := testSTUNServer(t, "udp6", "[::1]:0")
	targets := []stunTarget{{hostPort: v4, stunURL: "stun:" + v4}, {hostPort: v6, stunURL: "stun:" + v6}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	answers := probeSTUN(ctx, targets)
	for i, want := range []func(netip.Addr) bool{netip.Addr.Is4, netip.Addr.Is6} {
		a := answers[i]
		if a.err != nil {
			t.Fatalf("%s: %v", targets[i].hostPort, a.err)
		}
		if !want(a.addr.Addr()) || !want(a.reflexive.Addr()) || !a.reflexive.Addr().IsLoopback() {
			t.Errorf("%s: probed %v, reflexive %v", targets[i].hostPort, a.addr, a.reflexive)
		}
	}
}
