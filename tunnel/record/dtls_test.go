package record

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

// tap records every datagram a pion endpoint sends.
type tap struct {
	net.PacketConn
	mu   sync.Mutex
	sent [][]byte
}

func (c *tap) WriteTo(p []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	c.sent = append(c.sent, append([]byte(nil), p...))
	c.mu.Unlock()
	return c.PacketConn.WriteTo(p, addr)
}

func (c *tap) datagrams() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.sent...)
}

// testNode is a mesh node's credentials and verifier.
type testNode struct {
	name  string
	creds *pki.Credentials
	v     *pki.Verifier
}

func newTestMesh(t *testing.T) (a, b testNode) {
	t.Helper()
	ca, err := pki.NewCA("record-test", 24*time.Hour, pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	node := func(name string, n byte) testNode {
		key, err := pki.GenerateKey(pki.KeyECDSAP256)
		if err != nil {
			t.Fatal(err)
		}
		id := pki.Identity{Name: name, Addr: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, n}), 10)}
		cert, err := ca.Sign(key.Public(), id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return testNode{name: name, creds: &pki.Credentials{CA: ca.Cert, Cert: cert, Key: key}, v: pki.NewVerifier(ca.Cert, cert)}
	}
	return node("node-a", 1), node("node-b", 2)
}

// handshake runs a mutually authenticated DTLS 1.2 handshake between a
// (client, offering clientSuites) and b (server) over loopback UDP and
// returns both connections and the client's tap; the caller closes them.
func handshake(t *testing.T, a, b testNode, clientSuites, serverSuites []dtls.CipherSuiteID) (cc, sc *dtls.Conn, ct, st *tap) {
	t.Helper()
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cu, su := listen(), listen()
	ct, st = &tap{PacketConn: cu}, &tap{PacketConn: su}
	var gotA, gotB atomic.Pointer[pki.NodeCert]
	cc, err := dtls.ClientWithOptions(ct, su.LocalAddr(),
		dtls.WithCertificates(a.creds.TLSCertificate()),
		dtls.WithCipherSuites(clientSuites...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithInsecureSkipVerify(true), // pki verifies instead
		dtls.WithVerifyPeerCertificate(a.v.VerifyPeerCertificate(pki.Expect{Name: b.name}, &gotA)),
	)
	if err != nil {
		t.Fatal(err)
	}
	sc, err = dtls.ServerWithOptions(st, cu.LocalAddr(),
		dtls.WithCertificates(b.creds.TLSCertificate()),
		dtls.WithCipherSuites(serverSuites...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithClientAuth(dtls.RequireAnyClientCert),
		dtls.WithVerifyPeerCertificate(b.v.VerifyPeerCertificate(pki.Expect{Name: a.name}, &gotB)),
	)
	if err != nil {
		_ = cc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); _ = sc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serr := make(chan error, 1) // buffered: the goroutine never blocks on send
	go func() { serr <- sc.HandshakeContext(ctx) }()
	cerr := cc.HandshakeContext(ctx)
	if cerr != nil {
		_ = cc.Close()
	}
	if err := <-serr; cerr != nil || err != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, err)
	}
	if gotA.Load() == nil || gotB.Load() == nil {
		t.Fatal("pki did not verify both peers")
	}
	return cc, sc, ct, st
}

func connState(t *testing.T, c *dtls.Conn) *dtls.State {
	t.Helper()
	st, ok := c.ConnectionState()
	if !ok {
		t.Fatal("no connection state")
	}
	return &st
}

// TestDTLSExporterKeys runs real pion/dtls handshakes (ECDSA P-256
// certificates from pki) and checks that both sides export the same key
// block, derive mirrored keys, agree on the cipher the suites picked, and
// carry records both ways; a second handshake rekeys the link; pion's own
// datagrams never look like data records.
func TestDTLSExporterKeys(t *testing.T) {
	testutil.LeakCheck(t)
	a, b := newTestMesh(t)
	auto, err := PreferredSuites(CipherAuto)
	if err != nil {
		t.Fatal(err)
	}
	both := []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
	mustSuites := func(c Cipher) []dtls.CipherSuiteID {
		s, err := PreferredSuites(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name           string
		client, server []dtls.CipherSuiteID
		want           Cipher
	}{
		{"client prefers chacha", mustSuites(CipherChaCha20Poly1305), both, CipherChaCha20Poly1305},
		{"client prefers aes", mustSuites(CipherAES128GCM), both, CipherAES128GCM},
		{"server insists on chacha", both, mustSuites(CipherChaCha20Poly1305), CipherChaCha20Poly1305},
		{"both auto", auto, auto, CipherAuto.Resolve()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, sc, ctap, stap := handshake(t, a, b, tt.client, tt.server)
			cst, sst := connState(t, cc), connState(t, sc)

			// The exported key blocks agree byte for byte.
			label, n := LabelAES128GCM, 56
			if tt.want == CipherChaCha20Poly1305 {
				label, n = LabelChaCha20Poly1305, 88
			}
			cm, err1 := cst.ExportKeyingMaterial(label, nil, n)
			sm, err2 := sst.ExportKeyingMaterial(label, nil, n)
			if err1 != nil || err2 != nil || !bytes.Equal(cm, sm) {
				t.Fatalf("exported key blocks differ (%v, %v)", err1, err2)
			}

			ck, err := DeriveFromState(cst, true, FirstEpoch)
			if err != nil {
				t.Fatal(err)
			}
			sk, err := DeriveFromState(sst, false, FirstEpoch)
			if err != nil {
				t.Fatal(err)
			}
			if ck.Cipher() != tt.want || sk.Cipher() != tt.want {
				t.Fatalf("ciphers: client %v, server %v, want %v (suite %v)", ck.Cipher(), sk.Cipher(), tt.want, cst.CipherSuiteID)
			}
			if ck.send.iv != sk.recv.iv || ck.recv.iv != sk.send.iv || ck.send.iv == ck.recv.iv {
				t.Fatal("IVs are not mirrored between the sides, or both directions share one")
			}
			client, server := newPeer(t, ck, Options{}), newPeer(t, sk, Options{})
			ref := refSchedule(t, cst.ExportKeyingMaterial, tt.want)
			for _, d := range []struct {
				name     string
				from, to *peer
				key, iv  []byte
			}{
				{"client to server", client, server, ref.clientKey, ref.clientIV},
				{"server to client", server, client, ref.serverKey, ref.serverIV},
			} {
				pt := payload(1400, 3)
				rec := seal(t, d.from.w, pt)
				if _, err := refOpen(refAEAD(t, tt.want, d.key), d.iv, rec); err != nil {
					t.Fatalf("%s: record not sealed with the exported %s key: %v", d.name, d.name, err)
				}
				if got, err := open(d.to.r, rec); err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("%s: %v", d.name, err)
				}
			}
			old := seal(t, client.w, payload(10, 1))

			// pion's own application data, for the classifier below.
			if _, err := cc.Write([]byte("pion record")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			_ = sc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := sc.Read(buf); err != nil {
				t.Fatal(err)
			}

			// Rekey: a fresh handshake, next epoch.
			cc2, sc2, _, _ := handshake(t, a, b, tt.client, tt.server)
			e := client.s.NextEpoch()
			ck2, err := DeriveFromState(connState(t, cc2), true, e)
			if err != nil {
				t.Fatal(err)
			}
			sk2, err := DeriveFromState(connState(t, sc2), false, e)
			if err != nil {
				t.Fatal(err)
			}
			if ck2.send.iv == ck.send.iv {
				t.Fatal("a new handshake exported the same IV")
			}
			if err := client.s.Rekey(ck2); err != nil {
				t.Fatal(err)
			}
			if err := server.s.Rekey(sk2); err != nil {
				t.Fatal(err)
			}
			if _, err := open(server.r, seal(t, client.w, payload(100, 2))); err != nil {
				t.Fatalf("after rekey: %v", err)
			}
			if _, err := open(client.r, seal(t, server.w, payload(100, 2))); err != nil {
				t.Fatalf("after rekey, other way: %v", err)
			}
			if _, err := open(server.r, old); err != nil {
				t.Fatalf("previous epoch during overlap: %v", err)
			}

			var pionDatagrams int
			for _, tp := range []*tap{ctap, stap} {
				for _, d := range tp.datagrams() {
					pionDatagrams++
					if IsDataRecord(d) {
						t.Fatalf("pion datagram (type %d, epoch %d) classified as a data record", d[0], uint16(d[3])<<8|uint16(d[4]))
					}
					if d[0] < 20 || d[0] > 63 {
						t.Fatalf("pion datagram with first byte %d", d[0])
					}
				}
			}
			if pionDatagrams < 4 {
				t.Fatalf("only %d pion datagrams captured", pionDatagrams)
			}
		})
	}
}
