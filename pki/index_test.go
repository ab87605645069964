package pki

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestRecordIssuedConcurrent: signers running at once on one CA directory
// lose no entry (the index is read-modify-written under a lock).
func TestRecordIssuedConcurrent(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	dir := t.TempDir()
	const n = 8
	nodes := make([]testNode, n)
	for i := range nodes {
		nodes[i] = mustNode(t, ca, KeyECDSAP256, testIdentity("node-a", byte(i+1)), time.Time{}, time.Time{})
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- RecordIssued(dir, nd.cert)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	idx, err := LoadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Certificates) != n || len(idx.Current("node-a", time.Now())) != n {
		t.Fatalf("%d entries, want %d", len(idx.Certificates), n)
	}
	for _, nd := range nodes {
		if e, ok := idx.BySerial(nd.cert.Cert.SerialNumber); !ok || e.Fingerprint != nd.cert.Fingerprint {
			t.Fatalf("serial %x missing", nd.cert.Cert.SerialNumber)
		}
	}
}

// TestLoadIndexRejects: a missing index is ErrNoIndex; a damaged one is an
// error, never silently empty.
func TestLoadIndexRejects(t *testing.T) {
	ca := mustCA(t, "test-mesh", KeyECDSAP256)
	a := mustNode(t, ca, KeyECDSAP256, testIdentity("node-a", 1), time.Time{}, time.Time{})
	b := mustNode(t, ca, KeyECDSAP256, testIdentity("node-b", 2), time.Time{}, time.Time{})
	if _, err := LoadIndex(t.TempDir()); !errors.Is(err, ErrNoIndex) {
		t.Fatalf("missing index: %v", err)
	}
	good := Index{Version: 1}
	good.Add(a.cert, time.Now())
	for name, edit := range map[string]func(*Index){
		"version 2":        func(x *Index) { x.Version = 2 },
		"renamed entry":    func(x *Index) { x.Certificates[0].Name = "node-z" },
		"other serial":     func(x *Index) { x.Certificates[0].Serial = "1" },
		"swapped cert":     func(x *Index) { x.Certificates[0].Cert = b.cert.Cert.Raw },
		"not a node cert":  func(x *Index) { x.Certificates[0].Cert = ca.Cert.Raw },
		"garbage cert DER": func(x *Index) { x.Certificates[0].Cert = []byte{0x30, 0} },
	} {
		x := good
		x.Certificates = append([]IssuedCert(nil), good.Certificates...)
		edit(&x)
		data, _ := json.Marshal(x)
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, IndexFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadIndex(dir); err == nil || errors.Is(err, ErrNoIndex) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func FuzzParseIndex(f *testing.F) {
	ca := mustCA(f, "fuzz-mesh", KeyECDSAP256)
	a := mustNode(f, ca, KeyECDSAP256, testIdentity("node-a", 1), time.Time{}, time.Time{})
	idx := Index{Version: 1}
	idx.Add(a.cert, time.Now())
	data, _ := json.Marshal(idx)
	f.Add(data)
	f.Add([]byte(`{"version":1,"certificates":[]}`))
	f.Add([]byte(`{"version":1,"certificates":[{"serial":"1","cert":"MAA="}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := parseIndex(data, "index.json")
		if err != nil {
			return
		}
		for _, e := range idx.Certificates {
			nc, err := e.NodeCert()
			if err != nil || nc.Identity.Name != e.Name {
				t.Fatalf("accepted entry %q does not parse: %v", e.Name, err)
			}
		}
	})
}

// FuzzParseSerial: what ParseSerial accepts is a positive serial of at most
// 160 bits that reads back from the form cert show prints.
func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"1f2e3d", "0x1f", "1f:2e", " 0A ", "", "0", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSerial(s)
		if err != nil {
			return
		}
		if n.Sign() <= 0 || n.BitLen() > 160 {
			t.Fatalf("%q -> %v", s, n)
		}
		back, err := ParseSerial(n.Text(16))
		if err != nil || back.Cmp(n) != 0 {
			t.Fatalf("%q -> %x does not read back: %v", s, n, err)
		}
	})
}
