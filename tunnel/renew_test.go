package tunnel

import (
	"crypto/x509"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// TestRenewalKeepsTrafficFlowing: a node renews its certificate (new key,
// same identity) while packets flow both ways. Nothing is lost, no link
// fails, the peer's next handshake sees the new certificate, and revoking
// the old certificate afterwards leaves the link up. Run with the renewing
// side as DTLS client and as server.
func TestRenewalKeepsTrafficFlowing(t *testing.T) {
	for _, alphaClient := range []bool{true, false} {
		t.Run(fmt.Sprintf("renewing side is client=%v", alphaClient), func(t *testing.T) {
			testRenewal(t, alphaClient)
		})
	}
}

func testRenewal(t *testing.T, alphaClient bool) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := orderedNodes(t, ca, alphaClient)
	vb := pki.NewVerifier(b.creds.CA, b.creds.Cert)
	p := startLinkedPair(t, a, b, nil, func(o *Options) { o.Verifier = vb })
	ma, mb, ab, ba, atA, atB := p.ma, p.mb, p.ab, p.ba, p.atA, p.atB
	gen := ab.Status().Generation

	renewed := ca.node(t, "alpha", 1, 0, nil)
	if renewed.peer.Fingerprint == a.peer.Fingerprint {
		t.Fatal("the renewed certificate has the old fingerprint")
	}
	tr := newTrafficBothWays(t, "rn", ab, ba, received(atA), received(atB))
	for range 20 {
		tr.step(2, "the renewal")
	}
	if err := ma.SetCredentials(renewed.creds); err != nil {
		t.Fatal(err)
	}
	// The registry then carries alpha's new record: only the fingerprint
	// differs, which must not restart bravo's session.
	if _, err := mb.Link(renewed.peer); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for ba.Status().PeerFingerprint != renewed.peer.Fingerprint || time.Since(start) < 500*time.Millisecond {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("bravo still sees alpha's old certificate after 20 s: %+v", ba.Status())
		}
		tr.step(2, "the renewal")
	}
	if lost := tr.undelivered(); len(lost) > 0 {
		t.Fatalf("lost during the renewal: %v", lost)
	}
	for _, l := range []*Link{ab, ba} {
		st := l.Status()
		t.Logf("%s: %d rekeys, generation %d, failures %d", st.Peer, st.Rekeys, st.Generation, st.Failures)
		if st.Failures != 0 || st.State != StateConnected || st.Generation != gen {
			t.Errorf("%s: the renewal restarted or failed the session: %+v", st.Peer, st)
		}
	}

	// Revoking the old certificate does not touch a link that now runs on
	// the new one.
	crl, err := ca.ca.Revoke(nil, []*x509.Certificate{a.creds.Cert.Cert}, "superseded", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vb.UpdateCRL(crl); err != nil {
		t.Fatal(err)
	}
	mb.Recheck()
	exchange(t, ab, atB, "after-ab", 5*time.Second)
	exchange(t, ba, atA, "after-ba", 5*time.Second)
	if st := ba.Status(); st.State != StateConnected || st.Failures != 0 {
		t.Fatalf("revoking the replaced certificate ended the link: %+v", st)
	}
}

// TestSetCredentialsRefusesAnotherIdentity: a certificate for another
// name or address is not a renewal.
func TestSetCredentialsRefusesAnotherIdentity(t *testing.T) {
	ca := newTestCA(t, "mesh")
	a := ca.node(t, "alpha", 1, 0, nil)
	m, err := NewManager(Options{Credentials: a.creds, Verifier: pki.NewVerifier(a.creds.CA, a.creds.Cert), Signaler: newMemSignals().from("alpha")})
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []*testNode{ca.node(t, "bravo", 1, 0, nil), ca.node(t, "alpha", 9, 0, nil)} {
		if err := m.SetCredentials(other.creds); !errors.Is(err, ErrIdentityChanged) {
			t.Errorf("SetCredentials(%s %s) = %v, want ErrIdentityChanged", other.name, other.peer.Addr, err)
		}
	}
	if err := m.SetCredentials(ca.node(t, "alpha", 1, 0, nil).creds); err != nil {
		t.Errorf("a renewal was refused: %v", err)
	}
}
