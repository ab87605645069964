package daemon

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
	"github.com/meshd/meshd/tunnel"
)

// TestReloadRenewsCertificate: beta's certificate and key are replaced in
// place by a renewal (same identity) and beta reloads while alpha pings it.
// No ping is lost, neither side's link is replaced, alpha's link and the
// coordinator's registry move to the new certificate. A certificate that
// changes the identity is not applied and is reported as needing a restart.
func TestReloadRenewsCertificate(t *testing.T) {
	testutil.LeakCheck(t)
	m := newTestMesh(t)
	na := m.node(t, "alpha", 1, nodeSpec{groups: []string{"lab"}})
	nb := m.node(t, "beta", 2, nodeSpec{})
	a := startDaemon(t, na, m.config(t, na, confSpec{coordinator: true}))
	b := startDaemon(t, nb, m.config(t, nb, confSpec{join: []string{a.sessionAddr()}}))
	waitReady(t, a)
	waitReady(t, b)
	testutil.WaitFor(t, 20*time.Second, "alpha and beta linked", func() bool {
		la, lb := a.view.Load().links["beta"], b.view.Load().links["alpha"]
		return la != nil && lb != nil && la.link.State() == tunnel.StateConnected && lb.link.State() == tunnel.StateConnected
	})
	linkA, linkB := a.view.Load().links["beta"], b.view.Load().links["alpha"]
	genA := linkA.link.Status().Generation

	// alpha pings beta all through the renewal.
	var replies []control.PingReply
	pinged := make(chan error, 1)
	go func() {
		pinged <- a.Ping(context.Background(), "beta", 60, 25*time.Millisecond, false, func(r control.PingReply) { replies = append(replies, r) })
	}()

	renew := func(spec nodeSpec) *pki.NodeCert {
		t.Helper()
		key, err := pki.GenerateKey(pki.KeyECDSAP256)
		if err != nil {
			t.Fatal(err)
		}
		id := nb.cert.Identity
		if spec.groups != nil {
			id.Groups = spec.groups
		}
		nc, err := m.ca.Sign(key.Public(), id, 48*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteFile(nb.certPath, nc.PEM(), 0o644, true); err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteKeyFile(nb.keyPath, key, true); err != nil {
			t.Fatal(err)
		}
		return nc
	}
	renewed := renew(nodeSpec{})
	res, err := b.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Changed, "pki.cert") || len(res.NeedsRestart) != 0 {
		t.Fatalf("reload result %+v: want pki.cert applied, nothing needing a restart", res)
	}
	testutil.WaitFor(t, 20*time.Second, "alpha's link and registry on beta's new certificate", func() bool {
		rec, ok := a.client.Load().Peer("beta")
		return linkA.link.Status().PeerFingerprint == renewed.Fingerprint && ok && rec.Cert.Fingerprint == renewed.Fingerprint
	})
	if err := <-pinged; err != nil {
		t.Fatal(err)
	}
	lost := 0
	for _, r := range replies {
		if r.Error != "" {
			lost++
		}
	}
	if len(replies) != 60 || lost != 0 {
		t.Errorf("%d replies, %d lost during the renewal, want 60 and 0", len(replies), lost)
	}
	if a.view.Load().links["beta"] != linkA || b.view.Load().links["alpha"] != linkB {
		t.Error("the renewal replaced a link")
	}
	if st := linkA.link.Status(); st.Generation != genA || st.State != tunnel.StateConnected || st.Failures != 0 {
		t.Errorf("alpha's link restarted or failed: %+v", st)
	}
	if got := b.cred().Cert.Fingerprint; got != renewed.Fingerprint {
		t.Errorf("beta runs with %s, want the renewed %s", got, renewed.Fingerprint)
	}
	if a := netip.MustParseAddr("100.64.0.2"); b.self.Addrs[0].Addr() != a {
		t.Errorf("beta's address changed: %v", b.self.Addrs)
	}

	// Other groups are not a renewal: nothing is applied.
	renew(nodeSpec{groups: []string{"ops"}})
	res, err = b.Reload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(res.Changed, "pki.cert") || !slices.Contains(res.NeedsRestart, "pki.cert") {
		t.Errorf("reload result %+v: a certificate with other groups must need a restart", res)
	}
	if got := b.cred().Cert.Fingerprint; got != renewed.Fingerprint {
		t.Errorf("beta switched to a certificate with other groups (%s)", got)
	}
}
