package pki

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// writeNode stores a node's CA certificate, certificate and key as files.
func writeNode(t *testing.T, dir string, ca *CA, n testNode) (caFile, certFile, keyFile string) {
	t.Helper()
	caFile = filepath.Join(dir, "ca.crt")
	certFile = filepath.Join(dir, n.cert.Identity.Name+".crt")
	keyFile = filepath.Join(dir, n.cert.Identity.Name+".key")
	if err := WriteFile(caFile, (&NodeCert{Cert: ca.Cert}).PEM(), 0o644, true); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(certFile, n.cert.PEM(), 0o644, true); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyFile(keyFile, n.key, true); err != nil {
		t.Fatal(err)
	}
	return caFile, certFile, keyFile
}

func TestLoadCredentials(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	other := mustCA(t, "other", KeyECDSAP256)
	dir := t.TempDir()
	a := mustNode(t, ca, KeyEd25519, testIdentity("node-a", 1), time.Time{}, time.Time{})
	caFile, certFile, keyFile := writeNode(t, dir, ca, a)

	creds, err := LoadCredentials(caFile, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if creds.Cert.Fingerprint != a.cert.Fingerprint || !creds.CA.Equal(ca.Cert) {
		t.Fatal("loaded other credentials")
	}
	tc := creds.TLSCertificate()
	if len(tc.Certificate) != 1 || tc.Leaf != creds.Cert.Cert || !publicKeysEqual(tc.PrivateKey.(crypto.Signer).Public(), a.key.Public()) {
		t.Fatalf("TLSCertificate %+v", tc.Leaf.Subject)
	}

	b := mustNode(t, ca, KeyEd25519, testIdentity("node-b", 2), time.Time{}, time.Time{})
	_, _, keyB := writeNode(t, t.TempDir(), ca, b)
	if _, err := LoadCredentials(caFile, certFile, keyB); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("other node's key: %v", err)
	}
	otherCAFile := filepath.Join(dir, "other.crt")
	_ = WriteFile(otherCAFile, (&NodeCert{Cert: other.Cert}).PEM(), 0o644, false)
	if _, err := LoadCredentials(otherCAFile, certFile, keyFile); !errors.Is(err, ErrUnknownCA) {
		t.Fatalf("other CA: %v", err)
	}
	if _, err := LoadCredentials(certFile, certFile, keyFile); err == nil {
		t.Fatal("node certificate accepted as CA")
	}
	if _, err := LoadCredentials(caFile, caFile, keyFile); !errors.Is(err, ErrMalformed) {
		t.Fatalf("CA accepted as node certificate: %v", err)
	}
	if _, err := LoadCredentials(caFile, certFile, filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}
}

// TestTLSMutualAuth shows the same Verifier in a crypto/tls session (the
// coordinator transport): TLS 1.3, both key types, a good peer accepted and a
// wrong one refused with the sentinel reachable through crypto/tls's wrapping.
func TestTLSMutualAuth(t *testing.T) {
	testutil.LeakCheck(t)
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) {
			ca := mustCA(t, "test-mesh", kt)
			a := mustNode(t, ca, kt, testIdentity("node-a", 1), time.Time{}, time.Time{})
			b := mustNode(t, ca, kt, testIdentity("node-b", 2), time.Time{}, time.Time{})

			run := func(clientWant Expect) (clientErr, serverErr error, peerOfClient, peerOfServer *NodeCert) {
				var gotC, gotS atomic.Pointer[NodeCert]
				cc := &tls.Config{
					MinVersion:            tls.VersionTLS13,
					Certificates:          []tls.Certificate{a.creds(ca).TLSCertificate()},
					InsecureSkipVerify:    true, //nolint:gosec // Verifier checks the peer
					VerifyPeerCertificate: NewVerifier(ca.Cert, a.cert).VerifyPeerCertificate(clientWant, &gotC),
				}
				sc := &tls.Config{
					MinVersion:            tls.VersionTLS13,
					Certificates:          []tls.Certificate{b.creds(ca).TLSCertificate()},
					ClientAuth:            tls.RequireAnyClientCert,
					VerifyPeerCertificate: NewVerifier(ca.Cert, b.cert).VerifyPeerCertificate(Expect{}, &gotS),
				}
				// Loopback TCP rather than net.Pipe: its kernel buffers let
				// either side write an alert the other never reads.
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				done := make(chan error, 1)
				go func() {
					c, err := ln.Accept()
					if err != nil {
						done <- err
						return
					}
					srv := tls.Server(c, sc)
					done <- srv.HandshakeContext(ctx)
					_ = srv.Close()
				}()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				cli := tls.Client(c, cc)
				clientErr = cli.HandshakeContext(ctx)
				if clientErr == nil {
					// TLS 1.3 clients finish first; read once so that a
					// server-side rejection reaches the client, and so
					// that the server's handshake has completed.
					_ = cli.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					_, _ = cli.Read(make([]byte, 1))
				}
				serverErr = <-done
				_ = cli.Close()
				return clientErr, serverErr, gotC.Load(), gotS.Load()
			}

			cerr, serr, pc, ps := run(Expect{Name: "node-b", Addr: netip.MustParseAddr("100.64.0.2")})
			if cerr != nil || serr != nil {
				t.Fatalf("good handshake: client %v, server %v", cerr, serr)
			}
			if pc == nil || pc.Identity.Name != "node-b" || ps == nil || ps.Identity.Name != "node-a" {
				t.Fatalf("peers not recorded: %v %v", pc, ps)
			}
			cerr, _, pc, _ = run(Expect{Name: "node-c"})
			if !errors.Is(cerr, ErrNameMismatch) || pc != nil {
				t.Fatalf("wrong name: client error %v", cerr)
			}
		})
	}
}
