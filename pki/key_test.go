package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestKeyTypeNames(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		got, err := ParseKeyType(kt.String())
		if err != nil || got != kt {
			t.Errorf("ParseKeyType(%q) = %v, %v", kt.String(), got, err)
		}
	}
	if kt, err := ParseKeyType(""); err != nil || kt != KeyECDSAP256 {
		t.Errorf("default key type = %v, %v", kt, err)
	}
	if _, err := ParseKeyType("rsa"); !errors.Is(err, ErrKeyType) {
		t.Errorf("ParseKeyType(rsa) = %v", err)
	}
	if _, err := GenerateKey(KeyType(7)); !errors.Is(err, ErrKeyType) {
		t.Errorf("GenerateKey(7) = %v", err)
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) {
			key, err := GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			data, err := MarshalKeyPEM(key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----")) {
				t.Fatalf("not a PKCS#8 PEM block:\n%s", data)
			}
			back, err := ParseKeyPEM(data)
			if err != nil {
				t.Fatal(err)
			}
			if !publicKeysEqual(key.Public(), back.Public()) {
				t.Fatal("round trip changed the key")
			}
			if got, _ := KeyTypeOf(back.Public()); got != kt {
				t.Fatalf("key type %v", got)
			}
		})
	}
}

func TestParseKeyPEMVariants(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	withComment := append(pem.EncodeToMemory(&pem.Block{Type: "COMMENT", Bytes: []byte("x")}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)
	if k, err := ParseKeyPEM(withComment); err != nil || !publicKeysEqual(k.Public(), ec.Public()) {
		t.Fatalf("SEC 1 key after another block: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der384, _ := x509.MarshalPKCS8PrivateKey(p384)
	if _, err := ParseKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der384})); !errors.Is(err, ErrKeyType) {
		t.Fatalf("P-384 key: %v", err)
	}
	if _, err := MarshalKeyPEM(p384); !errors.Is(err, ErrKeyType) {
		t.Fatalf("marshal P-384 key: %v", err)
	}
	secret := bytes.Repeat([]byte{0xAB}, 40)
	_, err := ParseKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: secret}))
	if err == nil || strings.Contains(strings.ToLower(err.Error()), "abab") {
		t.Fatalf("garbage key: %v", err)
	}
	if _, err := ParseKeyPEM([]byte("nothing here")); err == nil {
		t.Fatal("no PEM accepted")
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	key, _ := GenerateKey(KeyECDSAP256)
	path := filepath.Join(dir, "node.key")
	if err := WriteKeyFile(path, key, false); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	before, _ := os.ReadFile(path)

	other, _ := GenerateKey(KeyECDSAP256)
	err := WriteKeyFile(path, other, false)
	var pe *fs.PathError
	if !errors.Is(err, ErrExists) || !errors.As(err, &pe) || pe.Path != path {
		t.Fatalf("overwrite without force: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("file changed although the write was refused")
	}

	if err := WriteKeyFile(path, other, true); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	data, _ := os.ReadFile(path)
	if k, err := ParseKeyPEM(data); err != nil || !publicKeysEqual(k.Public(), other.Public()) {
		t.Fatalf("forced write did not replace the key: %v", err)
	}

	// A forced write replaces a wider file with the requested mode.
	pub := filepath.Join(dir, "wide.key")
	if err := os.WriteFile(pub, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyFile(pub, key, true); err != nil {
		t.Fatal(err)
	}
	assertMode(t, pub, 0o600)

	crt := filepath.Join(dir, "x.crt")
	if err := WriteFile(crt, []byte("cert"), 0o644, false); err != nil {
		t.Fatal(err)
	}
	assertMode(t, crt, 0o644)

	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("temporary file left behind: %s", e.Name())
		}
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), nil, 0o600, false); err == nil || errors.Is(err, ErrExists) {
		t.Fatalf("write into a missing directory: %v", err)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Fatalf("%s has mode %o, want %o", path, got, want)
	}
}

// TestNoKeyMaterialInOutput formats the key-holding types every way a log
// line or a debug print might, and looks for the secret in every encoding.
func TestNoKeyMaterialInOutput(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSAP256, KeyEd25519} {
		t.Run(kt.String(), func(t *testing.T) {
			ca := mustCA(t, "test-mesh", kt)
			n := mustNode(t, ca, kt, testIdentity("node-a", 1), time.Time{}, time.Time{})
			creds := n.creds(ca)

			var secrets []string
			for _, k := range []any{ca.Key, n.key} {
				switch k := k.(type) {
				case *ecdsa.PrivateKey:
					b, _ := k.Bytes()
					secrets = append(secrets, k.D.String(), k.D.Text(16), hex.EncodeToString(b), fmt.Sprint(b),
						base64.StdEncoding.EncodeToString(b))
				case ed25519.PrivateKey:
					seed := k.Seed()
					secrets = append(secrets, hex.EncodeToString(seed), fmt.Sprint(seed), fmt.Sprint([]byte(k)),
						base64.StdEncoding.EncodeToString(k), base64.StdEncoding.EncodeToString(seed))
				}
			}
			var outs []string
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%d"} {
				outs = append(outs, fmt.Sprintf(verb, ca), fmt.Sprintf(verb, *ca),
					fmt.Sprintf(verb, creds), fmt.Sprintf(verb, *creds))
			}
			var logBuf bytes.Buffer
			l := slog.New(slog.NewJSONHandler(&logBuf, nil))
			l.Info("x", "ca", ca, "caValue", *ca, "creds", creds, "credsValue", *creds)
			l2 := slog.New(slog.NewTextHandler(&logBuf, nil))
			l2.Info("x", "ca", ca, "creds", creds)
			outs = append(outs, logBuf.String())
			js, err := json.Marshal(map[string]any{"ca": ca, "caValue": *ca, "creds": creds, "credsValue": *creds})
			if err != nil {
				t.Fatal(err)
			}
			outs = append(outs, string(js))
			for _, out := range outs {
				for _, s := range secrets {
					if strings.Contains(out, s) {
						t.Fatalf("key material in output %q", out)
					}
				}
			}
			if !strings.Contains(fmt.Sprint(ca), "test-mesh") || !strings.Contains(fmt.Sprint(creds), "node-a") {
				t.Fatalf("descriptions lack the names: %v %v", ca, creds)
			}
		})
	}
}

func TestKeyTypeOfOddKeys(t *testing.T) {
	for name, pub := range map[string]any{
		"nil":           nil,
		"nil ECDSA":     (*ecdsa.PublicKey)(nil),
		"curveless":     &ecdsa.PublicKey{},
		"short Ed25519": ed25519.PublicKey{1, 2, 3},
		"string":        "key",
	} {
		if _, err := KeyTypeOf(pub); !errors.Is(err, ErrKeyType) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
