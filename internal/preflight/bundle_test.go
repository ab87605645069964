package preflight

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshd/meshd/pki"
)

// TestCABundle: with two CA certificates in pki.ca (a CA rotation), the
// node's Verifier accepts peers of either CA, not only of the first.
func TestCABundle(t *testing.T) {
	dir := fixture(t, 24*time.Hour)
	caFile := filepath.Join(dir, "ca", pki.CACertFile)
	oldPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := pki.NewCA("pre-mesh", 48*time.Hour, pki.KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	newPEM := (&pki.NodeCert{Cert: newCA.Cert}).PEM()
	if err := os.WriteFile(caFile, append(oldPEM, newPEM...), 0o644); err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey(pki.KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := newCA.Sign(key.Public(), pki.Identity{Name: "n2", Addr: netip.MustParsePrefix("100.64.0.2/10")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Run(load(t, dir, inboundRule), Options{LookupGroup: haveGroup, HostAddrs: hostAddrs})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := r.Verifier.Verify([][]byte{peer.Cert.Raw}, pki.Expect{Name: "n2"}); err != nil {
		t.Fatalf("a peer of the second CA in pki.ca: %v", err)
	}
}
