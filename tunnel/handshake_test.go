package tunnel

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// TestRefusedHandshakes: alpha refuses bravo's certificate for each pki
// reason; the link keeps the reason as its last error (errors.Is the pki
// sentinel) and logs it once however often it retries. bravo trusts alpha's
// CA in every case, so alpha is the side that gets to verify.
func TestRefusedHandshakes(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 120*time.Second)

	ca := newTestCA(t, "mesh")
	other := newTestCA(t, "elsewhere")
	alpha := ca.node(t, "alpha", 1, 0, nil)

	tests := []struct {
		name   string
		reason error
		// bravo returns the node that answers as "bravo" and the Peer
		// alpha expects.
		bravo func(t *testing.T) (*testNode, Peer)
		// verifier adjusts alpha's verifier.
		verifier func(t *testing.T, v *pki.Verifier, b *testNode)
	}{
		{
			name: "another CA", reason: pki.ErrUnknownCA,
			bravo: func(t *testing.T) (*testNode, Peer) {
				b := other.node(t, "bravo", 2, 0, ca)
				return b, b.peer
			},
		},
		{
			name: "expired", reason: pki.ErrExpired,
			bravo: func(t *testing.T) (*testNode, Peer) {
				b := ca.node(t, "bravo", 2, time.Millisecond, nil)
				testutil.WaitFor(t, time.Second, "certificate expired", func() bool {
					return time.Now().After(b.creds.Cert.Cert.NotAfter)
				})
				return b, b.peer
			},
		},
		{
			name: "revoked", reason: pki.ErrRevoked,
			bravo: func(t *testing.T) (*testNode, Peer) {
				b := ca.node(t, "bravo", 2, 0, nil)
				return b, b.peer
			},
			verifier: func(t *testing.T, v *pki.Verifier, b *testNode) {
				crl, err := ca.ca.Revoke(nil, []*x509.Certificate{b.creds.Cert.Cert}, "key compromise", time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				if ok, err := v.UpdateCRL(crl); !ok || err != nil {
					t.Fatalf("UpdateCRL = %v, %v", ok, err)
				}
			},
		},
		{
			name: "wrong name", reason: pki.ErrNameMismatch,
			bravo: func(t *testing.T) (*testNode, Peer) {
				b := ca.node(t, "mallory", 2, 0, nil)
				p := b.peer
				p.Name = "bravo"
				b.name = "bravo" // it answers signals addressed to bravo
				return b, p
			},
		},
		{
			name: "wrong address", reason: pki.ErrAddressMismatch,
			bravo: func(t *testing.T) (*testNode, Peer) {
				b := ca.node(t, "bravo", 9, 0, nil)
				p := b.peer
				p.Addr = netip.MustParseAddr("100.64.0.2")
				return b, p
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bravo, expect := tc.bravo(t)
			sink := &logSink{}
			v := pki.NewVerifier(alpha.creds.CA, alpha.creds.Cert)
			if tc.verifier != nil {
				tc.verifier(t, v, bravo)
			}
			sig := newMemSignals()
			ma := startManager(t, sig, alpha, func(o *Options) {
				o.Logger = slog.New(sink)
				o.Verifier = v
			})
			mb := startManager(t, sig, bravo, nil)
			ab := mustLink(t, ma, expect)
			mustLink(t, mb, alpha.peer)

			testutil.WaitFor(t, 30*time.Second, "three refused handshakes", func() bool {
				st := ab.Status()
				return st.Failures >= 3 && errors.Is(st.LastError, tc.reason)
			})
			st := ab.Status()
			if !errors.Is(st.LastError, ErrHandshake) {
				t.Errorf("last error %v does not match ErrHandshake", st.LastError)
			}
			if st.State == StateConnected || st.LastHandshake != (time.Time{}) {
				t.Errorf("link connected despite the refusal: %+v", st)
			}
			if n := sink.count(slog.LevelWarn, "refused the peer's certificate", "reason", tc.reason.Error()); n != 1 {
				sink.dump(t)
				t.Errorf("the refusal was logged %d times over %d failures, want once", n, st.Failures)
			}
			t.Logf("last error: %v", st.LastError)
			_ = ma.Close()
			_ = mb.Close()
		})
	}
}

// TestRevocationEndsConnectedLink: a CRL that revokes a connected peer ends
// its session on Recheck, and the link does not come back.
func TestRevocationEndsConnectedLink(t *testing.T) {
	testutil.LeakCheck(t)
	hardTimeout(t, 60*time.Second)
	ca := newTestCA(t, "mesh")
	a, b := ca.node(t, "alpha", 1, 0, nil), ca.node(t, "bravo", 2, 0, nil)
	sig := newMemSignals()
	v := pki.NewVerifier(a.creds.CA, a.creds.Cert)
	ma := startManager(t, sig, a, func(o *Options) { o.Verifier = v })
	mb := startManager(t, sig, b, nil)
	ab, ba := mustLink(t, ma, b.peer), mustLink(t, mb, a.peer)
	testutil.WaitFor(t, 20*time.Second, "connected", func() bool {
		return ab.State() == StateConnected && ba.State() == StateConnected
	})
	ma.Recheck() // still valid: nothing happens
	crl, err := ca.ca.Revoke(nil, []*x509.Certificate{b.creds.Cert.Cert}, "retired", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.UpdateCRL(crl); err != nil {
		t.Fatal(err)
	}
	if st := ab.Status(); st.State != StateConnected || st.Failures != 0 {
		t.Fatalf("link changed before Recheck: %+v", st)
	}
	ma.Recheck()
	testutil.WaitFor(t, 10*time.Second, "session ended with the pki reason", func() bool {
		st := ab.Status()
		return st.State != StateConnected && errors.Is(st.LastError, pki.ErrRevoked)
	})
	// Later attempts are refused for the same reason.
	testutil.WaitFor(t, 10*time.Second, "a refused handshake after the revocation", func() bool {
		st := ab.Status()
		return st.Failures >= 3 && errors.Is(st.LastError, pki.ErrRevoked) && st.State != StateConnected
	})
}
