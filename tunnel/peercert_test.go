package tunnel

import (
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// TestPeerCertIsTheHandshakes: a connected link reports the certificate the
// peer presented and pki verified, on both sides; nil before a handshake.
func TestPeerCertIsTheHandshakes(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	ma := startManager(t, sig, a, nil)
	ab := mustLink(t, ma, b.peer)
	if nc := ab.PeerCert(); nc != nil {
		t.Fatalf("PeerCert before any handshake = %v", nc.Fingerprint)
	}
	mb := startManager(t, sig, b, nil)
	ba := mustLink(t, mb, a.peer)
	testutil.WaitFor(t, 20*time.Second, "both links connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	if nc := ab.PeerCert(); nc == nil || nc.Fingerprint != b.creds.Cert.Fingerprint || nc.Identity.Name != "bravo" {
		t.Fatalf("alpha's link authenticated %+v, want bravo's certificate", nc)
	}
	if nc := ba.PeerCert(); nc == nil || nc.Fingerprint != a.creds.Cert.Fingerprint {
		t.Fatalf("bravo's link authenticated %+v, want alpha's certificate", nc)
	}
}
