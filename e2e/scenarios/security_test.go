//go:build e2e

package scenarios

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// TestSecurity: three kinds of node must be refused while the rest of the
// mesh keeps working — one whose certificate was revoked before it started,
// one whose certificate comes from another CA, and one ("abe") holding a
// valid certificate for the overlay address of an existing node (bob), issued
// later; abe's name sorts before bob's, so a tie broken by name would hand it
// bob's traffic. Then a running node (carol) is revoked: `meshctl ca revoke`, the
// new CRL installed on the coordinator (pki.crl + SIGHUP), and within 5 s
// every other node must have cut it off.
func TestSecurity(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true})
	join := nodeOpts{join: []*node{coord}}
	alice := m.addNode(l.AddNode(t, "alice", lab.NATFullCone, lab.HostOptions{}), join)
	bob := m.addNode(l.AddNode(t, "bob", lab.NATPortRestricted, lab.HostOptions{}), join)
	carol := m.addNode(l.AddNode(t, "carol", lab.NATAddressRestricted, lab.HostOptions{}), join)
	rev := m.addNode(l.AddNode(t, "rev", lab.NATFullCone, lab.HostOptions{}), join)
	m.offline("ca", "revoke", "--ca-dir", m.caDir, "--reason", "keyCompromise", rev.cert)
	crl := filepath.Join(m.caDir, "crl.pem")
	coord.opts.crl = crl
	coord.writeConfig()

	evilCA := filepath.Join(t.TempDir(), "evil-ca")
	m.offline("ca", "init", "--name", "evil-mesh", "--dir", evilCA)
	foreign := m.addNode(l.AddNode(t, "foreign", lab.NATFullCone, lab.HostOptions{}), nodeOpts{join: []*node{coord}, caDir: evilCA})

	good := []*node{alice, bob, carol}
	for _, n := range append([]*node{coord}, good...) {
		n.start()
	}
	for _, n := range append([]*node{coord}, good...) {
		n.waitSession(t, sessionTimeout)
	}
	carol.startEvents(t)
	bob.startSink(t)
	for _, a := range good {
		for _, b := range good {
			if a != b {
				mustPeer(t, a, b.name, isOnline, linkTimeout, "up")
			}
		}
	}

	// The intruders. abe's certificate is signed now, seconds after bob's:
	// when two valid certificates claim one address, the earlier-issued one
	// keeps it (certificates carry whole seconds, and bob's is older).
	abe := m.addNode(l.AddNode(t, "abe", lab.NATFullCone, lab.HostOptions{}), nodeOpts{join: []*node{coord}, addr: bob.addr})
	for _, n := range []*node{rev, foreign, abe} {
		n.start()
	}
	ctx := context.Background()
	abe.waitSession(t, sessionTimeout) // its certificate is valid
	for _, n := range []*node{rev, foreign} {
		// Wait until the node has tried the coordinator and failed.
		var st *control.Status
		var err error
		waitUntil(linkTimeout, 100*time.Millisecond, func() (bool, string) {
			st, err = n.status(ctx)
			return err == nil && st.Coordinator.LastError != "", ""
		})
		switch {
		case err != nil:
			t.Logf("%s: no status (%v); meshd stderr: %s", n.name, err, tailLines(n.stderr(), 3))
		case st.Coordinator.State == control.SessionConnected:
			t.Errorf("%s holds a coordinator session: %+v", n.name, st.Coordinator)
		default:
			t.Logf("%s refused by the coordinator: %s, last error %q", n.name, st.Coordinator.State, st.Coordinator.LastError)
		}
		for _, g := range good {
			if p, ok, _ := g.peer(ctx, n.name); ok && p.Online {
				t.Errorf("%s has a link up to %s: %s", g.name, n.name, describePeer(p))
			}
		}
		if _, recv, _, _ := ping(ctx, n.host.Namespace, alice.addr, 3); recv > 0 {
			t.Errorf("%s reaches alice over the overlay", n.name)
		}
	}

	// abe holds a valid certificate, so it may register; but bob had the
	// address first and must keep it everywhere. Wait until the registry
	// change has reached the others (they list abe) and their links settled.
	for _, g := range []*node{alice, carol} {
		waitUntil(linkTimeout, 100*time.Millisecond, func() (bool, string) {
			p, found, _ := g.peer(ctx, "abe")
			return found && (p.Online || p.LastError != ""), ""
		})
	}
	for _, g := range []*node{alice, carol} {
		pb, _, _ := g.peer(ctx, "bob")
		pa, _, _ := g.peer(ctx, "abe")
		t.Logf("%s sees bob: %s; abe: %s", g.name, describePeer(pb), describePeer(pa))
		if !pb.Online {
			t.Errorf("%s lost bob after abe claimed bob's address %v: %s", g.name, bob.addr, describePeer(pb))
		}
		if pa.Online {
			t.Errorf("%s has a link up to abe, which claims bob's address %v: %s", g.name, bob.addr, describePeer(pa))
		}
	}
	for _, g := range []*node{alice, carol} {
		// bob runs a sink and abe does not: a completed transfer reached bob.
		if _, err := send(ctx, g.host.Namespace, m.tool, bob.addr, 256<<10, 0, 30*time.Second); err != nil {
			t.Errorf("%s → %v (bob's address) no longer reaches bob: %v", g.name, bob.addr, err)
		}
	}
	for _, a := range good {
		for _, b := range good {
			if a == b {
				continue
			}
			if sent, recv, _, _ := ping(ctx, a.host.Namespace, b.addr, 3); recv == 0 {
				t.Errorf("%s → %s: 0/%d pings answered with the intruders around", a.name, b.name, sent)
			}
		}
	}

	// Revoke the running carol and hand the new CRL to the coordinator.
	m.offline("ca", "revoke", "--ca-dir", m.caDir, carol.cert)
	p, _ := coord.process()
	hup := time.Now()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*node{alice, bob} {
		// Cut off: carol left the peer list (the registry dropped the
		// revoked record) or is listed without a link.
		var last control.Peer
		var listed bool
		took, _, ok := waitUntil(linkTimeout, 50*time.Millisecond, func() (bool, string) {
			p, found, err := g.peer(ctx, "carol")
			if err != nil {
				return false, err.Error()
			}
			last, listed = p, found
			return !found || !p.Online, ""
		})
		if !ok {
			t.Errorf("%s still has a link up to the revoked carol %v after the CRL reached the coordinator: %s", g.name, took.Round(time.Millisecond), describePeer(last))
			continue
		}
		state := "gone from the peer list"
		if listed {
			state = describePeer(last)
		}
		t.Logf("%s cut the revoked carol off %v after the coordinator's SIGHUP: %s", g.name, time.Since(hup).Round(time.Millisecond), state)
	}
	for _, g := range []*node{alice, bob} {
		if _, recv, _, _ := ping(ctx, g.host.Namespace, carol.addr, 3); recv > 0 {
			t.Errorf("%s still reaches the revoked carol", g.name)
		}
		if _, recv, _, _ := ping(ctx, carol.host.Namespace, g.addr, 3); recv > 0 {
			t.Errorf("the revoked carol still reaches %s", g.name)
		}
	}
	if sent, recv, _, _ := ping(ctx, alice.host.Namespace, bob.addr, 3); recv == 0 {
		t.Errorf("alice → bob broken after carol's revocation (0/%d)", sent)
	}
	revokedEv := false
	for _, ev := range carol.eventsSince(hup) {
		revokedEv = revokedEv || (ev.Kind == control.EventCertWarning && strings.Contains(ev.Message, "revoked"))
	}
	t.Logf("carol was told its own certificate is revoked (cert_warning event): %v", revokedEv)
	for _, n := range append([]*node{coord}, good...) {
		n.alive(t)
	}
}
