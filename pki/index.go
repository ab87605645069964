package pki

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// IndexFile is the CA directory's record of every certificate it issued.
const IndexFile = "index.json"

// indexVersion is the only index format this code reads and writes.
const indexVersion = 1

// Bounds on an index read from disk.
const (
	maxIndexBytes   = 256 << 20
	maxIndexEntries = 1 << 20
)

// IssuedCert is one certificate in the CA's index. Serial, Name, NotAfter and
// Fingerprint repeat what Cert holds so that people (and jq) can read the
// file; Cert is authoritative.
type IssuedCert struct {
	Serial      string    `json:"serial"` // lowercase hex, as cert show prints it
	Name        string    `json:"name"`
	Role        string    `json:"role"` // "node" or "coordinator"
	NotAfter    time.Time `json:"not_after"`
	Fingerprint string    `json:"fingerprint"` // hex SHA-256 of the DER certificate
	Issued      time.Time `json:"issued"`      // when cert sign recorded it
	Cert        []byte    `json:"cert"`        // the DER certificate (base64 in JSON)
}

// Index is the content of IndexFile: every certificate the CA issued since
// the index was created, oldest first. Version is 1.
type Index struct {
	Version      int          `json:"version"`
	Certificates []IssuedCert `json:"certificates"`
}

// NodeCert parses the entry's certificate.
func (e IssuedCert) NodeCert() (*NodeCert, error) { return ParseNodeCert(e.Cert) }

// LoadIndex reads dir/index.json. A CA directory without one (made before
// the index existed, or that never signed) gives an error matching
// ErrNoIndex; a damaged file is an error too, never an empty index.
func LoadIndex(dir string) (*Index, error) {
	path := filepath.Join(dir, IndexFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNoIndex, path)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: read index: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIndexBytes+1))
	if err != nil {
		return nil, fmt.Errorf("pki: read index: %w", err)
	}
	if len(data) > maxIndexBytes {
		return nil, fmt.Errorf("pki: index %s: larger than %d bytes", path, maxIndexBytes)
	}
	return parseIndex(data, path)
}

func parseIndex(data []byte, path string) (*Index, error) {
	var idx Index
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&idx); err != nil {
		return nil, fmt.Errorf("pki: index %s: %w", path, err)
	}
	if idx.Version != indexVersion {
		return nil, fmt.Errorf("pki: index %s: unsupported version %d", path, idx.Version)
	}
	if len(idx.Certificates) > maxIndexEntries {
		return nil, fmt.Errorf("pki: index %s: more than %d certificates", path, maxIndexEntries)
	}
	for i, e := range idx.Certificates {
		nc, err := e.NodeCert()
		if err != nil {
			return nil, fmt.Errorf("pki: index %s: entry %d: %w", path, i+1, err)
		}
		if e.Serial != nc.Cert.SerialNumber.Text(16) || e.Name != nc.Identity.Name || e.Fingerprint != nc.Fingerprint {
			return nil, fmt.Errorf("pki: index %s: entry %d (%s) does not match its certificate", path, i+1, e.Name)
		}
	}
	return &idx, nil
}

// Add appends nc.
func (idx *Index) Add(nc *NodeCert, now time.Time) {
	idx.Certificates = append(idx.Certificates, IssuedCert{
		Serial:      nc.Cert.SerialNumber.Text(16),
		Name:        nc.Identity.Name,
		Role:        nc.Identity.Role(),
		NotAfter:    nc.Cert.NotAfter.UTC(),
		Fingerprint: nc.Fingerprint,
		Issued:      now.UTC(),
		Cert:        nc.Cert.Raw,
	})
}

// BySerial returns the entry with serial, if any.
func (idx *Index) BySerial(serial *big.Int) (IssuedCert, bool) {
	want := serial.Text(16)
	for _, e := range idx.Certificates {
		if e.Serial == want {
			return e, true
		}
	}
	return IssuedCert{}, false
}

// Current returns the entries for name that have not expired at now, oldest
// first.
func (idx *Index) Current(name string, now time.Time) []IssuedCert {
	var out []IssuedCert
	for _, e := range idx.Certificates {
		if e.Name == name && now.Before(e.NotAfter) {
			out = append(out, e)
		}
	}
	return out
}

// Latest returns the most recently issued entry for name, if any.
func (idx *Index) Latest(name string) (IssuedCert, bool) {
	for i := len(idx.Certificates) - 1; i >= 0; i-- {
		if idx.Certificates[i].Name == name {
			return idx.Certificates[i], true
		}
	}
	return IssuedCert{}, false
}

// Save writes dir/index.json (0644: it holds only certificates) through a
// temporary file and an atomic rename.
func (idx *Index) Save(dir string) error {
	idx.Version = indexVersion
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("pki: encode index: %w", err)
	}
	return WriteFile(filepath.Join(dir, IndexFile), append(data, '\n'), 0o644, true)
}

// RecordIssued adds nc to dir's index, creating the index if the directory
// has none. Concurrent signers on one CA directory are serialized by a lock
// file (dir/.index.lock), so no entry is lost.
func RecordIssued(dir string, nc *NodeCert) error {
	unlock, err := lockIndex(dir)
	if err != nil {
		return err
	}
	defer unlock()
	idx, err := LoadIndex(dir)
	if errors.Is(err, ErrNoIndex) {
		idx, err = &Index{Version: indexVersion, Certificates: []IssuedCert{}}, nil
	}
	if err != nil {
		return err
	}
	idx.Add(nc, time.Now())
	return idx.Save(dir)
}

// lockIndex takes an exclusive flock on dir/.index.lock.
func lockIndex(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".index.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pki: lock index: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("pki: lock index: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		_ = f.Close()
	}, nil
}

// ParseSerial reads a certificate serial as cert show and the index print
// it: hexadecimal, optionally with a 0x prefix or colons between bytes.
func ParseSerial(s string) (*big.Int, error) {
	t := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "0x"), ":", "")
	if t == "" || len(t) > 40 {
		return nil, fmt.Errorf("pki: serial %q: want up to 40 hex digits", s)
	}
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("pki: serial %q: want a positive hexadecimal number", s)
	}
	return n, nil
}
