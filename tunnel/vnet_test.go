package tunnel

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v5/vnet"
	"github.com/pion/turn/v5"

	"github.com/meshd/meshd/internal/testutil"
)

// Addresses of the virtual internet (documentation ranges; vnet is
// in-process, nothing reaches a real network).
const (
	vnetServerIP = "198.51.100.20" // STUN and TURN
	vnetPublicA  = "203.0.113.1"
	vnetPublicB  = "203.0.113.2"
	vnetLocalA   = "10.0.1.2"
	vnetLocalB   = "10.0.2.2"
	vnetTURNPort = 3478
	vnetTURNUser = "user"
	vnetTURNPass = "pass"
)

// virtualNet is two LANs behind NATs and a STUN/TURN server on a WAN.
type virtualNet struct {
	wan        *vnet.Router
	netA, netB *vnet.Net
	turn       *turn.Server
	cut        atomic.Bool // drop the direct flow between the two NATs
}

func buildVNet(t *testing.T, natA, natB *vnet.NATType) *virtualNet {
	t.Helper()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	v := &virtualNet{}
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "0.0.0.0/0", LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	v.wan = wan
	wanNet, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vnetServerIP}})
	if err != nil {
		t.Fatal(err)
	}
	if err := wan.AddNet(wanNet); err != nil {
		t.Fatal(err)
	}
	lan := func(public, local, cidr string, nat *vnet.NATType) *vnet.Net {
		r, err := vnet.NewRouter(&vnet.RouterConfig{StaticIPs: []string{public}, CIDR: cidr, NATType: nat, LoggerFactory: lf})
		if err != nil {
			t.Fatal(err)
		}
		n, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{local}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.AddNet(n); err != nil {
			t.Fatal(err)
		}
		if err := wan.AddRouter(r); err != nil {
			t.Fatal(err)
		}
		return n
	}
	v.netA = lan(vnetPublicA, vnetLocalA, "10.0.1.0/24", natA)
	v.netB = lan(vnetPublicB, vnetLocalB, "10.0.2.0/24", natB)

	pubA, pubB := net.ParseIP(vnetPublicA), net.ParseIP(vnetPublicB)
	wan.AddChunkFilter(func(c vnet.Chunk) bool {
		if !v.cut.Load() {
			return true
		}
		src, ok1 := c.SourceAddr().(*net.UDPAddr)
		dst, ok2 := c.DestinationAddr().(*net.UDPAddr)
		if !ok1 || !ok2 {
			return true
		}
		direct := (src.IP.Equal(pubA) && dst.IP.Equal(pubB)) || (src.IP.Equal(pubB) && dst.IP.Equal(pubA))
		return !direct
	})
	if err := wan.Start(); err != nil {
		t.Fatal(err)
	}
	pc, err := wanNet.ListenPacket("udp4", fmt.Sprintf("%s:%d", vnetServerIP, vnetTURNPort))
	if err != nil {
		t.Fatal(err)
	}
	key := turn.GenerateAuthKey(vnetTURNUser, "meshd.test", vnetTURNPass)
	v.turn, err = turn.NewServer(turn.ServerConfig{
		Realm: "meshd.test",
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			return ra.Username, key, ra.Username == vnetTURNUser
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: pc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
				RelayAddress: net.ParseIP(vnetServerIP), Address: "0.0.0.0", Net: wanNet,
			},
		}},
		LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = v.turn.Close()
		_ = v.wan.Stop()
	})
	return v
}

func stunServer() ICEServer {
	return ICEServer{URL: fmt.Sprintf("stun:%s:%d", vnetServerIP, vnetTURNPort)}
}

func turnServer() ICEServer {
	return ICEServer{URL: fmt.Sprintf("turn:%s:%d?transport=udp", vnetServerIP, vnetTURNPort), Username: vnetTURNUser, Password: vnetTURNPass}
}

// vnetPair starts two managers on the virtual LANs and links them.
func vnetPair(t *testing.T, v *virtualNet, servers []ICEServer, timers ...Timers) (ab, ba *Link, ma, mb *Manager) {
	t.Helper()
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	tweak := func(n *vnet.Net, local string) func(*Options) {
		return func(o *Options) {
			o.Net = n
			o.ListenAddr = netip.MustParseAddr(local)
			o.Servers = func() []ICEServer { return servers }
			if len(timers) > 0 {
				o.Timers = timers[0]
			}
		}
	}
	ma = startManager(t, sig, a, tweak(v.netA, vnetLocalA))
	mb = startManager(t, sig, b, tweak(v.netB, vnetLocalB))
	ab, ba = mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	return ab, ba, ma, mb
}

func TestVNetEndpointIndependentNATsConnectDirectly(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	nat := &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointIndependent}
	v := buildVNet(t, nat, nat)
	ab, ba, _, _ := vnetPair(t, v, []ICEServer{stunServer()})
	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "links connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	exchange(t, ab, &atB, "a-to-b", 5*time.Second)
	exchange(t, ba, &atA, "b-to-a", 5*time.Second)
	for _, l := range []*Link{ab, ba} {
		st := l.Status()
		t.Logf("%s: path %v local %v remote %v rtt %v", st.Peer, st.Path, st.Local, st.Remote, st.RTT)
		if st.Path != PathDirect {
			t.Errorf("%s: path %v, want direct", st.Peer, st.Path)
		}
		if st.Local.Type == "relay" || st.Remote.Type == "relay" {
			t.Errorf("%s: relay candidate on a direct path: %v / %v", st.Peer, st.Local, st.Remote)
		}
	}
}

func TestVNetSymmetricNATsUseTheRelay(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	nat := &vnet.NATType{MappingBehavior: vnet.EndpointAddrPortDependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
	v := buildVNet(t, nat, nat)
	ab, ba, ma, mb := vnetPair(t, v, []ICEServer{stunServer(), turnServer()})
	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "links connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	exchange(t, ab, &atB, "a-to-b", 5*time.Second)
	exchange(t, ba, &atA, "b-to-a", 5*time.Second)
	for _, l := range []*Link{ab, ba} {
		st := l.Status()
		t.Logf("%s: path %v local %v remote %v relay %q rtt %v", st.Peer, st.Path, st.Local, st.Remote, st.RelayServer, st.RTT)
		if st.Path != PathRelay {
			t.Errorf("%s: path %v, want relay", st.Peer, st.Path)
		}
		if st.RelayServer == "" {
			t.Errorf("%s: no relay server in status", st.Peer)
		}
	}
	if n := v.turn.AllocationCount(); n == 0 {
		t.Fatalf("TURN server has no allocations while links are relayed")
	}
	// Closing releases every TURN allocation.
	_ = ma.Close()
	_ = mb.Close()
	testutil.WaitFor(t, 10*time.Second, "TURN allocations released", func() bool { return v.turn.AllocationCount() == 0 })
}

// TestVNetDirectPathCutFallsBackToRelay: a direct link whose direct flow is
// dropped moves to the relay and keeps carrying traffic; when the flow is
// allowed again it moves back to direct.
func TestVNetDirectPathCutFallsBackToRelay(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 120*time.Second)
	// The production timers (keepalive 1 s, path timeout 2 s) show the
	// fallback time the daemon will have; the test timers keep it quick.
	prod := DefaultTimers()
	prod.RetryMin, prod.RetryMax = testTimers().RetryMin, testTimers().RetryMax
	for _, tc := range []struct {
		name   string
		timers Timers
	}{{"test timers", testTimers()}, {"default timers", prod}} {
		t.Run(tc.name, func(t *testing.T) { testDirectPathCut(t, tc.timers) })
	}
}

func testDirectPathCut(t *testing.T, timers Timers) {
	nat := &vnet.NATType{MappingBehavior: vnet.EndpointIndependent, FilteringBehavior: vnet.EndpointIndependent}
	v := buildVNet(t, nat, nat)
	ab, ba, ma, _ := vnetPair(t, v, []ICEServer{stunServer(), turnServer()}, timers)
	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)

	var mu sync.Mutex
	var paths []Event
	unsub := ma.Subscribe(func(ev Event) {
		if ev.Kind == EventPath {
			mu.Lock()
			paths = append(paths, ev)
			mu.Unlock()
		}
	})
	defer unsub()

	testutil.WaitFor(t, 20*time.Second, "links connected directly", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected &&
			ab.Status().Path == PathDirect && ba.Status().Path == PathDirect
	})
	exchange(t, ab, &atB, "before", 5*time.Second)
	// The relay pairs must have answered checks before the cut, so that the
	// fallback has somewhere to go. Only the controlling side keeps checking
	// every pair, so look there.
	ctl := ab
	if !ab.Status().Controlling {
		ctl = ba
	}
	testutil.WaitFor(t, 10*time.Second, "a relayed pair answers", func() bool {
		for _, p := range ctl.Status().Pairs {
			if (p.Local.Type == "relay" || p.Remote.Type == "relay") && time.Since(p.LastResponse) < timers.PathTimeout/2 {
				return true
			}
		}
		return false
	})

	gen := ab.Status().Generation
	cutAt := time.Now()
	v.cut.Store(true)
	testutil.WaitFor(t, 15*time.Second, "traffic resumes over the relay", func() bool {
		return ab.Status().Path == PathRelay && ba.Status().Path == PathRelay
	})
	fallback := time.Since(cutAt)
	// Traffic flows again, both ways, over the relay.
	exchange(t, ab, &atB, "relayed-a", 10*time.Second)
	exchange(t, ba, &atA, "relayed-b", 10*time.Second)
	resumed := time.Since(cutAt)
	t.Logf("direct path cut (keepalive %v, path timeout %v): relay selected after %.3f s, traffic flowing both ways after %.3f s",
		timers.KeepaliveInterval, timers.PathTimeout, fallback.Seconds(), resumed.Seconds())
	if g := ab.Status().Generation; g != gen {
		t.Errorf("the fallback restarted ICE (generation %d -> %d); it should renominate within the session", gen, g)
	}

	v.cut.Store(false)
	healAt := time.Now()
	testutil.WaitFor(t, 20*time.Second, "the link moves back to direct", func() bool {
		return ab.Status().Path == PathDirect && ba.Status().Path == PathDirect
	})
	t.Logf("direct path restored: back on direct after %.3f s", time.Since(healAt).Seconds())
	exchange(t, ab, &atB, "direct-again", 5*time.Second)
	if g := ab.Status().Generation; g != gen {
		t.Errorf("the upgrade restarted ICE (generation %d -> %d)", gen, g)
	}
	if st := ab.Status(); st.PathChanges < 2 {
		t.Errorf("PathChanges = %d, want at least 2", st.PathChanges)
	}
	mu.Lock()
	defer mu.Unlock()
	// Each change says why: the controlling side decided (the pair failed,
	// then a direct pair answered); the controlled side followed its peer.
	wantRelay, wantDirect := PathReasonFailed, PathReasonDirect
	if !ab.Status().Controlling {
		wantRelay, wantDirect = PathReasonPeer, PathReasonPeer
	}
	var sawRelay, sawDirect bool
	for _, ev := range paths {
		if ev.Path == PathRelay && ev.Reason == wantRelay {
			sawRelay = true
		}
		if sawRelay && ev.Path == PathDirect && ev.Reason == wantDirect {
			sawDirect = true
		}
	}
	if !sawRelay || !sawDirect {
		t.Errorf("path events %+v: want relay (%s) then direct (%s)", paths, wantRelay, wantDirect)
	}
}

// TestVNetRelayedLinkRekeys: on a relayed path (symmetric NATs) records go
// through the TURN allocation both ways and are opened by the session's
// ICE reader, including across rekeys.
func TestVNetRelayedLinkRekeys(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	nat := &vnet.NATType{MappingBehavior: vnet.EndpointAddrPortDependent, FilteringBehavior: vnet.EndpointAddrPortDependent}
	v := buildVNet(t, nat, nat)
	timers := testTimers()
	timers.RekeyInterval = 300 * time.Millisecond
	timers.RekeyOverlap = time.Second
	ab, ba, _, _ := vnetPair(t, v, []ICEServer{stunServer(), turnServer()}, timers)
	var atA, atB collector
	ab.SetReceiver(atA.receive)
	ba.SetReceiver(atB.receive)
	testutil.WaitFor(t, 20*time.Second, "links connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	if ab.Status().Path != PathRelay || ba.Status().Path != PathRelay {
		t.Fatalf("paths %v / %v, want relay", ab.Status().Path, ba.Status().Path)
	}
	round := 0
	testutil.WaitFor(t, 20*time.Second, "two rekeys with traffic flowing", func() bool {
		round++
		exchange(t, ab, &atB, fmt.Sprintf("relay-ab-%d", round), 5*time.Second)
		exchange(t, ba, &atA, fmt.Sprintf("relay-ba-%d", round), 5*time.Second)
		return ab.Status().Rekeys >= 2 && ba.Status().Rekeys >= 2
	})
	for _, l := range []*Link{ab, ba} {
		if st := l.Status(); st.Failures != 0 || st.Path != PathRelay || st.Epoch < 0x4002 {
			t.Errorf("%s: %d failures (last %v), path %v, epoch %#04x", st.Peer, st.Failures, st.LastError, st.Path, st.Epoch)
		}
	}
}
