package discovery

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	"github.com/meshd/meshd/pki"
)

// Record format limits (docs/protocol.md, "Registry records").
const (
	recordFormat = 1

	// MaxRecordSize bounds one encoded, signed record.
	MaxRecordSize = 24 << 10
	// MaxEndpoints bounds the reflexive endpoint hints one record carries.
	MaxEndpoints = 16
	// MaxRoutes bounds the subnets one record advertises.
	MaxRoutes = 64

	maxNameLen     = 63
	maxCertLen     = 16 << 10
	maxGroups      = 64
	maxGroupLen    = 64
	maxSoftwareLen = 64
	maxSigLen      = 256
	maxAddrs       = 2

	recordFlagLeft = 1 << 0
	// recordFlagRelay: the body ends with a RelayInfo after the software
	// string (the node serves as a member relay). Records without it
	// decode as before.
	recordFlagRelay = 1 << 1
	recordFlags     = recordFlagLeft | recordFlagRelay

	// MaxVersionSkew bounds how far a record version (its signing time in
	// unix ns) may lie ahead of the receiver's clock. Every receiver refuses
	// a record further ahead (ErrFutureVersion), and a node follows a
	// coordinator's "stale, holding v" only while v is below that bound, so
	// no record and no coordinator can push a node's versions towards 2^64
	// (where they would wrap) or pin its registry entry for longer than the
	// skew. Ten minutes is far beyond what NTP-disciplined hosts drift, yet
	// short enough that a node whose clock was that far ahead is back in
	// service within minutes after its clock is corrected; it also means
	// every node's clock must be within ten minutes of the coordinators'
	// (TLS certificate validity needs roughly that already).
	MaxVersionSkew = 10 * time.Minute
)

// recordSigContext separates record signatures from every other use of a
// node key (pki.SignMessage signs whatever it is given).
var recordSigContext = []byte("meshd record v1\x00")

// Presence says which coordinator holds a node's session and since when.
// Coordinators assert it; it is not signed. A later session (larger Since)
// supersedes an earlier one; for the same session, offline supersedes online.
type Presence struct {
	Coordinator string    // memberlist name of the coordinator; "" if never seen
	Since       time.Time // start of that session (hybrid logical clock, unix ns)
	Online      bool      // the session is up
	Changed     time.Time // when Online last changed; offline records expire from here
}

// Record is one node's entry in the registry: what the node says about itself,
// signed by its own key, plus the coordinators' presence. Records returned by
// this package have been verified: the certificate chains to the CA, is valid
// and not revoked, the signature is the certificate key's, and every address,
// group and route is allowed by the certificate.
type Record struct {
	Name      string           // node name = certificate CN
	Cert      *pki.NodeCert    // the node's certificate
	Addrs     []netip.Addr     // overlay addresses (from the certificate)
	Groups    []string         // groups (from the certificate)
	Routes    []netip.Prefix   // subnets the node advertises (inside the certificate's subnets)
	Endpoints []netip.AddrPort // reflexive/host endpoint hints for ICE
	Software  string           // software version string
	Version   uint64           // unix nanoseconds at signing; strictly increasing per node
	Left      bool             // tombstone: the node left the mesh
	Relay     RelayInfo        // the member relay the node serves; zero = none
	Presence  Presence

	raw []byte // the signed encoding, relayed byte for byte
}

// LocalInfo is what a node advertises about itself beyond its certificate.
type LocalInfo struct {
	Endpoints []netip.AddrPort // at most MaxEndpoints
	Routes    []netip.Prefix   // each inside a subnet the certificate allows; at most MaxRoutes
	Software  string           // at most 64 bytes
	Relay     RelayInfo        // zero = the node serves no member relay
}

// RelayInfo announces a member relay ([relay] enabled): a TURN server
// (UDP) that relays for mesh members only (package relay).
type RelayInfo struct {
	Addr     netip.AddrPort // the relay's public UDP address; port non-zero
	Capacity uint16         // allocations it accepts at once; non-zero
}

// IsZero reports whether no relay is announced.
func (ri RelayInfo) IsZero() bool { return ri == RelayInfo{} }

func (ri RelayInfo) check() error {
	if ri.IsZero() {
		return nil
	}
	a := ri.Addr.Addr()
	if !a.IsValid() || a.Is4In6() || a.IsUnspecified() || ri.Addr.Port() == 0 || ri.Capacity == 0 {
		return fmt.Errorf("%w: relay %v with capacity %d", ErrInvalidRecord, ri.Addr, ri.Capacity)
	}
	return nil
}

// Clone returns a deep copy of r (the certificate is shared: it is immutable).
func (r *Record) Clone() Record {
	c := *r
	c.Addrs = slices.Clone(r.Addrs)
	c.Groups = slices.Clone(r.Groups)
	c.Routes = slices.Clone(r.Routes)
	c.Endpoints = slices.Clone(r.Endpoints)
	return c
}

// versionLimit is the largest record version a receiver whose clock reads
// now accepts: now + MaxVersionSkew in unix ns (a clock before 1970 counts
// as 1970). It stays below 2^63 until the year 2262, so a version at or
// under it can always be incremented without wrapping.
func versionLimit(now time.Time) uint64 {
	return uint64(max(now.UnixNano(), 0)) + uint64(MaxVersionSkew)
}

// nextVersion is the version of a node's next record after prev: the clock
// in unix ns, but always above prev (the clock stepped back, or the node
// followed a coordinator holding a newer one). prev is at most
// versionLimit at the time it was signed, so prev+1 cannot wrap; the
// saturation below only keeps that true should the invariant ever break.
func nextVersion(prev uint64, now time.Time) uint64 {
	v := uint64(max(now.UnixNano(), 0))
	if v <= prev {
		if prev == math.MaxUint64 {
			return prev
		}
		v = prev + 1
	}
	return v
}

// versionTime is the signing time encoded in Version.
func (r *Record) versionTime() time.Time { return time.Unix(0, int64(r.Version)) }

// sameSigned reports whether a and b carry the same signed bytes.
func (r *Record) sameSigned(o *Record) bool { return o != nil && bytes.Equal(r.raw, o.raw) }

// encodeRecordBody is the canonical, signed part of a record.
func encodeRecordBody(r *Record, certDER []byte) ([]byte, error) {
	switch {
	case len(r.Name) == 0 || len(r.Name) > maxNameLen:
		return nil, fmt.Errorf("%w: name length %d", ErrInvalidRecord, len(r.Name))
	case len(certDER) == 0 || len(certDER) > maxCertLen:
		return nil, fmt.Errorf("%w: certificate length %d", ErrInvalidRecord, len(certDER))
	case len(r.Addrs) > maxAddrs:
		return nil, fmt.Errorf("%w: %d overlay addresses", ErrInvalidRecord, len(r.Addrs))
	case len(r.Groups) > maxGroups:
		return nil, fmt.Errorf("%w: %d groups", ErrInvalidRecord, len(r.Groups))
	case len(r.Routes) > MaxRoutes:
		return nil, fmt.Errorf("%w: %d routes, limit %d", ErrInvalidRecord, len(r.Routes), MaxRoutes)
	case len(r.Endpoints) > MaxEndpoints:
		return nil, fmt.Errorf("%w: %d endpoints, limit %d", ErrInvalidRecord, len(r.Endpoints), MaxEndpoints)
	case len(r.Software) > maxSoftwareLen:
		return nil, fmt.Errorf("%w: software string of %d bytes", ErrInvalidRecord, len(r.Software))
	}
	w := wbuf{b: make([]byte, 0, 128+len(certDER))}
	w.u8(recordFormat)
	var flags uint8
	if r.Left {
		flags |= recordFlagLeft
	}
	if !r.Relay.IsZero() {
		flags |= recordFlagRelay
	}
	w.u8(flags)
	w.str8(r.Name)
	w.u64(r.Version)
	w.bytes16(certDER)
	w.u8(uint8(len(r.Addrs)))
	for _, a := range r.Addrs {
		w.addr(a)
	}
	w.u8(uint8(len(r.Groups)))
	for _, g := range r.Groups {
		if len(g) == 0 || len(g) > maxGroupLen {
			return nil, fmt.Errorf("%w: group %q", ErrInvalidRecord, g)
		}
		w.str8(g)
	}
	w.u8(uint8(len(r.Routes)))
	for _, p := range r.Routes {
		w.addr(p.Addr())
		w.u8(uint8(p.Bits()))
	}
	w.u8(uint8(len(r.Endpoints)))
	for _, e := range r.Endpoints {
		w.addr(e.Addr())
		w.u16(e.Port())
	}
	w.str8(r.Software)
	if !r.Relay.IsZero() {
		w.addr(r.Relay.Addr.Addr())
		w.u16(r.Relay.Addr.Port())
		w.u16(r.Relay.Capacity)
	}
	return w.b, nil
}

// signRecord encodes r with cert and signs it with key, setting r.raw.
func signRecord(r *Record, key crypto.Signer) error {
	body, err := encodeRecordBody(r, r.Cert.Cert.Raw)
	if err != nil {
		return err
	}
	sig, err := pki.SignMessage(key, append(slices.Clip(recordSigContext), body...))
	if err != nil {
		return fmt.Errorf("discovery: signing record: %w", err)
	}
	if len(sig) > maxSigLen {
		return fmt.Errorf("%w: signature of %d bytes", ErrInvalidRecord, len(sig))
	}
	w := wbuf{b: body}
	w.bytes16(sig)
	r.raw = w.b
	return nil
}

// peekRecordName reads the node name of an encoded record without decoding
// the rest (fast paths that compare signed bytes).
func peekRecordName(raw []byte) (string, bool) {
	if len(raw) < 3 || raw[0] != recordFormat {
		return "", false
	}
	n := int(raw[2])
	if n == 0 || len(raw) < 3+n {
		return "", false
	}
	return string(raw[3 : 3+n]), true
}

// decodedRecord is a record decoded but not yet verified.
type decodedRecord struct {
	rec     Record
	certDER []byte
	body    []byte
	sig     []byte
}

// decodeRecord parses the wire form of a record without verifying it. It
// rejects unknown format versions, bad lengths and trailing bytes.
func decodeRecord(raw []byte) (*decodedRecord, error) {
	if len(raw) > MaxRecordSize {
		return nil, fmt.Errorf("%w: record of %d bytes, limit %d", ErrMalformed, len(raw), MaxRecordSize)
	}
	r := rbuf{b: raw}
	if v := r.u8("record version"); r.err == nil && v != recordFormat {
		return nil, fmt.Errorf("%w: record format %d", ErrUnsupportedVersion, v)
	}
	d := &decodedRecord{}
	flags := r.u8("record flags")
	if r.err == nil && flags&^recordFlags != 0 {
		r.fail("record flags %#x", flags)
	}
	d.rec.Left = flags&recordFlagLeft != 0
	d.rec.Name = r.str8("name", maxNameLen)
	d.rec.Version = r.u64("version")
	d.certDER = r.bytes16("certificate", maxCertLen)
	if n := int(r.u8("address count")); n > maxAddrs {
		r.failLimit("address count", uint64(n), maxAddrs)
	} else {
		for range n {
			d.rec.Addrs = append(d.rec.Addrs, r.addr("overlay address"))
		}
	}
	if n := int(r.u8("group count")); n > maxGroups {
		r.failLimit("group count", uint64(n), maxGroups)
	} else {
		for range n {
			d.rec.Groups = append(d.rec.Groups, r.str8("group", maxGroupLen))
		}
	}
	if n := int(r.u8("route count")); n > MaxRoutes {
		r.failLimit("route count", uint64(n), MaxRoutes)
	} else {
		for range n {
			a := r.addr("route")
			bits := int(r.u8("route bits"))
			if r.err != nil {
				break
			}
			p, err := a.Prefix(bits)
			if err != nil || bits > a.BitLen() || p.Addr() != a {
				r.fail("route %v/%d is not a masked prefix", a, bits)
				break
			}
			d.rec.Routes = append(d.rec.Routes, p)
		}
	}
	if n := int(r.u8("endpoint count")); n > MaxEndpoints {
		r.failLimit("endpoint count", uint64(n), MaxEndpoints)
	} else {
		for range n {
			a := r.addr("endpoint")
			d.rec.Endpoints = append(d.rec.Endpoints, netip.AddrPortFrom(a, r.u16("endpoint port")))
		}
	}
	d.rec.Software = r.str8("software", maxSoftwareLen)
	if flags&recordFlagRelay != 0 {
		a := r.addr("relay address")
		d.rec.Relay.Addr = netip.AddrPortFrom(a, r.u16("relay port"))
		d.rec.Relay.Capacity = r.u16("relay capacity")
		if r.err == nil && d.rec.Relay.IsZero() {
			r.fail("relay flag without a relay")
		}
	}
	if r.err == nil {
		d.body = raw[:len(raw)-len(r.b)]
	}
	d.sig = r.bytes16("signature", maxSigLen)
	if err := r.done("record"); err != nil {
		return nil, err
	}
	if d.rec.Name == "" || len(d.certDER) == 0 || len(d.sig) == 0 {
		return nil, fmt.Errorf("%w: record without name, certificate or signature", ErrMalformed)
	}
	d.rec.raw = raw
	return d, nil
}

// verifyCert applies the pki policy to a node certificate for registry use.
// pki.ErrSelf is not a failure here: Verify reports it only after the chain,
// validity and revocation checks passed, and a node's own record (or the
// coordinator host's own session) legitimately carries the local certificate.
func verifyCert(v *pki.Verifier, der []byte, now time.Time) (*pki.NodeCert, error) {
	nc, err := v.Verify([][]byte{der}, pki.Expect{Now: now})
	if err == nil {
		return nc, nil
	}
	if errors.Is(err, pki.ErrSelf) {
		return pki.ParseNodeCert(der)
	}
	return nil, err
}

// verifyRecord decodes raw and applies every check a receiver makes: a
// version at most MaxVersionSkew ahead of now, the certificate policy
// (chain, validity, revocation), the signature by the certificate's key,
// and that the record claims nothing its certificate does not allow. Errors
// are *RecordError.
func verifyRecord(v *pki.Verifier, raw []byte, now time.Time) (*Record, error) {
	d, err := decodeRecord(raw)
	if err != nil {
		return nil, &RecordError{Reason: err}
	}
	fail := func(err error) (*Record, error) { return nil, &RecordError{Name: d.rec.Name, Reason: err} }
	// Checked first and cheaply: a version far ahead would block every
	// later record of the node (replicas keep the largest version), and
	// its next version would overflow.
	if lim := versionLimit(now); d.rec.Version > lim {
		return fail(fmt.Errorf("%w: version %d is beyond %d (now + %v)", ErrFutureVersion, d.rec.Version, lim, MaxVersionSkew))
	}
	nc, err := verifyCert(v, d.certDER, now)
	if err != nil {
		return fail(err)
	}
	msg := append(slices.Clip(recordSigContext), d.body...)
	if err := pki.VerifyMessage(nc.Cert, msg, d.sig); err != nil {
		return fail(fmt.Errorf("%w: %v", ErrBadSignature, err))
	}
	rec := d.rec
	rec.Cert = nc
	if err := checkRecordAgainstCert(&rec); err != nil {
		return fail(err)
	}
	return &rec, nil
}

// checkRecordAgainstCert enforces that a record claims only what its
// certificate binds.
func checkRecordAgainstCert(r *Record) error {
	id := r.Cert.Identity
	if r.Name != id.Name {
		return fmt.Errorf("%w: record name %q, certificate name %q", ErrInvalidRecord, r.Name, id.Name)
	}
	for i, a := range r.Addrs {
		if !(id.Addr.IsValid() && a == id.Addr.Addr()) && !(id.Addr6.IsValid() && a == id.Addr6.Addr()) {
			return fmt.Errorf("%w: overlay address %v not in the certificate", ErrInvalidRecord, a)
		}
		if slices.Contains(r.Addrs[:i], a) {
			return fmt.Errorf("%w: duplicate overlay address %v", ErrInvalidRecord, a)
		}
	}
	for _, g := range r.Groups {
		if !slices.Contains(id.Groups, g) {
			return fmt.Errorf("%w: group %q not in the certificate", ErrInvalidRecord, g)
		}
	}
	if err := checkRoutes(r.Routes, id.Subnets); err != nil {
		return err
	}
	for _, e := range r.Endpoints {
		if !e.Addr().IsValid() || e.Port() == 0 {
			return fmt.Errorf("%w: endpoint %v", ErrInvalidRecord, e)
		}
	}
	return r.Relay.check()
}

// checkRoutes requires every route to be a masked prefix inside one of the
// allowed subnets.
func checkRoutes(routes, allowed []netip.Prefix) error {
	for _, rt := range routes {
		if !rt.IsValid() || rt.Masked() != rt {
			return fmt.Errorf("%w: route %v is not a masked prefix", ErrInvalidRecord, rt)
		}
		ok := false
		for _, s := range allowed {
			if s.Addr().Is4() == rt.Addr().Is4() && s.Bits() <= rt.Bits() && s.Contains(rt.Addr()) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("%w: route %v not allowed by the certificate", ErrInvalidRecord, rt)
		}
	}
	return nil
}

// newLocalRecord builds and signs the record a node publishes about itself.
func newLocalRecord(creds *pki.Credentials, info LocalInfo, version uint64, left bool) (*Record, error) {
	id := creds.Cert.Identity
	r := &Record{
		Name:      id.Name,
		Cert:      creds.Cert,
		Groups:    slices.Clone(id.Groups),
		Routes:    slices.Clone(info.Routes),
		Endpoints: slices.Clone(info.Endpoints),
		Software:  info.Software,
		Relay:     info.Relay,
		Version:   version,
		Left:      left,
	}
	if id.Addr.IsValid() {
		r.Addrs = append(r.Addrs, id.Addr.Addr())
	}
	if id.Addr6.IsValid() {
		r.Addrs = append(r.Addrs, id.Addr6.Addr())
	}
	if err := checkRecordAgainstCert(r); err != nil {
		return nil, err
	}
	if err := signRecord(r, creds.Key); err != nil {
		return nil, err
	}
	return r, nil
}

// encodePresence / decodePresence: the presence part of an entry.
func encodePresence(w *wbuf, p Presence) {
	w.str8(p.Coordinator)
	w.i64(unixNano(p.Since))
	w.i64(unixNano(p.Changed))
	w.bool(p.Online)
}

func decodePresence(r *rbuf) Presence {
	var p Presence
	p.Coordinator = r.str8("presence coordinator", maxNameLen)
	p.Since = fromUnixNano(r.i64("presence since"))
	p.Changed = fromUnixNano(r.i64("presence changed"))
	p.Online = r.bool("presence online")
	return p
}

// unixNano maps the zero time to 0 so that "never" round-trips.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// presenceAfter reports whether a supersedes b: a later session wins; for the
// same session, offline wins over online; equal start times from different
// coordinators are ordered by name so every replica picks the same one.
func presenceAfter(a, b Presence) bool {
	as, bs := unixNano(a.Since), unixNano(b.Since)
	if as != bs {
		return as > bs
	}
	if a.Coordinator != b.Coordinator {
		return a.Coordinator > b.Coordinator
	}
	return !a.Online && b.Online
}

// encodeEntry writes presence + signed record, the unit that sessions,
// gossip, push/pull state and the cache file all carry.
func encodeEntry(w *wbuf, rec *Record) {
	encodePresence(w, rec.Presence)
	w.bytes16(rec.raw)
}

// rawEntry is an entry decoded but whose record is not yet verified.
type rawEntry struct {
	pres Presence
	raw  []byte
}

func decodeEntry(r *rbuf) rawEntry {
	var e rawEntry
	e.pres = decodePresence(r)
	// Cloned: the decoded frame buffer is reused or retained by the caller,
	// and the record is stored long after.
	e.raw = bytes.Clone(r.bytes16("record", MaxRecordSize))
	return e
}
