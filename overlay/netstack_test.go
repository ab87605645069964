package overlay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
)

// unode is one overlay in userspace mode: its own gVisor netstack.
type unode struct {
	name string
	addr netip.Addr
	ifc  *overlay.Interface
}

func newUNode(t *testing.T, name string, addr netip.Addr) *unode {
	t.Helper()
	ifc, err := overlay.New(overlay.Options{
		Mode:               overlay.ModeUserspace,
		UserspaceAddresses: []netip.Addr{addr},
		Logger:             testLogger(t),
	})
	if err != nil {
		t.Fatalf("New(userspace): %v", err)
	}
	t.Cleanup(func() {
		if err := ifc.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := ifc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &unode{name: name, addr: addr, ifc: ifc}
}

// mesh joins every pair of nodes with an async pipe and configures each
// node with all others as peers, with fw as every node's firewall.
func mesh(t *testing.T, fw overlay.FirewallConfig, nodes ...*unode) {
	t.Helper()
	peers := make([][]overlay.PeerConfig, len(nodes))
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			ci, cj := pipe(t, true)
			peers[i] = append(peers[i], overlay.PeerConfig{Name: nodes[j].name, AllowedPrefixes: []netip.Prefix{host(nodes[j].addr)}, Conn: ci})
			peers[j] = append(peers[j], overlay.PeerConfig{Name: nodes[i].name, AllowedPrefixes: []netip.Prefix{host(nodes[i].addr)}, Conn: cj})
		}
	}
	for i, n := range nodes {
		reconfig(t, n.ifc, overlay.Config{Addresses: []netip.Prefix{meshAddr(n.addr)}, Peers: peers[i], Firewall: fw})
	}
}

// echoServer accepts on n's netstack at port and echoes each connection
// until EOF. It stops at cleanup.
func echoServer(t *testing.T, n *unode, port uint16) {
	t.Helper()
	l, err := n.ifc.Net().ListenTCPAddrPort(netip.AddrPortFrom(n.addr, port))
	if err != nil {
		t.Fatalf("listen on %s: %v", n.name, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
}

// roundTrip dials to:port from from's netstack, sends size random bytes,
// and checks that the echo matches.
func roundTrip(ctx context.Context, from *unode, to netip.Addr, port uint16, size int) error {
	c, err := from.ifc.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(to, port))
	if err != nil {
		return fmt.Errorf("%s dial %s: %w", from.name, to, err)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	data := make([]byte, size)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-errc; werr != nil {
		return fmt.Errorf("%s write: %w", from.name, werr)
	}
	if err != nil {
		return fmt.Errorf("%s read: %w", from.name, err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("%s → %s: echo of %d bytes differs (got %d)", from.name, to, size, len(got))
	}
	return nil
}

var sshOnly = overlay.FirewallConfig{Inbound: []overlay.Rule{{Proto: overlay.ProtoTCP, Ports: []overlay.PortRange{{7, 7}}}}}

func TestNetstackTCPTwoNodes(t *testing.T) {
	testutil.LeakCheck(t)
	a := newUNode(t, "a", addrA)
	b := newUNode(t, "b", addrB)
	mesh(t, sshOnly, a, b)
	echoServer(t, b, 7)
	echoServer(t, a, 7)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := roundTrip(ctx, a, addrB, 7, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(ctx, b, addrA, 7, 64<<10); err != nil {
		t.Fatal(err)
	}
	sa, sb := a.ifc.Stats(), b.ifc.Stats()
	if sa.PacketsOut < 700 || sb.PacketsIn < 700 {
		t.Fatalf("1 MiB took %d packets out of a and %d into b", sa.PacketsOut, sb.PacketsIn)
	}
	if sa.Drops.Spoofed+sa.Drops.Malformed+sb.Drops.Spoofed+sb.Drops.Malformed != 0 {
		t.Fatalf("drops: a %+v b %+v", sa.Drops, sb.Drops)
	}
}

func TestNetstackTCPThreeNodes(t *testing.T) {
	testutil.LeakCheck(t)
	a := newUNode(t, "a", addrA)
	b := newUNode(t, "b", addrB)
	c := newUNode(t, "c", addrC)
	mesh(t, sshOnly, a, b, c)
	for _, n := range []*unode{a, b, c} {
		echoServer(t, n, 7)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for _, p := range [][2]*unode{{a, b}, {a, c}, {b, c}, {c, a}, {b, a}, {c, b}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- roundTrip(ctx, p[0], p[1].addr, 7, 128<<10)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestNetstackFailsFast(t *testing.T) {
	testutil.LeakCheck(t)
	a := newUNode(t, "a", addrA)
	b := newUNode(t, "b", addrB)
	mesh(t, sshOnly, a, b)

	// No peer has 100.64.0.99: the overlay answers the SYN with ICMP host
	// unreachable and the dial fails at once instead of timing out.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := a.ifc.Net().DialContextTCPAddrPort(ctx, netip.AddrPortFrom(addrX, 7))
	if err == nil {
		t.Fatal("dial to an address without a route succeeded")
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial timed out (%v) instead of failing on ICMP unreachable", err)
	}
	if !strings.Contains(err.Error(), "no route to host") {
		t.Fatalf("dial error %q is not EHOSTUNREACH (no route to host)", err)
	}
	// The packet loop publishes its counters after the batch, and so after
	// the ICMP error that failed the dial: wait for them, do not sample.
	testutil.WaitFor(t, 10*time.Second, "the no-route drop and the ICMP error counted", func() bool {
		s := a.ifc.Stats()
		return s.Drops.NoRoute > 0 && s.ICMPSent > 0
	})

	// The firewall denies port 8 on b: the dial gets no answer at all.
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	if c, err := a.ifc.Net().DialContextTCPAddrPort(short, netip.AddrPortFrom(addrB, 8)); err == nil {
		c.Close()
		t.Fatal("dial to a firewalled port succeeded")
	}
	testutil.WaitFor(t, 10*time.Second, "b to count the inbound firewall drop", func() bool {
		return b.ifc.Stats().Drops.FirewallIn > 0
	})
}
