package discovery

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/pki"
)

var (
	sharedMeshOnce sync.Once
	sharedMesh     *testMesh
	sharedCreds    []*pki.Credentials
)

// shared returns a mesh and three node credentials minted once per test
// binary (unit tests only; cluster tests make their own).
func shared(t testing.TB) (*testMesh, []*pki.Credentials) {
	sharedMeshOnce.Do(func() {
		sharedMesh = newTestMesh(t)
		for i, n := range []string{"node-a", "node-b", "node-c"} {
			sharedCreds = append(sharedCreds, sharedMesh.creds(t, n, i+1))
		}
	})
	return sharedMesh, sharedCreds
}

var testInfo = LocalInfo{
	Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.10:41641"), netip.MustParseAddrPort("[2001:db8::1]:41641")},
	Routes:    []netip.Prefix{netip.MustParsePrefix("10.1.2.0/24")},
	Software:  "meshd test",
}

func testRecord(t testing.TB) *Record {
	_, cs := shared(t)
	rec, err := newLocalRecord(cs[0], testInfo, 1000, false)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestRecordSignVerify(t *testing.T) {
	m, cs := shared(t)
	rec := testRecord(t)
	got, err := verifyRecord(m.verifier(nil), rec.raw, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id := cs[0].Cert.Identity
	if got.Name != "node-a" || got.Version != 1000 || got.Left || got.Software != "meshd test" ||
		!reflect.DeepEqual(got.Endpoints, testInfo.Endpoints) || !reflect.DeepEqual(got.Routes, testInfo.Routes) ||
		!reflect.DeepEqual(got.Addrs, []netip.Addr{id.Addr.Addr()}) || !reflect.DeepEqual(got.Groups, id.Groups) ||
		got.Cert.Fingerprint != cs[0].Cert.Fingerprint {
		t.Fatalf("round trip: %+v", got)
	}
	// The node's own verifier (self set) still accepts its own record.
	if _, err := verifyRecord(m.verifier(cs[0]), rec.raw, time.Now()); err != nil {
		t.Fatalf("own record with self verifier: %v", err)
	}
}

func TestRecordRejects(t *testing.T) {
	m, cs := shared(t)
	v := m.verifier(nil)
	good := testRecord(t)

	// sign builds a record as node-a with arbitrary contents, signed by key.
	sign := func(mut func(r *Record), key *pki.Credentials) []byte {
		r := &Record{Name: "node-a", Cert: cs[0].Cert, Addrs: []netip.Addr{cs[0].Cert.Identity.Addr.Addr()}, Version: 5}
		mut(r)
		if err := signRecord(r, key.Key); err != nil {
			t.Fatal(err)
		}
		return r.raw
	}
	foreign := newTestMesh(t)
	fc := foreign.creds(t, "node-a", 1)
	foreignRec, err := newLocalRecord(fc, LocalInfo{}, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), good.raw...)
	tampered[len(tampered)-80] ^= 1 // inside the body (software string / endpoints)
	wrongVersion := append([]byte(nil), good.raw...)
	wrongVersion[0] = 2
	revokedV := m.verifier(nil)
	crl, err := m.ca.Revoke(nil, []*x509.Certificate{cs[0].Cert.Cert}, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := revokedV.UpdateCRL(crl); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		raw  []byte
		v    *pki.Verifier
		now  time.Time
		want error
	}{
		{"forged: signed by another node's key", sign(func(*Record) {}, cs[1]), v, time.Time{}, ErrBadSignature},
		{"tampered body", tampered, v, time.Time{}, ErrBadSignature},
		{"foreign CA", foreignRec.raw, v, time.Time{}, pki.ErrUnknownCA},
		{"revoked certificate", good.raw, revokedV, time.Time{}, pki.ErrRevoked},
		{"expired certificate", good.raw, v, time.Now().Add(2 * time.Hour), pki.ErrExpired},
		{"route outside the certificate", sign(func(r *Record) { r.Routes = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")} }, cs[0]), v, time.Time{}, ErrInvalidRecord},
		{"route wider than allowed", sign(func(r *Record) { r.Routes = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }, cs[0]), v, time.Time{}, ErrInvalidRecord},
		{"address not in certificate", sign(func(r *Record) { r.Addrs = []netip.Addr{netip.MustParseAddr("100.64.9.9")} }, cs[0]), v, time.Time{}, ErrInvalidRecord},
		{"group not in certificate", sign(func(r *Record) { r.Groups = []string{"admin"} }, cs[0]), v, time.Time{}, ErrInvalidRecord},
		{"name differs from certificate", sign(func(r *Record) { r.Name = "node-z" }, cs[0]), v, time.Time{}, ErrInvalidRecord},
		{"version beyond MaxVersionSkew", sign(func(r *Record) { r.Version = uint64(time.Now().Add(MaxVersionSkew + time.Minute).UnixNano()) }, cs[0]), v, time.Time{}, ErrFutureVersion},
		{"version 2^64-2", sign(func(r *Record) { r.Version = math.MaxUint64 - 1 }, cs[0]), v, time.Time{}, ErrFutureVersion},
		{"version 2^64-1", sign(func(r *Record) { r.Version = math.MaxUint64 }, cs[0]), v, time.Time{}, ErrFutureVersion},
		{"unknown format version", wrongVersion, v, time.Time{}, ErrUnsupportedVersion},
		{"trailing bytes", append(append([]byte(nil), good.raw...), 0), v, time.Time{}, ErrMalformed},
		{"truncated", good.raw[:len(good.raw)-3], v, time.Time{}, ErrMalformed},
		{"empty", nil, v, time.Time{}, ErrMalformed},
		{"relay without capacity", sign(func(r *Record) { r.Relay = RelayInfo{Addr: netip.MustParseAddrPort("192.0.2.7:3479")} }, cs[0]), v, time.Time{}, ErrInvalidRecord},
		{"relay without port", sign(func(r *Record) { r.Relay = RelayInfo{Addr: netip.MustParseAddrPort("192.0.2.7:0"), Capacity: 4} }, cs[0]), v, time.Time{}, ErrInvalidRecord},
		{"relay on an unspecified address", sign(func(r *Record) { r.Relay = RelayInfo{Addr: netip.MustParseAddrPort("0.0.0.0:3479"), Capacity: 4} }, cs[0]), v, time.Time{}, ErrInvalidRecord},
		{"relay flag without the relay", relayFlagOnly(good.raw), v, time.Time{}, ErrMalformed},
		{"unknown flag", flagged(good.raw, 1<<2), v, time.Time{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = time.Now()
			}
			_, err := verifyRecord(tt.v, tt.raw, now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			var re *RecordError
			if !errors.As(err, &re) {
				t.Fatalf("error %T is not a *RecordError", err)
			}
		})
	}
}

// flagged returns raw with flag bits set (the signature no longer matches;
// decoding fails first).
func flagged(raw []byte, bits byte) []byte {
	out := append([]byte(nil), raw...)
	out[1] |= bits
	return out
}

func relayFlagOnly(raw []byte) []byte { return flagged(raw, recordFlagRelay) }

// TestRecordRelay: a member relay's announcement (address, capacity)
// survives signing and verification, and a record without one (the format
// before member relays) still verifies with no relay.
func TestRecordRelay(t *testing.T) {
	m, cs := shared(t)
	v := m.verifier(nil)
	for _, ri := range []RelayInfo{
		{Addr: netip.MustParseAddrPort("198.51.100.7:3479"), Capacity: 64},
		{Addr: netip.MustParseAddrPort("[2001:db8::7]:65535"), Capacity: 65535},
	} {
		info := testInfo
		info.Relay = ri
		rec, err := newLocalRecord(cs[0], info, 1000, false)
		if err != nil {
			t.Fatal(err)
		}
		got, err := verifyRecord(v, rec.raw, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if got.Relay != ri || got.Software != testInfo.Software || !reflect.DeepEqual(got.Endpoints, testInfo.Endpoints) {
			t.Fatalf("relay %v: round trip %+v", ri, got)
		}
	}
	plain := testRecord(t)
	if plain.raw[1]&recordFlagRelay != 0 {
		t.Fatal("a record without a relay sets the relay flag")
	}
	got, err := verifyRecord(v, plain.raw, time.Now())
	if err != nil || !got.Relay.IsZero() {
		t.Fatalf("record without relay: %+v, %v", got, err)
	}
}

func TestRecordVersionWithinSkewAccepted(t *testing.T) {
	m, cs := shared(t)
	now := time.Now()
	r, err := newLocalRecord(cs[0], LocalInfo{}, uint64(now.Add(MaxVersionSkew-time.Second).UnixNano()), false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifyRecord(m.verifier(nil), r.raw, now); err != nil {
		t.Fatalf("version inside the skew refused: %v", err)
	}
}

func TestNextVersion(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ns := uint64(now.UnixNano())
	tests := []struct {
		name string
		prev uint64
		now  time.Time
		want uint64
	}{
		{"first record: the clock", 0, now, ns},
		{"clock ahead of prev", ns - 5, now, ns},
		{"clock stepped back: prev+1", ns + 7, now, ns + 8},
		{"at the skew limit: still +1, no wrap", versionLimit(now), now, versionLimit(now) + 1},
		{"never wraps, even past every limit", math.MaxUint64, now, math.MaxUint64},
		{"clock before 1970 counts as 0", 0, time.Unix(-5, 0), 1},
	}
	for _, tt := range tests {
		if got := nextVersion(tt.prev, tt.now); got != tt.want {
			t.Errorf("%s: nextVersion(%d) = %d, want %d", tt.name, tt.prev, got, tt.want)
		}
	}
	if got, want := versionLimit(now), ns+uint64(MaxVersionSkew); got != want {
		t.Errorf("versionLimit = %d, want %d", got, want)
	}
	if got := versionLimit(time.Unix(-5, 0)); got != uint64(MaxVersionSkew) {
		t.Errorf("versionLimit before 1970 = %d", got)
	}
}

func TestLocalRecordRefusesDisallowedRoutes(t *testing.T) {
	_, cs := shared(t)
	_, err := newLocalRecord(cs[0], LocalInfo{Routes: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/24")}}, 1, false)
	if !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("got %v", err)
	}
}

func TestPresenceOrder(t *testing.T) {
	at := func(ns int64) time.Time { return time.Unix(0, ns) }
	tests := []struct {
		name string
		a, b Presence
		want bool
	}{
		{"later session wins", Presence{Coordinator: "c2", Since: at(2), Online: true}, Presence{Coordinator: "c1", Since: at(1), Online: true}, true},
		{"earlier session loses", Presence{Coordinator: "c1", Since: at(1), Online: true}, Presence{Coordinator: "c2", Since: at(2)}, false},
		{"offline beats online, same session", Presence{Coordinator: "c1", Since: at(1)}, Presence{Coordinator: "c1", Since: at(1), Online: true}, true},
		{"online does not beat offline, same session", Presence{Coordinator: "c1", Since: at(1), Online: true}, Presence{Coordinator: "c1", Since: at(1)}, false},
		{"equal is not after", Presence{Coordinator: "c1", Since: at(1)}, Presence{Coordinator: "c1", Since: at(1)}, false},
		{"tie broken by name", Presence{Coordinator: "c2", Since: at(1)}, Presence{Coordinator: "c1", Since: at(1), Online: true}, true},
	}
	for _, tt := range tests {
		if got := presenceAfter(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: got %v", tt.name, got)
		}
	}
}

func TestRegistryMerge(t *testing.T) {
	m, cs := shared(t)
	var rc recordCounters
	reg := newRegistry(m.verifier(nil), 10*time.Minute, 10*time.Minute, &rc)
	now := time.Now()
	mk := func(version uint64, left bool, creds *pki.Credentials) *Record {
		r, err := newLocalRecord(creds, LocalInfo{}, version, left)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	entry := func(r *Record, p Presence) rawEntry { return rawEntry{pres: p, raw: r.raw} }
	online := Presence{Coordinator: "c1", Since: now, Online: true, Changed: now}
	v1 := mk(uint64(now.Add(-3*time.Minute).UnixNano()), false, cs[1])
	v2 := mk(uint64(now.Add(-2*time.Minute).UnixNano()), false, cs[1])

	if o, err := reg.merge(entry(v1, online), now); err != nil || !o.record {
		t.Fatalf("first record: %v %+v", err, o)
	}
	if o, err := reg.merge(entry(v2, online), now); err != nil || !o.record {
		t.Fatalf("newer record: %v %+v", err, o)
	}
	// Replay of the old version: rejected and counted, registry unchanged.
	if _, err := reg.merge(entry(v1, online), now); !errors.Is(err, ErrStaleRecord) {
		t.Fatalf("replay: %v", err)
	}
	if rc.stale.Load() != 1 || reg.get("node-b").rec.Version != v2.Version {
		t.Fatalf("stale=%d version=%d", rc.stale.Load(), reg.get("node-b").rec.Version)
	}
	// Same record, later presence: presence-only change.
	later := Presence{Coordinator: "c2", Since: now.Add(time.Second), Online: true, Changed: now}
	if o, err := reg.merge(entry(v2, later), now); err != nil || o.record || !o.presence {
		t.Fatalf("presence change: %v %+v", err, o)
	}
	// A forged newer record (node-b's certificate, node-c's signature).
	forged := &Record{Name: "node-b", Cert: cs[1].Cert, Addrs: v2.Addrs, Groups: v2.Groups, Version: v2.Version + 10}
	if err := signRecord(forged, cs[2].Key); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.merge(entry(forged, later), now); !errors.Is(err, ErrBadSignature) || rc.badSig.Load() != 1 {
		t.Fatalf("forged: %v (count %d)", err, rc.badSig.Load())
	}
	// Tombstone supersedes, then blocks the older live record.
	tomb := mk(uint64(now.Add(-time.Minute).UnixNano()), true, cs[1])
	if o, err := reg.merge(entry(tomb, later), now); err != nil || !o.record || !reg.get("node-b").rec.Left || reg.get("node-b").rec.Presence.Online {
		t.Fatalf("tombstone: %v %+v", err, o)
	}
	if _, err := reg.merge(entry(v2, later), now); !errors.Is(err, ErrStaleRecord) {
		t.Fatalf("record older than tombstone: %v", err)
	}
	// A later presence cannot make a tombstone online.
	if o := reg.mergePresence("node-b", Presence{Coordinator: "c3", Since: now.Add(time.Hour), Online: true}, now); o.changed() {
		t.Fatal("tombstone revived by presence")
	}
	// Expired tombstones are dropped by the sweep and refused from gossip.
	if gone := reg.sweepExpired(now.Add(30 * time.Minute)); len(gone) != 0 || reg.get("node-b") != nil {
		t.Fatalf("tombstone not swept silently: %v", gone)
	}
	if _, err := reg.merge(entry(tomb, later), now.Add(30*time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired tombstone: %v", err)
	}
	// An offline record past OfflineTTL is not accepted back.
	off := Presence{Coordinator: "c1", Since: now.Add(-30 * time.Minute), Changed: now.Add(-20 * time.Minute)}
	if _, err := reg.merge(entry(mk(uint64(now.UnixNano()), false, cs[2]), off), now); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired offline record: %v", err)
	}
}

// TestRegistryLimits: one record far in the future cannot pin a node's
// entry, and a full registry refuses new nodes but still updates held ones.
func TestRegistryLimits(t *testing.T) {
	m, cs := shared(t)
	var rc recordCounters
	reg := newRegistry(m.verifier(nil), time.Hour, time.Hour, &rc)
	now := time.Now()
	mk := func(creds int, version uint64) rawEntry {
		r, err := newLocalRecord(cs[creds], LocalInfo{}, version, false)
		if err != nil {
			t.Fatal(err)
		}
		return rawEntry{raw: r.raw}
	}
	for _, v := range []uint64{math.MaxUint64 - 1, uint64(now.Add(MaxVersionSkew + time.Second).UnixNano())} {
		if _, err := reg.merge(mk(1, v), now); !errors.Is(err, ErrFutureVersion) {
			t.Fatalf("version %d: got %v, want ErrFutureVersion", v, err)
		}
	}
	if reg.get("node-b") != nil {
		t.Fatal("a record from the future was stored")
	}
	if _, err := reg.merge(mk(1, uint64(now.UnixNano())), now); err != nil {
		t.Fatalf("node-b after the refusals: %v", err)
	}

	// Fill the registry up to the limit (copies of node-b's entry under
	// other names: only the count matters here).
	held := reg.get("node-b").rec
	for i := len(reg.entries); i < MaxRegistryEntries; i++ {
		r := held.Clone()
		r.Name = fmt.Sprintf("fill-%05d", i)
		reg.put(&r)
	}
	if _, err := reg.merge(mk(2, uint64(now.UnixNano())), now); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("new node into a full registry: got %v, want ErrLimitExceeded", err)
	}
	newC, err := newLocalRecord(cs[2], LocalInfo{}, uint64(now.UnixNano()), false)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := reg.acceptLocal(newC, Presence{}); !errors.Is(err, ErrLimitExceeded) || e != nil {
		t.Fatalf("session of a new node into a full registry: %v", err)
	}
	if rc.overLimit.Load() != 2 || len(reg.entries) != MaxRegistryEntries {
		t.Fatalf("over-limit count %d, entries %d", rc.overLimit.Load(), len(reg.entries))
	}
	if _, err := reg.merge(mk(1, uint64(now.UnixNano())+1), now); err != nil {
		t.Fatalf("update of a held node in a full registry: %v", err)
	}
}

func TestRegistryDropRevoked(t *testing.T) {
	m, cs := shared(t)
	v := m.verifier(nil)
	var rc recordCounters
	reg := newRegistry(v, time.Hour, time.Hour, &rc)
	for _, c := range cs {
		r, err := newLocalRecord(c, LocalInfo{}, uint64(time.Now().UnixNano()), false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := reg.merge(rawEntry{raw: r.raw}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	crl, err := m.ca.Revoke(nil, []*x509.Certificate{cs[1].Cert.Cert}, "gone", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.UpdateCRL(crl); err != nil {
		t.Fatal(err)
	}
	gone := reg.dropRevoked()
	if len(gone) != 1 || gone[0].rec.Name != "node-b" || gone[0].why != removeRevoked || reg.get("node-b") != nil || len(reg.entries) != 2 {
		t.Fatalf("dropRevoked: %+v, left %d", gone, len(reg.entries))
	}
}

// FuzzDecodeRecord: decoding and verifying arbitrary bytes never panics, and
// nothing but a genuine record verifies.
func FuzzDecodeRecord(f *testing.F) {
	m, cs := shared(f)
	v := m.verifier(nil)
	good, err := newLocalRecord(cs[0], testInfo, 1, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good.raw)
	f.Add(good.raw[:40])
	f.Add([]byte{1, 0, 1, 'a'})
	// Counts at their u8 maximum, and versions at the wrap.
	f.Add([]byte{1, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0x30, 255})
	f.Add([]byte{1, 0, 1, 'a', 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0x30, 0, 255})
	far, err := newLocalRecord(cs[0], testInfo, math.MaxUint64-1, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(far.raw)
	relayInfo := testInfo
	relayInfo.Relay = RelayInfo{Addr: netip.MustParseAddrPort("198.51.100.7:3479"), Capacity: 8}
	relayed, err := newLocalRecord(cs[0], relayInfo, 2, false)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(relayed.raw)
	f.Add(relayed.raw[:len(relayed.raw)-20])
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeRecord(b)
		if err == nil && d.rec.Name == "" {
			t.Fatal("decoded a record without a name")
		}
		if err == nil && (len(d.rec.Addrs) > maxAddrs || len(d.rec.Groups) > maxGroups || len(d.rec.Routes) > MaxRoutes ||
			len(d.rec.Endpoints) > MaxEndpoints || len(d.certDER) > maxCertLen || len(d.sig) > maxSigLen) {
			t.Fatalf("decoded beyond the limits: %+v", d.rec)
		}
		now := time.Now()
		rec, err := verifyRecord(v, b, now)
		if err == nil && (rec.Cert.Fingerprint != cs[0].Cert.Fingerprint) {
			t.Fatalf("verified a record with an unexpected certificate")
		}
		if err == nil && rec.Version > versionLimit(now) {
			t.Fatalf("verified a record %d ns ahead of the clock", rec.Version-uint64(now.UnixNano()))
		}
	})
}
