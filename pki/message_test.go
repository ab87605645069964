package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"
	"time"
)

func TestSignMessage(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) {
			ca := mustCA(t, "test-mesh", kt)
			a := mustNode(t, ca, kt, testIdentity("node-a", 1), time.Time{}, time.Time{})
			b := mustNode(t, ca, kt, testIdentity("node-b", 2), time.Time{}, time.Time{})
			msg := []byte(`{"v":1,"name":"node-a","endpoints":["198.51.100.7:41641"]}`)
			sig, err := SignMessage(a.key, msg)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyMessage(a.cert.Cert, msg, sig); err != nil {
				t.Fatalf("good signature: %v", err)
			}
			for name, check := range map[string]error{
				"other message": VerifyMessage(a.cert.Cert, append(msg, ' '), sig),
				"other signer":  VerifyMessage(b.cert.Cert, msg, sig),
				"truncated sig": VerifyMessage(a.cert.Cert, msg, sig[:len(sig)-1]),
				"empty sig":     VerifyMessage(a.cert.Cert, msg, nil),
				"no cert":       VerifyMessage(nil, msg, sig),
			} {
				if !errors.Is(check, ErrBadSignature) {
					t.Errorf("%s: %v", name, check)
				}
			}
			// A plain signature of the message (as some other protocol using
			// the same key would make) is not a message signature.
			var plain []byte
			if kt == KeyEd25519 {
				plain, _ = a.key.Sign(rand.Reader, msg, crypto.Hash(0))
			} else {
				sum := sha256.Sum256(msg)
				plain, _ = a.key.Sign(rand.Reader, sum[:], crypto.SHA256)
			}
			if err := VerifyMessage(a.cert.Cert, msg, plain); !errors.Is(err, ErrBadSignature) {
				t.Errorf("signature without context accepted: %v", err)
			}
		})
	}
	if _, err := SignMessage(nil, nil); !errors.Is(err, ErrKeyType) {
		t.Errorf("nil key: %v", err)
	}
}
