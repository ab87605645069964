//go:build e2e

package scenarios

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// TestDayTwo runs the routine operations of a mesh's second week on one
// lab with a single coordinator (the most common mesh), a direct pair and
// a relayed pair, each while pings run over both pairs:
//
//   - renew: a node's certificate is renewed (new key, same identity) and
//     the node reloads; no ping is lost on its direct or its relayed link;
//   - rotate: the mesh is half-way through a CA rotation (every node
//     trusts the old and the new CA, docs/pki.md "Rotate the CA"): a new
//     node with a certificate of the new CA reaches every node, and a
//     running node moves to the new CA by renewal without losing a ping;
//   - coordinator-restart: the only coordinator restarts (as an upgrade
//     does, SIGTERM then start); no ping is lost on the direct pair, and
//     the relayed pair, whose TURN allocation was on that coordinator,
//     recovers.
func TestDayTwo(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	// Step 1 of a rotation: a new CA, and every node trusts both.
	newCA := filepath.Join(t.TempDir(), "ca2")
	m.offline("ca", "init", "--name", "lab-mesh-2", "--dir", newCA)
	bundle := filepath.Join(t.TempDir(), "ca-bundle.crt")
	var pem []byte
	for _, dir := range []string{m.caDir, newCA} {
		b, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		pem = append(pem, b...)
	}
	if err := os.WriteFile(bundle, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	c1 := m.addNode(l.AddHost(t, "c1", lab.HostOptions{}), nodeOpts{coordinator: true, caBundle: bundle})
	c1.start()
	c1.waitSession(t, sessionTimeout)
	join := nodeOpts{join: []*node{c1}, caBundle: bundle}
	n1 := m.addNode(l.AddNode(t, "n1", lab.NATFullCone, lab.HostOptions{}), join)
	n2 := m.addNode(l.AddNode(t, "n2", lab.NATPortRestricted, lab.HostOptions{}), join)
	relayOnly := join
	relayOnly.ice = []string{"relay_only = true"}
	n3 := m.addNode(l.AddNode(t, "n3", lab.NATSymmetric, lab.HostOptions{}), relayOnly)
	for _, n := range []*node{n1, n2, n3} {
		n.start()
	}
	for _, n := range []*node{n1, n2, n3} {
		n.waitSession(t, sessionTimeout)
	}
	mustPeer(t, n2, "n1", isDirect, linkTimeout, "direct")
	mustPeer(t, n3, "n1", isRelay, linkTimeout, "relayed (n3: ice.relay_only)")
	mustPeer(t, n2, "n3", isRelay, linkTimeout, "relayed (n3: ice.relay_only)")

	t.Run("renew", func(t *testing.T) { testRenew(t, m, n1, n2, n3, m.caDir) })
	t.Run("rotate", func(t *testing.T) { testHalfRotated(t, m, l, newCA, bundle, c1, n1, n2, n3) })
	t.Run("coordinator-restart", func(t *testing.T) { testOnlyCoordinatorRestart(t, c1, n1, n2, n3) })
}

// pinger is a `ping -D -i 0.1` from one node to another.
type pinger struct {
	name string
	p    *lab.Proc
}

func startPing(t *testing.T, from, to *node) *pinger {
	t.Helper()
	label := "ping-" + from.name + "-" + to.name
	p, err := from.host.StartWith(lab.ProcOptions{Label: label}, "ping", "-n", "-D", "-i", "0.1", "-W", "1", to.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop() })
	return &pinger{name: from.name + " → " + to.name, p: p}
}

// waitReplies waits until the ping has n replies after since.
func (pg *pinger) waitReplies(since time.Time, n int, timeout time.Duration) bool {
	_, _, ok := waitUntil(timeout, 100*time.Millisecond, func() (bool, string) {
		k := 0
		for _, r := range parsePingD(pg.p.Stdout()) {
			if r.at.After(since) {
				k++
			}
		}
		return k >= n, ""
	})
	return ok
}

// lost stops the ping and returns the sequence numbers that went
// unanswered between its first and its last reply, and the replies.
func (pg *pinger) lost() (missing []int, rs []pingReply) {
	_ = pg.p.Stop()
	rs = parsePingD(pg.p.Stdout())
	for i := 1; i < len(rs); i++ {
		for s := rs[i-1].seq + 1; s < rs[i].seq; s++ {
			missing = append(missing, s)
		}
	}
	return missing, rs
}

// testRenew renews n1's certificate with the CA in caDir by the runbook
// (docs/pki.md "Renew a node": cert renew, cert sign --renew, cert
// install, reload), while n2 (direct) and n3 (relayed) ping n1.
func testRenew(t *testing.T, m *mesh, n1, n2, n3 *node, caDir string) {
	ctx := context.Background()
	before, err := n1.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	direct, relayed := startPing(t, n2, n1), startPing(t, n3, n1)
	start := time.Now()
	for _, pg := range []*pinger{direct, relayed} {
		if !pg.waitReplies(start, 10, linkTimeout) {
			t.Fatalf("%s: no replies before the renewal:\n%s", pg.name, tailLines(pg.p.Stdout(), 3))
		}
	}

	// docs/pki.md "Renew a node": a new key and a request on the node, one
	// command at the CA, install on the node (the live key is replaced
	// only once its certificate exists), reload.
	m.offline("cert", "renew", "--cert", n1.cert)
	csr := strings.TrimSuffix(n1.cert, ".crt") + ".new.csr"
	tmp := t.TempDir()
	sign := []string{"cert", "sign", "--ca-dir", caDir, "--csr", csr, "--renew", "--out", tmp}
	if caDir != m.caDir {
		// Renewed by the new CA of a rotation, whose index does not know
		// the node: name the certificate being renewed and its CA.
		sign = append(sign, "--previous", n1.cert, "--previous-ca", filepath.Join(m.caDir, "ca.crt"))
	}
	m.offline(sign...)
	ca := n1.opts.caBundle
	if ca == "" {
		ca = filepath.Join(caDir, "ca.crt")
	}
	m.offline("cert", "install", "--cert", n1.cert, "--ca", ca, filepath.Join(tmp, n1.name+".crt"))
	reloaded := time.Now()
	out, err := n1.ctl(ctx, "reload")
	if err != nil {
		t.Fatalf("meshctl reload after the renewal: %v\n%s", err, out)
	}
	if !strings.Contains(out, "pki.cert") {
		t.Errorf("meshctl reload does not say it applied pki.cert:\n%s", out)
	}
	var after *control.Status
	took, detail, ok := waitUntil(linkTimeout, 200*time.Millisecond, func() (bool, string) {
		st, err := n1.status(ctx)
		if err != nil {
			return false, err.Error()
		}
		after = st
		if st.Cert.Fingerprint == before.Cert.Fingerprint {
			return false, "still the old certificate"
		}
		if st.Coordinator.State != control.SessionConnected {
			return false, "coordinator session " + string(st.Coordinator.State)
		}
		for _, peer := range []string{n2.name, n3.name} {
			p, ok, err := n1.peer(ctx, peer)
			if err != nil || !ok || !p.Online || !p.LastHandshake.After(reloaded) {
				return false, fmt.Sprintf("%s: no handshake since the reload: %s", peer, describePeer(p))
			}
		}
		return true, ""
	})
	if !ok {
		t.Fatalf("after the reload, within %v: %s", linkTimeout, detail)
	}
	t.Logf("%s runs on the renewed certificate %s…, both links re-handshook, %v after the reload", n1.name, after.Cert.Fingerprint[:12], took.Round(time.Millisecond))
	end := time.Now()
	for _, pg := range []*pinger{direct, relayed} {
		if !pg.waitReplies(end, 10, linkTimeout) {
			t.Errorf("%s: no replies after the renewal", pg.name)
		}
	}
	for _, pg := range []*pinger{direct, relayed} {
		missing, rs := pg.lost()
		if len(missing) > 0 {
			t.Errorf("%s: %d of %d pings lost across the renewal (icmp_seq %v)", pg.name, len(missing), len(rs)+len(missing), missing)
		} else {
			t.Logf("%s: %d replies, none lost across the renewal", pg.name, len(rs))
		}
	}
	for _, n := range []*node{n1, n2, n3} {
		n.alive(t)
	}
}

// testHalfRotated: with every node trusting both CAs, a node signed by
// the new CA joins and reaches everyone, and n2 moves to the new CA by
// renewal while n1 and n3 ping it (testRenew with the new CA).
func testHalfRotated(t *testing.T, m *mesh, l *lab.Lab, newCA, bundle string, c1, n1, n2, n3 *node) {
	n4 := m.addNode(l.AddNode(t, "n4", lab.NATAddressRestricted, lab.HostOptions{}),
		nodeOpts{join: []*node{c1}, caDir: newCA, caBundle: bundle})
	started := time.Now()
	n4.start()
	n4.waitSession(t, sessionTimeout)
	for _, n := range []*node{n1, n2, n3} {
		for _, pair := range [][2]*node{{n4, n}, {n, n4}} {
			ctx, cancel := context.WithTimeout(context.Background(), linkTimeout+10*time.Second)
			at, err := firstReply(ctx, pair[0].host.Namespace, pair[1].addr, linkTimeout)
			cancel()
			if err != nil {
				p, _, _ := pair[0].peer(context.Background(), pair[1].name)
				t.Errorf("%s (%s) cannot reach %s: %v (%s)", pair[0].name, caOf(pair[0], newCA), pair[1].name, err, describePeer(p))
				continue
			}
			t.Logf("%s → %s answered %v after n4 started", pair[0].name, pair[1].name, at.Sub(started).Round(time.Millisecond))
		}
	}
	if t.Failed() {
		return
	}
	testRenew(t, m, n2, n1, n3, newCA)
}

func caOf(n *node, newCA string) string {
	if n.opts.caDir == newCA {
		return "new CA"
	}
	return "old CA"
}

// testOnlyCoordinatorRestart restarts the mesh's only coordinator while n1
// pings n2 (direct) and n2 pings n3 (relayed through that coordinator's
// TURN).
func testOnlyCoordinatorRestart(t *testing.T, c1, n1, n2, n3 *node) {
	direct, relayed := startPing(t, n1, n2), startPing(t, n2, n3)
	start := time.Now()
	for _, pg := range []*pinger{direct, relayed} {
		if !pg.waitReplies(start, 10, linkTimeout) {
			t.Fatalf("%s: no replies before the restart:\n%s", pg.name, tailLines(pg.p.Stdout(), 3))
		}
	}
	restart := time.Now()
	if err := c1.stop(); err != nil {
		t.Errorf("c1: exit status after SIGTERM: %v", err)
	}
	c1.start()
	c1.waitSession(t, sessionTimeout)
	for _, n := range []*node{n1, n2, n3} {
		took, _, ok := waitUntil(linkTimeout, 100*time.Millisecond, func() (bool, string) {
			st, err := n.status(context.Background())
			return err == nil && st.Coordinator.State == control.SessionConnected && st.Coordinator.Since.After(restart), ""
		})
		if !ok {
			t.Errorf("%s has no new session with the restarted c1 within %v", n.name, linkTimeout)
			continue
		}
		t.Logf("%s registered with the restarted c1 %v after the restart began", n.name, took.Round(time.Millisecond))
	}
	back := time.Now()
	for _, pg := range []*pinger{direct, relayed} {
		if !pg.waitReplies(back, 10, linkTimeout) {
			t.Errorf("%s: no replies after the coordinator restart:\n%s", pg.name, tailLines(pg.p.Stdout(), 3))
		}
	}
	missing, rs := direct.lost()
	if len(missing) > 0 {
		t.Errorf("%s (direct): %d pings lost across the coordinator restart (icmp_seq %v); a direct link needs no coordinator", direct.name, len(missing), missing)
	} else {
		t.Logf("%s (direct): %d replies, none lost across the coordinator restart", direct.name, len(rs))
	}
	missing, rs = relayed.lost()
	if _, gap, lost := gapAfter(rs, restart, time.Now()); lost {
		t.Logf("%s (relayed through c1): %d pings lost, longest gap %v", relayed.name, len(missing), gap.Round(time.Millisecond))
	} else {
		t.Logf("%s (relayed through c1): %d replies, none lost", relayed.name, len(rs))
	}
	for _, n := range []*node{n1, n2, n3} {
		if strings.Contains(n.stderr(), "reason=gone") {
			t.Errorf("%s dropped a peer as gone during the coordinator restart:\n%s", n.name, grepLines(n.stderr(), "reason=gone", 5))
		}
		n.alive(t)
	}
}

// grepLines returns up to max lines of s that contain sub.
func grepLines(s, sub string, max int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && len(out) < max {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
