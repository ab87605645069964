package main

// meshctl cert: node keys, certificate requests, signing and inspection. All
// offline: "request" runs on the node (its key never leaves it), "sign" on
// the CA machine, "show" anywhere.

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/pki"
)

func init() { register(newCertCmd) }

func newCertCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Request, sign and show node certificates (offline)",
	}
	cmd.AddCommand(newCertRequestCmd(), newCertSignCmd(), newCertShowCmd(), newCertRenewCmd(), newCertInstallCmd())
	return cmd
}

// certRequestArgs are the flags of "meshctl cert request".
type certRequestArgs struct {
	name    string
	dir     string
	keyType string
	force   bool
}

func newCertRequestCmd() *cobra.Command {
	var a certRequestArgs
	cmd := &cobra.Command{
		Use:   "request --name NODE [--dir DIR]",
		Short: "Make a node key (DIR/NODE.key, 0600) and a certificate request (DIR/NODE.csr)",
		Long: `Run this on the node. Copy NODE.csr to the CA machine and sign it there with
"meshctl cert sign --csr NODE.csr"; the private key never leaves the node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCertRequest(cmd.OutOrStdout(), a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.name, "name", "", "node name: 1-63 of a-z 0-9 . - (required)")
	f.StringVar(&a.dir, "dir", ".", "directory for NODE.key and NODE.csr")
	f.StringVar(&a.keyType, "key-type", pki.KeyECDSAP256.String(), "ecdsa-p256 or ed25519")
	f.BoolVar(&a.force, "force", false, "replace an existing key and request")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func runCertRequest(w io.Writer, a certRequestArgs) error {
	if err := pkiNoStdio("--dir", a.dir); err != nil {
		return err
	}
	if !pki.ValidName(a.name) {
		return pkiUsage("--name %q: want 1-63 of a-z 0-9 . - starting with a letter or digit", a.name)
	}
	kt, err := pki.ParseKeyType(a.keyType)
	if err != nil {
		return pkiUsage("--key-type %q: want ecdsa-p256 or ed25519", a.keyType)
	}
	keyPath := filepath.Join(a.dir, a.name+".key")
	csrPath := filepath.Join(a.dir, a.name+".csr")
	if !a.force {
		for _, p := range []string{keyPath, csrPath} {
			if err := pkiRefuseExisting(p); err != nil {
				return err
			}
		}
	}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return err
	}
	key, err := pki.GenerateKey(kt)
	if err != nil {
		return err
	}
	csr, err := pki.CreateCSR(key, a.name)
	if err != nil {
		return pkiCLIError(err)
	}
	if err := pki.WriteKeyFile(keyPath, key, a.force); err != nil {
		return pkiCLIError(err)
	}
	if err := pki.WriteFile(csrPath, csr, 0o644, a.force); err != nil {
		return pkiCLIError(err)
	}
	pkiPrintFields(w, []pkiField{
		{"name", a.name},
		{"key", pkiDisplayPath(keyPath) + " (0600; stays on this node)"},
		{"request", pkiDisplayPath(csrPath)},
		{"key type", kt.String()},
		{"next", fmt.Sprintf("meshctl cert sign --ca-dir CA --csr %s.csr --ip ADDR/LEN (on the CA machine)", a.name)},
	})
	return nil
}

// certSignArgs are the flags of "meshctl cert sign".
type certSignArgs struct {
	caDir    string
	csr      string
	name     string
	ip       string
	ip6      string
	groups   []string
	subnets  []string
	duration time.Duration
	out      string
	keyType  string
	force    bool
	exit     bool
	coord    bool
	renew    bool
	previous string
	prevCA   string

	stdin  io.Reader // --csr -
	stderr io.Writer // the summary, when --out - puts the certificate on stdout
}

func newCertSignCmd() *cobra.Command {
	var a certSignArgs
	cmd := &cobra.Command{
		Use:   "sign --ca-dir DIR (--csr FILE | --name NODE) --ip ADDR/LEN | sign --ca-dir DIR --csr FILE --renew",
		Short: "Sign a node certificate (OUT/NODE.crt; with --name and no --csr also OUT/NODE.key)",
		Long: `Sign binds a node name to its overlay addresses, groups and the subnets it may
route. With --csr the node's own request is signed (the name comes from it;
--name, if given, must match). Without --csr a key is generated here and
written next to the certificate: move it to the node securely.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a.stdin, a.stderr = cmd.InOrStdin(), cmd.ErrOrStderr()
			return runCertSign(cmd.OutOrStdout(), a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.caDir, "ca-dir", "", "the CA directory (ca.crt, ca.key) (required)")
	f.StringVar(&a.csr, "csr", "", "certificate request made by 'meshctl cert request' (- reads it from stdin)")
	f.StringVar(&a.name, "name", "", "node name (required without --csr)")
	f.StringVar(&a.ip, "ip", "", "overlay IPv4 address with the mesh prefix length, e.g. 100.64.0.1/10 (required but with --renew)")
	f.StringVar(&a.ip6, "ip6", ip6Auto, `overlay IPv6 address: "auto" derives it from --ip inside the CA's IPv6 prefix (none if the CA has no prefix), "none" signs an IPv4-only node, or ADDR[/LEN], e.g. fd7a:115c:a1e0::7`)
	f.StringSliceVar(&a.groups, "groups", nil, "comma-separated groups, e.g. servers,lab")
	f.StringSliceVar(&a.subnets, "subnets", nil, "comma-separated subnets the node may route, e.g. 10.1.0.0/24")
	f.BoolVar(&a.exit, "exit", false, "the node is an exit node: it may route 0.0.0.0/0 or ::/0")
	f.BoolVar(&a.coord, "coordinator", false, "grant the coordinator role: nodes accept coordinator sessions, and coordinators gossip, only with such certificates")
	durationVar(f, &a.duration, "duration", 365*day, "how long the certificate is valid (never past the CA's expiry)")
	f.StringVar(&a.out, "out", ".", "directory for NODE.crt (and NODE.key); - writes the certificate (PEM) to stdout")
	f.StringVar(&a.keyType, "key-type", pki.KeyECDSAP256.String(), "key type when generating a key (no --csr)")
	f.BoolVar(&a.force, "force", false, "replace an existing certificate (and key)")
	_ = cmd.MarkFlagRequired("ca-dir")
	f.BoolVar(&a.renew, "renew", false, "sign a renewal request (meshctl cert renew) with the identity of the certificate it renews: the latest of its name in the CA's index, or --previous")
	f.StringVar(&a.previous, "previous", "", "with --renew: the certificate being renewed (for a CA directory without an index)")
	f.StringVar(&a.prevCA, "previous-ca", "", "with --renew --previous: the CA certificate that issued it, when it is not this CA (re-signing nodes during a CA rotation)")
	return cmd
}

func (a certSignArgs) identity() (pki.Identity, error) {
	id := pki.Identity{Name: a.name, Coordinator: a.coord}
	var err error
	if id.Addr, err = netip.ParsePrefix(a.ip); err != nil || !id.Addr.Addr().Is4() {
		return id, pkiUsage("--ip %q: want an IPv4 address with the mesh prefix length, e.g. 100.64.0.1/10", a.ip)
	}
	switch a.ip6 {
	case "", ip6Auto, ip6None:
		// Decided by assignAddr6 once the CA (and its prefix) is loaded.
	default:
		// Without a length it waits for the CA's prefix (assignAddr6).
		p6, err := parseAddr6(a.ip6)
		if err != nil {
			return id, err
		}
		if p6.Bits() > 0 {
			id.Addr6 = p6
		}
	}
	for _, g := range a.groups {
		if g = strings.TrimSpace(g); g != "" {
			id.Groups = append(id.Groups, g)
		}
	}
	for _, s := range a.subnets {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return id, pkiUsage("--subnets: %q is not a prefix like 10.1.0.0/24", s)
		}
		// A default route makes the node everyone's exit: only on purpose.
		// (It contains the mesh prefix; the more specific mesh routes win.)
		if p.Bits() == 0 {
			if !a.exit {
				return id, pkiUsage("--subnets: %v is a default route: give --exit to sign an exit node", p)
			}
			id.Subnets = append(id.Subnets, p)
			continue
		}
		// Any other subnet inside (or around) the mesh prefix would let the
		// node claim other nodes' overlay addresses as its own sources.
		for _, mesh := range []netip.Prefix{id.Addr, id.Addr6} {
			if mesh.IsValid() && p.Masked().Overlaps(mesh.Masked()) {
				return id, pkiUsage("--subnets: %v overlaps the mesh prefix %v: a node routes subnets outside the overlay", p, mesh.Masked())
			}
		}
		id.Subnets = append(id.Subnets, p)
	}
	return id.Normalize(), nil
}

func runCertSign(w io.Writer, a certSignArgs) error {
	if a.csr == "" && a.name == "" {
		return pkiUsage("give --csr FILE (the node's request) or --name NODE (generate the key here)")
	}
	if a.duration <= 0 {
		return pkiUsage("--duration %v: must be positive", a.duration)
	}
	if err := pkiNoStdio("--ca-dir", a.caDir); err != nil {
		return err
	}
	toStdout := a.out == pkiStdio
	if toStdout && a.csr == "" {
		return pkiUsage("--out - writes only a certificate: sign a request (--csr), or give a directory for the key generated here")
	}
	if a.renew {
		return runCertSignRenew(w, a)
	}
	if a.previous != "" || a.prevCA != "" {
		return pkiUsage("--previous and --previous-ca go with --renew")
	}
	if a.ip == "" {
		return pkiUsage("--ip is required: the overlay IPv4 address with the mesh prefix length, e.g. 100.64.0.1/10")
	}
	id, err := a.identity()
	if err != nil {
		return err
	}
	var csrPEM []byte
	if a.csr != "" {
		if csrPEM, err = pkiReadInput(a.csr, a.stdin); err != nil {
			return err
		}
	} else if err := id.Validate(); err != nil {
		// Report identity mistakes before touching the CA key.
		return pkiCLIError(err)
	}
	kt, err := pki.ParseKeyType(a.keyType)
	if err != nil {
		return pkiUsage("--key-type %q: want ecdsa-p256 or ed25519", a.keyType)
	}
	ca, err := pki.LoadCA(a.caDir)
	if err != nil {
		return pkiCLIError(err)
	}
	if id, err = a.assignAddr6(id, ca.Prefix6()); err != nil {
		return err
	}

	var (
		nc      *pki.NodeCert
		keyPath string
	)
	if a.csr != "" {
		if nc, err = ca.SignCSR(csrPEM, id, a.duration); err != nil {
			return pkiCLIError(err)
		}
	} else {
		keyPath = filepath.Join(a.out, id.Name+".key")
		if !a.force {
			for _, p := range []string{keyPath, filepath.Join(a.out, id.Name+".crt")} {
				if err := pkiRefuseExisting(p); err != nil {
					return err
				}
			}
		}
		key, err := pki.GenerateKey(kt)
		if err != nil {
			return err
		}
		if nc, err = ca.Sign(key.Public(), id, a.duration); err != nil {
			return pkiCLIError(err)
		}
		if err := os.MkdirAll(a.out, 0o700); err != nil {
			return err
		}
		if err := pki.WriteKeyFile(keyPath, key, a.force); err != nil {
			return pkiCLIError(err)
		}
	}
	return pkiDeliver(w, a, nc, keyPath)
}

// pkiDeliver records nc in the CA's index and writes it (to OUT/NAME.crt or
// stdout), then prints the summary. keyPath is the key generated here, or "".
func pkiDeliver(w io.Writer, a certSignArgs, nc *pki.NodeCert, keyPath string) error {
	toStdout := a.out == pkiStdio
	certPath := filepath.Join(a.out, nc.Identity.Name+".crt")
	if !toStdout && !a.force && keyPath == "" {
		if err := pkiRefuseExisting(certPath); err != nil {
			return err
		}
	}
	// Recorded before it is handed out: no certificate of this CA exists
	// that revoke --name cannot find.
	if err := pki.RecordIssued(a.caDir, nc); err != nil {
		if keyPath != "" && !a.force {
			_ = os.Remove(keyPath)
		}
		return pkiCLIError(err)
	}
	if toStdout {
		if _, err := w.Write(nc.PEM()); err != nil {
			return err
		}
		pkiPrintFields(a.stderr, append([]pkiField{{"certificate", "(stdout)"}}, pkiCertFields(time.Now(), nc.Cert, &nc.Identity)...))
		return nil
	}
	if err := os.MkdirAll(a.out, 0o700); err != nil {
		return err
	}
	if err := pki.WriteFile(certPath, nc.PEM(), 0o644, a.force); err != nil {
		if keyPath != "" && !a.force {
			_ = os.Remove(keyPath) // no key without its certificate
		}
		return pkiCLIError(err)
	}
	fields := []pkiField{{"certificate", pkiDisplayPath(certPath)}}
	if keyPath != "" {
		fields = append(fields, pkiField{"key", pkiDisplayPath(keyPath) + " (0600; generated here, move it to the node securely)"})
	}
	pkiPrintFields(w, append(fields, pkiCertFields(time.Now(), nc.Cert, &nc.Identity)...))
	return nil
}

// certShowArgs are the flags of "meshctl cert show".
type certShowArgs struct {
	file  string
	json  bool
	stdin io.Reader // FILE "-"
}

func newCertShowCmd() *cobra.Command {
	var a certShowArgs
	cmd := &cobra.Command{
		Use:   "show FILE (- reads stdin)",
		Short: "Show a node or CA certificate: name, addresses, groups, subnets, validity",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.file, a.stdin = args[0], cmd.InOrStdin()
			return runCertShow(cmd.OutOrStdout(), a)
		},
	}
	cmd.Flags().BoolVar(&a.json, "json", false, "print JSON (with schema_version) instead of text")
	return cmd
}

// certShowJSON is the --json output of "meshctl cert show". Fields are only
// ever added; a change of meaning bumps schema_version.
type certShowJSON struct {
	SchemaVersion    int       `json:"schema_version"`
	Kind             string    `json:"kind"` // "node" or "ca"
	Role             string    `json:"role"` // "node" or "coordinator"; "" for a CA
	Name             string    `json:"name"`
	Addresses        []string  `json:"addresses"`
	Groups           []string  `json:"groups"`
	Subnets          []string  `json:"subnets"`
	NotBefore        time.Time `json:"not_before"`
	NotAfter         time.Time `json:"not_after"`
	ExpiresIn        string    `json:"expires_in"` // "364d"; negative durations read "-3d"
	ExpiresInSeconds int64     `json:"expires_in_seconds"`
	Expired          bool      `json:"expired"`
	Fingerprint      string    `json:"fingerprint"` // hex SHA-256 of the DER certificate
	Issuer           string    `json:"issuer"`
	Serial           string    `json:"serial"` // hex
	KeyType          string    `json:"key_type"`
	// IPv6Prefix is a CA's mesh IPv6 prefix ("" for a node certificate or
	// an IPv4-only CA).
	IPv6Prefix string `json:"ipv6_prefix,omitempty"`
}

func runCertShow(w io.Writer, a certShowArgs) error {
	data, err := pkiReadInput(a.file, a.stdin)
	if err != nil {
		return err
	}
	var (
		cert *x509.Certificate
		id   *pki.Identity
	)
	if nc, nerr := pki.ParseNodeCertPEM(data); nerr == nil {
		cert, id = nc.Cert, &nc.Identity
	} else {
		c, err := pki.ParseCertPEM(data)
		if err != nil {
			return fmt.Errorf("%s: %w", a.file, err)
		}
		if !c.IsCA {
			return fmt.Errorf("%s: %w", a.file, nerr)
		}
		cert = c
	}
	now := time.Now()
	if !a.json {
		pkiPrintFields(w, pkiCertFields(now, cert, id))
		return nil
	}
	out := certShowJSON{
		SchemaVersion:    1,
		Kind:             "ca",
		Name:             cert.Subject.CommonName,
		Addresses:        []string{},
		Groups:           []string{},
		Subnets:          []string{},
		NotBefore:        cert.NotBefore.UTC(),
		NotAfter:         cert.NotAfter.UTC(),
		ExpiresIn:        pkiHumanDuration(cert.NotAfter.Sub(now)),
		ExpiresInSeconds: int64(cert.NotAfter.Sub(now) / time.Second),
		Expired:          now.After(cert.NotAfter),
		Fingerprint:      pki.Fingerprint(cert.Raw),
		Issuer:           cert.Issuer.CommonName,
		Serial:           cert.SerialNumber.Text(16),
		KeyType:          pkiKeyTypeName(cert),
	}
	if p6, err := pki.MeshPrefix6(cert); id == nil && err == nil && p6.IsValid() {
		out.IPv6Prefix = p6.String()
	}
	if id != nil {
		out.Kind = "node"
		out.Role = id.Role()
		out.Addresses = pkiAddresses(*id)
		out.Groups = append(out.Groups, id.Groups...)
		for _, s := range id.Subnets {
			out.Subnets = append(out.Subnets, s.String())
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// pkiCertFields are the key: value lines describing a certificate; id is nil
// for a CA certificate.
func pkiCertFields(now time.Time, cert *x509.Certificate, id *pki.Identity) []pkiField {
	fields := []pkiField{{"name", cert.Subject.CommonName}}
	if id != nil {
		none := func(s []string) string {
			if len(s) == 0 {
				return "(none)"
			}
			return strings.Join(s, ", ")
		}
		subnets := make([]string, 0, len(id.Subnets))
		for _, s := range id.Subnets {
			subnets = append(subnets, s.String())
		}
		fields = append(fields,
			pkiField{"kind", "node"},
			pkiField{"role", id.Role()},
			pkiField{"addresses", strings.Join(pkiAddresses(*id), ", ")},
			pkiField{"groups", none(id.Groups)},
			pkiField{"subnets", none(subnets)},
		)
	} else {
		p6, err := pki.MeshPrefix6(cert)
		v := pkiPrefix6(p6)
		if err != nil {
			v = "(malformed: " + err.Error() + ")"
		}
		fields = append(fields, pkiField{"kind", "ca"}, pkiField{"ipv6 prefix", v})
	}
	return append(fields,
		pkiField{"not before", cert.NotBefore.UTC().Format(time.RFC3339)},
		pkiField{"not after", pkiValidity(now, cert)},
		pkiField{"fingerprint", pki.Fingerprint(cert.Raw)},
		pkiField{"issuer", cert.Issuer.CommonName},
		pkiField{"serial", cert.SerialNumber.Text(16)},
		pkiField{"key type", pkiKeyTypeName(cert)},
	)
}

func pkiAddresses(id pki.Identity) []string {
	out := []string{id.Addr.String()}
	if id.Addr6.IsValid() {
		out = append(out, id.Addr6.String())
	}
	return out
}

func pkiKeyTypeName(cert *x509.Certificate) string {
	kt, err := pki.KeyTypeOf(cert.PublicKey)
	if err != nil {
		return strings.ToLower(cert.PublicKeyAlgorithm.String())
	}
	return kt.String()
}

// pkiValidity is NotAfter with a reading for people: "(expires in 364d)",
// "(expired 3d ago)" or "(not valid for another 2h)".
func pkiValidity(now time.Time, cert *x509.Certificate) string {
	s := cert.NotAfter.UTC().Format(time.RFC3339)
	switch {
	case now.Before(cert.NotBefore):
		return s + " (not valid for another " + pkiHumanDuration(cert.NotBefore.Sub(now)) + ")"
	case now.After(cert.NotAfter):
		return s + " (expired " + pkiHumanDuration(now.Sub(cert.NotAfter)) + " ago)"
	default:
		return s + " (expires in " + pkiHumanDuration(cert.NotAfter.Sub(now)) + ")"
	}
}

// pkiHumanDuration rounds down to the largest whole unit: 364d, 23h, 5m, 9s.
func pkiHumanDuration(d time.Duration) string {
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%s%dd", sign, d/(24*time.Hour))
	case d >= time.Hour:
		return fmt.Sprintf("%s%dh", sign, d/time.Hour)
	case d >= time.Minute:
		return fmt.Sprintf("%s%dm", sign, d/time.Minute)
	default:
		return fmt.Sprintf("%s%ds", sign, d/time.Second)
	}
}

// pkiField is one "key: value" output line.
type pkiField struct{ key, value string }

// pkiPrintFields writes aligned "key: value" lines for people.
func pkiPrintFields(w io.Writer, fields []pkiField) {
	width := 0
	for _, f := range fields {
		width = max(width, len(f.key))
	}
	for _, f := range fields {
		fmt.Fprintf(w, "%-*s %s\n", width+1, f.key+":", f.value)
	}
}

// pkiUsage is an invalid-invocation error (exit code 2).
func pkiUsage(format string, args ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, args...)}
}

// pkiRefuseExisting returns the "exists; pass --force" error if path exists.
func pkiRefuseExisting(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return pkiCLIError(&fs.PathError{Op: "write", Path: path, Err: pki.ErrExists})
	}
	return nil
}

// pkiCLIError turns pki errors that have a better one-line form for the
// command line into it.
func pkiCLIError(err error) error {
	var pe *fs.PathError
	if errors.Is(err, pki.ErrExists) && errors.As(err, &pe) {
		return fmt.Errorf("%s exists; pass --force to overwrite", pkiDisplayPath(pe.Path))
	}
	return err
}

// pkiDisplayPath shows a bare file name as ./name so that it reads as a path.
func pkiDisplayPath(p string) string {
	if !filepath.IsAbs(p) && filepath.Dir(p) == "." && !strings.HasPrefix(p, ".") {
		return "./" + p
	}
	return p
}

// pkiStdio on a path flag or argument means stdin (an input) or stdout (an
// output); it never names a file or directory.
const pkiStdio = "-"

// maxPEMInput bounds a PEM input read from stdin (certificates and requests
// are a few kilobytes; a CRL of many thousand entries fits too).
const maxPEMInput = 4 << 20

// pkiReadInput reads path, or stdin when path is "-".
func pkiReadInput(path string, stdin io.Reader) ([]byte, error) {
	if path != pkiStdio {
		return os.ReadFile(path)
	}
	if stdin == nil {
		stdin = os.Stdin
	}
	data, err := io.ReadAll(io.LimitReader(stdin, maxPEMInput+1))
	if err != nil {
		return nil, fmt.Errorf("stdin: %w", err)
	}
	if len(data) > maxPEMInput {
		return nil, fmt.Errorf("stdin: more than %d bytes, not a PEM certificate or request", maxPEMInput)
	}
	return data, nil
}

// pkiNoStdio refuses "-" for a directory flag: there is no directory on
// stdin, and meshctl never creates one named "-".
func pkiNoStdio(flag, value string) error {
	if value == pkiStdio {
		return pkiUsage("%s -: a directory is needed here (stdin/stdout is not one)", flag)
	}
	return nil
}
