//go:build e2e

package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// overlayPrefix is the lab's IPv4 overlay prefix (mesh.overlayIP); its IPv6
// overlay addresses are unique local ones.
var overlayPrefix = netip.MustParsePrefix("100.64.0.0/10")

// listener is one socket a process listens on, as ss shows it.
type listener struct {
	proto string // "udp" or "tcp"
	addr  netip.AddrPort
}

var ssLine = regexp.MustCompile(`^(\S+)\s+\S+\s+\d+\s+\d+\s+(\S+):(\d+)\s+\S+\s+users:\(\(.*pid=(\d+),`)

// listeners returns the UDP and TCP sockets pid listens on in ns.
func listeners(ctx context.Context, ns *lab.Namespace, pid int) ([]listener, error) {
	out, err := ns.Output(ctx, "ss", "-Hlnup", "--tcp")
	if err != nil {
		return nil, err
	}
	var ls []listener
	for _, line := range strings.Split(out, "\n") {
		m := ssLine.FindStringSubmatch(line)
		if m == nil || m[4] != strconv.Itoa(pid) {
			continue
		}
		host := strings.Trim(m[2], "[]")
		if host == "*" {
			host = "0.0.0.0"
		}
		a, err := netip.ParseAddr(strings.Split(host, "%")[0])
		if err != nil {
			continue
		}
		port, _ := strconv.Atoi(m[3])
		ls = append(ls, listener{proto: m[1], addr: netip.AddrPortFrom(a, uint16(port))})
	}
	return ls, nil
}

// garbageResult is labtool garbage's summary.
type garbageResult struct {
	Datagrams int `json:"datagrams"`
	Streams   int `json:"streams"`
	Refused   int `json:"refused"`
	Bytes     int `json:"bytes"`
}

// TestBadInput sends random and malformed datagrams and TCP streams (and
// junk into the control socket) at every socket that the meshd of a
// coordinator and of two public nodes listens on, for 5 s at a bounded
// rate, while pings cross the overlay: bob → alice (direct), bob → coord,
// and bob → carol, whose links are relayed (ice.relay_only), so that her
// TURN client sockets are among the targets. No daemon may crash, threads
// and memory must come back within bounds, and no ping may be lost.
func TestBadInput(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	// No TURN over TCP: carol's relay candidates must be UDP allocations,
	// whose client sockets are on her public address among the targets.
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true, metrics: true})
	alice := m.addNode(l.AddHost(t, "alice", lab.HostOptions{}), nodeOpts{join: []*node{coord}, metrics: true})
	carol := m.addNode(l.AddHost(t, "carol", lab.HostOptions{}), nodeOpts{join: []*node{coord}, ice: []string{"relay_only = true"}})
	bob := m.addNode(l.AddNode(t, "bob", lab.NATFullCone, lab.HostOptions{}), nodeOpts{join: []*node{coord}})
	mallory := l.AddHost(t, "mallory", lab.HostOptions{})
	all := []*node{coord, alice, carol, bob}
	for _, n := range all {
		n.start()
	}
	for _, n := range all {
		n.waitSession(t, sessionTimeout)
	}
	mustPeer(t, bob, "alice", isDirect, linkTimeout, "direct")
	mustPeer(t, bob, "coord", isDirect, linkTimeout, "direct")
	mustPeer(t, bob, "carol", isRelay, linkTimeout, "relayed (carol: ice.relay_only)")
	ctx := context.Background()

	type victim struct {
		n      *node
		pid    int
		remote []string // udp and tcp targets reachable from mallory
		udp    []string
		tcp    []string
		local  []string // loopback TCP, attacked from inside
		// overlay UDP and TCP (the resolver on the overlay addresses),
		// attacked from inside: the backbone has no route to them.
		overlayUDP, overlayTCP []string
		rss                    int
		threads                int
		drops                  map[string]uint64
	}
	var victims []*victim
	for _, n := range []*node{coord, alice, carol} {
		p, _ := n.process()
		v := &victim{n: n, pid: p.PID()}
		ls, err := listeners(ctx, n.host.Namespace, v.pid)
		if err != nil {
			t.Fatal(err)
		}
		var desc []string
		for _, li := range ls {
			a := li.addr
			if a.Addr().IsUnspecified() {
				a = netip.AddrPortFrom(n.host.IP(), a.Port())
			}
			desc = append(desc, li.proto+" "+a.String())
			switch {
			case a.Addr().IsLoopback():
				v.local = append(v.local, a.String())
			case overlayPrefix.Contains(a.Addr()) || a.Addr().IsPrivate() && a.Addr().Is6():
				if li.proto == "udp" {
					v.overlayUDP = append(v.overlayUDP, a.String())
				} else {
					v.overlayTCP = append(v.overlayTCP, a.String())
				}
			case li.proto == "udp":
				v.udp = append(v.udp, a.String())
			default:
				v.tcp = append(v.tcp, a.String())
			}
		}
		sort.Strings(desc)
		t.Logf("%s: meshd (pid %d) listens on %s and the control socket %s", n.name, v.pid, strings.Join(desc, ", "), n.sock)
		if len(v.udp) == 0 {
			t.Fatalf("%s: found no UDP listener of meshd", n.name)
		}
		victims = append(victims, v)
	}
	measure := func(v *victim) (rss, threads int, drops map[string]uint64) {
		rss, threads, err := procStatus(v.pid)
		if err != nil {
			t.Fatalf("%s: %v", v.n.name, err)
		}
		st, err := v.n.status(ctx)
		if err != nil {
			t.Fatalf("%s: status: %v", v.n.name, err)
		}
		return rss, threads, st.Drops
	}
	for _, v := range victims {
		v.rss, v.threads, v.drops = measure(v)
	}

	// Pings across the overlay during the attack and a little after: bob →
	// alice (direct), bob → coord (direct) and bob → carol (relayed), 5 per
	// second for 8 s.
	type pingRes struct {
		to         string
		sent, recv int
		err        error
	}
	targets := []*node{alice, coord, carol}
	pings := make(chan pingRes, len(targets))
	for _, dst := range targets {
		go func() {
			s, r, _, err := ping(ctx, bob.host.Namespace, dst.addr, 40)
			pings <- pingRes{dst.name, s, r, err}
		}()
	}

	// The attack: from mallory at every public socket, and from inside each
	// namespace at the loopback ones and the control socket.
	var wg sync.WaitGroup
	results := make([]string, 0)
	var mu sync.Mutex
	attack := func(from *lab.Namespace, label string, args ...string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			out, err := from.Output(cctx, m.tool, append([]string{"garbage", "-duration", "5s", "-max", "40000", "-seed", strconv.Itoa(len(label))}, args...)...)
			var g garbageResult
			if jerr := json.Unmarshal([]byte(out), &g); err != nil || jerr != nil {
				t.Errorf("labtool garbage (%s): %v %v: %s", label, err, jerr, out)
				return
			}
			mu.Lock()
			results = append(results, fmt.Sprintf("%s: %d datagrams, %d streams (%d refused), %d bytes", label, g.Datagrams, g.Streams, g.Refused, g.Bytes))
			mu.Unlock()
		}()
	}
	logLines := func(n *node) int { return strings.Count(n.stderr(), "\n") }
	linesBefore := map[*node]int{}
	for _, v := range victims {
		linesBefore[v.n] = logLines(v.n)
	}
	cpuBefore := map[*node]time.Duration{}
	for _, v := range victims {
		cpuBefore[v.n] = processCPU(t, v.n)
	}
	attackStart := time.Now()
	for _, v := range victims {
		attack(mallory.Namespace, v.n.name+" from the backbone", "-udp", strings.Join(v.udp, ","), "-tcp", strings.Join(v.tcp, ","))
		args := []string{"-unix", v.n.sock}
		if tcp := append(slices.Clone(v.local), v.overlayTCP...); len(tcp) > 0 {
			args = append(args, "-tcp", strings.Join(tcp, ","))
		}
		if len(v.overlayUDP) > 0 {
			args = append(args, "-udp", strings.Join(v.overlayUDP, ","))
		}
		attack(v.n.host.Namespace, v.n.name+" from inside (loopback, overlay, control socket)", args...)
	}
	wg.Wait()
	attackEnd := time.Now()
	t.Logf("attack took %v", attackEnd.Sub(attackStart).Round(time.Millisecond))
	// Recorded, not asserted: how much CPU the attack cost each daemon
	// (on a loaded machine, what it could not get shows as lost pings).
	for _, v := range victims {
		t.Logf("%s: meshd used %v of CPU during the attack", v.n.name, processCPU(t, v.n)-cpuBefore[v.n])
	}
	sort.Strings(results)
	for _, r := range results {
		t.Log(r)
	}
	// The attack opens thousands of connections and datagrams; what it
	// makes meshd log is rate-limited per kind (internal/ratelog), so the
	// journal gets a few lines a kind, not one per connection. The bound
	// is loose: kinds x 5 lines per 10 s window over the attack.
	for _, v := range victims {
		added := logLines(v.n) - linesBefore[v.n]
		t.Logf("%s: %d log lines during the attack", v.n.name, added)
		if added > 400 {
			t.Errorf("%s: the attack made meshd log %d lines: a flood reaches the journal", v.n.name, added)
		}
	}
	for range targets {
		p := <-pings
		if p.err != nil || p.recv != p.sent {
			t.Errorf("bob → %s during the attack: %d of %d pings answered (%v)", p.to, p.recv, p.sent, p.err)
		} else {
			t.Logf("bob → %s during the attack: %d/%d pings answered", p.to, p.recv, p.sent)
		}
	}

	// Threads and memory must be back within bounds of the baseline once
	// the attacker's connections have wound down. Go's heap does not shrink
	// at once: what the flood made the batched readers and the runtime take
	// goes back through the background scavenger, paced at about 1% of a
	// CPU, so on a loaded machine it lingers (a run beside two CPU hogs:
	// the coordinator at +34 MB a minute later). The allowance still
	// catches state kept per datagram or per source (the flood is ~40 000
	// datagrams from thousands of source ports).
	for _, v := range victims {
		var rss, threads int
		var drops map[string]uint64
		took, _, ok := waitUntil(linkTimeout, 250*time.Millisecond, func() (bool, string) {
			v.n.alive(t)
			rss, threads, drops = measure(v)
			return threads <= v.threads+8 && rss <= v.rss+48*1024, ""
		})
		t.Logf("%s: VmRSS %d → %d kB, threads %d → %d (%v after the attack), drops before %v, after %v", v.n.name, v.rss, rss, v.threads, threads, took.Round(time.Millisecond), v.drops, drops)
		if !ok {
			t.Errorf("%s: threads (%d → %d) or VmRSS (%d → %d kB) did not come back within bounds", v.n.name, v.threads, threads, v.rss, rss)
		}
	}
	// The mesh still works: a fresh transfer and the links are up.
	alice.startSink(t)
	if _, err := send(ctx, bob.host.Namespace, m.tool, alice.addr, 1<<20, 0, 20*time.Second); err != nil {
		t.Errorf("bob → alice transfer after the attack: %v", err)
	}
	mustPeer(t, bob, "alice", isDirect, linkTimeout, "still direct")
	cctx, cancel := context.WithTimeout(ctx, linkTimeout+10*time.Second)
	defer cancel()
	if at, err := firstReply(cctx, bob.host.Namespace, carol.addr, linkTimeout); err != nil {
		p, _, _ := bob.peer(ctx, "carol")
		t.Errorf("bob → carol (relayed) does not answer %v after the attack: %v (peers --json: %s)", linkTimeout, err, describePeer(p))
	} else {
		t.Logf("bob → carol answers again %v after the attack ended", at.Sub(attackEnd).Round(time.Millisecond))
	}
}
