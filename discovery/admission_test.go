package discovery

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestIdleConnectionsCannotStarveSessions: one host holding 1 000 idle TCP
// connections (no TLS ClientHello) to a coordinator does not keep a real
// node from registering. The idle connections come from 127.0.0.2, the node
// from 127.0.0.1, so the per-source cap is what lets the node in; the 2 s is
// the requirement and holds on a loaded box because nothing the node
// does waits for the idle connections (each holds its slot for the whole
// 5 s HandshakeTimeout of the test coordinator). The 1 000 exceed every
// slot (256), so without the per-source cap the node would wait those 5 s.
func TestIdleConnectionsCannotStarveSessions(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
	const idle = 1000
	conns := make([]net.Conn, 0, idle)
	t.Cleanup(func() {
		for _, conn := range conns {
			_ = conn.Close()
		}
	})
	for range idle {
		conn, err := d.Dial("tcp", c.addr())
		if err != nil {
			t.Fatalf("idle connection %d: %v", len(conns), err)
		}
		conns = append(conns, conn)
	}
	// The coordinator has seen every idle connection before the node dials.
	testutil.WaitFor(t, 10*time.Second, "idle connections accepted", func() bool {
		return c.Stats().UnauthRefused+uint64(c.adm.pending()) >= idle
	})

	start := time.Now()
	a := m.startClient(t, m.creds(t, "node-a", 1), []string{c.addr()})
	testutil.WaitFor(t, 2*time.Second, "node registered despite idle connections", func() bool {
		return a.Status().Connected && coordHas(c.Coordinator, "node-a", nil)
	})
	t.Logf("registered in %v with %d idle connections held, %d refused at accept", time.Since(start), c.adm.pending(), c.Stats().UnauthRefused)
	if got := c.adm.pending(); got > 256/2 {
		t.Errorf("%d unauthenticated connections held from one source, want at most half the slots (128)", got)
	}
	testutil.WaitFor(t, 2*time.Second, "refusals logged", func() bool {
		return c.log.contains("refusing unauthenticated connections", "source=127.0.0.2", "reason=\"per-source limit\"")
	})
}

func TestAdmissionCaps(t *testing.T) {
	a := newAdmission(3, 2)
	x := sourceKey(&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1})
	y := sourceKey(&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 2})
	y2 := sourceKey(&net.TCPAddr{IP: net.ParseIP("2001:db8::ffff"), Port: 3})
	z := sourceKey(&net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 4})
	if y != y2 {
		t.Fatalf("one IPv6 /64 is two sources: %v %v", y, y2)
	}
	steps := []struct {
		src  string
		want admitVerdict
	}{
		{"x", admitted}, {"x", admitted}, {"x", admitSourceFull},
		{"y", admitted}, {"y2", admitTotalFull}, {"z", admitTotalFull},
	}
	srcs := map[string]netip.Addr{"x": x, "y": y, "y2": y2, "z": z}
	for i, s := range steps {
		if got := a.admit(srcs[s.src]); got != s.want {
			t.Fatalf("step %d (%s): %v, want %v", i, s.src, got, s.want)
		}
	}
	a.release(x)
	if got := a.admit(z); got != admitted {
		t.Fatalf("after a release: %v", got)
	}
}
