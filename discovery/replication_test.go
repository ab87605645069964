package discovery

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// registerRaw registers rec on a raw session and keeps reading (discarding)
// until the test ends.
func registerRaw(t *testing.T, c *testCoord, creds *pki.Credentials, rec *Record, wg *sync.WaitGroup) error {
	conn, err := tlsDialRaw(c, creds)
	if err != nil {
		return err
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := conn.Write(recordFrame(frameRecord, rec)); err != nil {
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(io.Discard, conn)
	}()
	return nil
}

func TestBurstAndLargeRecordsReplicate(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	coords := startCluster(t, m, 2)
	var readers sync.WaitGroup
	t.Cleanup(readers.Wait) // runs after the connections are closed

	// A record too large for a gossip packet travels by reliable fan-out.
	big := m.creds(t, "node-big", 7)
	info := LocalInfo{Software: "big"}
	for i := range MaxEndpoints {
		info.Endpoints = append(info.Endpoints, netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), 40000))
	}
	for i := range MaxRoutes {
		info.Routes = append(info.Routes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 7, byte(i), 0}), 24))
	}
	bigRec, err := newLocalRecord(big, info, uint64(time.Now().UnixNano()), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(encodeGossipEntry(bigRec)) <= coords[0].bcastMax {
		t.Fatalf("test record of %d bytes fits a gossip packet (%d)", len(encodeGossipEntry(bigRec)), coords[0].bcastMax)
	}
	if err := registerRaw(t, coords[0], big, bigRec, &readers); err != nil {
		t.Fatal(err)
	}

	// A burst of registrations on one coordinator.
	const n = 60
	creds := make([]*pki.Credentials, n)
	for i := range creds {
		creds[i] = m.creds(t, fmt.Sprintf("burst-%02d", i), 10+i)
	}
	errs := make(chan error, n)
	var dial sync.WaitGroup
	for i := range n {
		dial.Add(1)
		go func() {
			defer dial.Done()
			rec, err := newLocalRecord(creds[i], LocalInfo{}, uint64(time.Now().UnixNano()), false)
			if err == nil {
				err = registerRaw(t, coords[0], creds[i], rec, &readers)
			}
			errs <- err
		}()
	}
	dial.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 10*time.Second, "burst and large record replicated to coord-2", func() bool {
		if !coordHas(coords[1].Coordinator, "node-big", func(r Record) bool { return len(r.Routes) == MaxRoutes }) {
			return false
		}
		for i := range n {
			if !coordHas(coords[1].Coordinator, fmt.Sprintf("burst-%02d", i), nil) {
				return false
			}
		}
		return true
	})
	if coords[0].fanouts.Load() == 0 {
		t.Fatal("nothing travelled by reliable fan-out")
	}
}

func tlsDialRaw(c *testCoord, creds *pki.Credentials) (io.ReadWriteCloser, error) {
	return tlsDial(c.addr(), creds)
}

func TestCoordinatorHostRegistersWithItself(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	// The coordinator's verifier knows its own certificate (as a daemon's
	// shared verifier would); its host's own session must still be served.
	var self *pki.Credentials
	c := m.startCoord(t, "coord-1", 200, nil, func(o *CoordinatorOptions) {
		self = o.Credentials
		o.Verifier = m.verifier(o.Credentials)
	})
	host := m.startClient(t, self, []string{c.addr()})
	b := m.startClient(t, m.creds(t, "node-b", 2), []string{c.addr()})
	testutil.WaitFor(t, 5*time.Second, "coordinator host and node see each other", func() bool {
		return seesAll(host.Client, []string{"coord-1", "node-b"}, true) && seesAll(b.Client, []string{"coord-1", "node-b"}, true)
	})
}

func TestClientResignsAboveHeldVersion(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	c := m.startCluster1(t)
	a := m.creds(t, "node-a", 1)
	// A previous incarnation with a clock five minutes ahead (within
	// MaxVersionSkew) registered first.
	future := uint64(time.Now().Add(5 * time.Minute).UnixNano())
	ahead, err := newLocalRecord(a, LocalInfo{}, future, false)
	if err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, c, a)
	r.write(recordFrame(frameRecord, ahead))
	r.next(frameWelcome)
	_ = r.conn.Close()
	testutil.WaitFor(t, 5*time.Second, "old session offline", func() bool {
		return coordHas(c.Coordinator, "node-a", func(r Record) bool { return !r.Presence.Online })
	})

	cl := m.startClient(t, a, []string{c.addr()})
	testutil.WaitFor(t, 5*time.Second, "client re-signs above the held version and registers", func() bool {
		return cl.Status().Connected && coordHas(c.Coordinator, "node-a", func(r Record) bool { return r.Version > future && r.Presence.Online })
	})
	if !cl.log.contains("re-signing") {
		t.Error("re-signing not logged")
	}
	// UpdateRecord keeps climbing from there.
	if err := cl.UpdateRecord(LocalInfo{Software: "v3"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "update stored", func() bool {
		return coordHas(c.Coordinator, "node-a", func(r Record) bool { return r.Software == "v3" && r.Version > future })
	})
	if err := cl.UpdateRecord(LocalInfo{Routes: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}); err == nil {
		t.Fatal("route outside the certificate accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := cl.SendSignal(ctx, "node-a", []byte("to self")); err != nil {
		t.Fatalf("signal to self: %v", err)
	}
}
