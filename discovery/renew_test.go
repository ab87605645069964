package discovery

import (
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestClientRenewsCertificate: SetCredentials re-registers the node with
// its renewed certificate on the same coordinator; peers get the new record
// and never see the node removed; another name is refused.
func TestClientRenewsCertificate(t *testing.T) {
	m := newTestMesh(t)
	co := m.startCoord(t, "c1", 100, nil)
	a := m.startClient(t, m.creds(t, "alpha", 1), []string{co.addr()})
	b := m.startClient(t, m.creds(t, "bravo", 2), []string{co.addr()})
	testutil.WaitFor(t, 10*time.Second, "both registered", func() bool {
		return seesAll(a.Client, []string{"bravo"}, true) && seesAll(b.Client, []string{"alpha"}, true)
	})
	if err := a.SetCredentials(m.creds(t, "bravo", 1)); err == nil {
		t.Fatal("SetCredentials accepted a certificate for another node")
	}
	renewed := m.creds(t, "alpha", 1)
	if err := a.SetCredentials(renewed); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "bravo sees alpha's renewed certificate, online", func() bool {
		p, ok := peerNames(b.Client)["alpha"]
		return ok && p.Presence.Online && p.Cert != nil && p.Cert.Fingerprint == renewed.Cert.Fingerprint
	})
	if !coordHas(co.Coordinator, "alpha", func(r Record) bool { return r.Cert.Fingerprint == renewed.Cert.Fingerprint }) {
		t.Error("the coordinator holds alpha's old record")
	}
	if b.hasChange(PeerRemoved, "alpha", "") {
		t.Error("bravo saw alpha removed during the renewal")
	}
	if st := a.Status(); st.Address != co.addr() {
		t.Errorf("alpha failed over to %q instead of re-registering with %q", st.Address, co.addr())
	}
}
