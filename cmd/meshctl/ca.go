package main

// meshctl ca: the offline certificate authority. These commands run on the
// operator's machine that holds ca.key; they never talk to a daemon.

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/pki"
)

func init() { register(newCACmd) }

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Create the mesh certificate authority and revoke certificates (offline)",
		Long: `The mesh certificate authority signs every node certificate. Keep its
directory (ca.key above all) on an offline machine; nodes need only ca.crt.`,
	}
	cmd.AddCommand(newCAInitCmd(), newCARevokeCmd(), newCAListCmd())
	return cmd
}

// caInitArgs are the flags of "meshctl ca init".
type caInitArgs struct {
	name     string
	dir      string
	duration time.Duration
	keyType  string
	prefix6  string
	domain   string
	force    bool
}

func newCAInitCmd() *cobra.Command {
	var a caInitArgs
	cmd := &cobra.Command{
		Use:   "init --name MESH [--dir DIR]",
		Short: "Create a new mesh CA: DIR/ca.crt and DIR/ca.key (0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCAInit(cmd.OutOrStdout(), a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.name, "name", "", "mesh name, the CA's common name (required)")
	f.StringVar(&a.dir, "dir", ".", "directory for ca.crt and ca.key (created 0700 if missing)")
	durationVar(f, &a.duration, "duration", 3650*day, "how long the CA is valid")
	f.StringVar(&a.keyType, "key-type", pki.KeyECDSAP256.String(), "ecdsa-p256 or ed25519")
	f.StringVar(&a.domain, "domain", pki.DefaultMeshDomain, "the mesh domain: every node is named <node>.<domain> by meshd's resolver (a lower-case DNS name; keep it under .internal, the name space reserved for private use); when rotating the CA, give the old CA's domain")
	f.StringVar(&a.prefix6, "ip6-prefix", ip6Auto, `the mesh's IPv6 overlay prefix, a unique local /48 every node address is signed in: "auto" picks a random fdXX:XXXX:XXXX::/48 (RFC 4193), "none" makes an IPv4-only mesh; when rotating the CA, give the old CA's prefix`)
	f.BoolVar(&a.force, "force", false, "replace an existing CA (every issued certificate stops verifying)")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func runCAInit(w io.Writer, a caInitArgs) error {
	if err := pkiNoStdio("--dir", a.dir); err != nil {
		return err
	}
	kt, err := pki.ParseKeyType(a.keyType)
	if err != nil {
		return pkiUsage("--key-type %q: want ecdsa-p256 or ed25519", a.keyType)
	}
	if a.duration <= 0 {
		return pkiUsage("--duration %v: must be positive", a.duration)
	}
	var prefix6 netip.Prefix
	switch a.prefix6 {
	case ip6None:
	case "", ip6Auto:
		if prefix6, err = pki.RandomMeshPrefix6(); err != nil {
			return err
		}
	default:
		p, perr := netip.ParsePrefix(a.prefix6)
		if perr == nil {
			perr = pki.ValidateMeshPrefix6(p)
		}
		if perr != nil {
			return pkiUsage(`--ip6-prefix %q: want "auto", "none" or a unique local /48 such as fd7a:115c:a1e0::/48`, a.prefix6)
		}
		prefix6 = p
	}
	if !a.force {
		// Fail before generating anything.
		for _, f := range []string{pki.CAKeyFile, pki.CACertFile} {
			if err := pkiRefuseExisting(filepath.Join(a.dir, f)); err != nil {
				return err
			}
		}
	}
	if !pki.ValidMeshDomain(a.domain) {
		return pkiUsage("--domain %q: want a lower-case DNS name of two or more labels, e.g. %s", a.domain, pki.DefaultMeshDomain)
	}
	ca, err := pki.NewCAWithDomain(a.name, a.duration, kt, prefix6, a.domain)
	if err != nil {
		return pkiCLIError(err)
	}
	if err := ca.Save(a.dir, a.force); err != nil {
		return pkiCLIError(err)
	}
	now := time.Now()
	pkiPrintFields(w, []pkiField{
		{"ca", ca.Cert.Subject.CommonName},
		{"certificate", pkiDisplayPath(filepath.Join(a.dir, pki.CACertFile)) + " (give this to every node)"},
		{"key", pkiDisplayPath(filepath.Join(a.dir, pki.CAKeyFile)) + " (0600; keep it offline)"},
		{"key type", kt.String()},
		{"domain", pki.MeshDomain(ca.Cert)},
		{"ipv6 prefix", pkiPrefix6(ca.Prefix6())},
		{"not after", pkiValidity(now, ca.Cert)},
		{"fingerprint", pki.Fingerprint(ca.Cert.Raw)},
	})
	return nil
}

// caRevokeArgs are the flags of "meshctl ca revoke".
type caRevokeArgs struct {
	caDir    string
	reason   string
	validity time.Duration
	serials  []string
	names    []string
	files    []string
	stdin    io.Reader // a file "-"
}

func newCARevokeCmd() *cobra.Command {
	var a caRevokeArgs
	cmd := &cobra.Command{
		Use:   "revoke --ca-dir DIR (CERTFILE... | --serial HEX | --name NODE)",
		Short: "Revoke certificates: add them to DIR/crl.pem (earlier entries are kept)",
		Long: `Revoke adds certificates to the CA's revocation list DIR/crl.pem and signs it
again with a higher number. Name them by file (- reads one from stdin), by
serial (hex, as "cert show" prints it), or by node name: every unexpired
certificate of that name in the CA's index (DIR/index.json, kept by "cert
sign"). A lost node whose certificate file is gone is revoked by --name or
--serial. Distribute crl.pem to one node or coordinator; newer lists spread
through the mesh, and every node checks the CA signature before using one.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a.files, a.stdin = args, cmd.InOrStdin()
			return runCARevoke(cmd.OutOrStdout(), a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.caDir, "ca-dir", "", "the CA directory (ca.crt, ca.key, crl.pem, index.json) (required)")
	f.StringSliceVar(&a.serials, "serial", nil, "serial numbers (hex) to revoke; works without an index")
	f.StringSliceVar(&a.names, "name", nil, "node names: revoke every unexpired certificate of that name in the CA's index")
	f.StringVar(&a.reason, "reason", "", `why, as free text; an RFC 5280 reason name ("keyCompromise", "superseded", "cessationOfOperation") also sets the reason code`)
	durationVar(f, &a.validity, "crl-validity", pki.DefaultCRLValidity, "NextUpdate of the new list (informational: meshd keeps using an older list)")
	_ = cmd.MarkFlagRequired("ca-dir")
	return cmd
}

// revokeTarget is one certificate to revoke, as the output names it.
type revokeTarget struct {
	serial *big.Int
	label  string // "node-b (serial 1f...)"
}

func runCARevoke(w io.Writer, a caRevokeArgs) error {
	if a.validity <= 0 {
		return pkiUsage("--crl-validity %v: must be positive", a.validity)
	}
	if err := pkiNoStdio("--ca-dir", a.caDir); err != nil {
		return err
	}
	if len(a.files) == 0 && len(a.serials) == 0 && len(a.names) == 0 {
		return pkiUsage("name what to revoke: certificate files, --serial HEX or --name NODE")
	}
	if i := slices.Index(a.files, pkiStdio); i >= 0 && slices.Contains(a.files[i+1:], pkiStdio) {
		return pkiUsage("- (stdin) given twice")
	}
	serials := make([]*big.Int, 0, len(a.serials))
	for _, s := range a.serials {
		n, err := pki.ParseSerial(s)
		if err != nil {
			return pkiUsage("--serial %q: want the hex serial cert show prints", s)
		}
		serials = append(serials, n)
	}
	for _, n := range a.names {
		if !pki.ValidName(n) {
			return pkiUsage("--name %q: want 1-63 of a-z 0-9 . - starting with a letter or digit", n)
		}
	}
	ca, err := pki.LoadCA(a.caDir)
	if err != nil {
		return pkiCLIError(err)
	}
	crlPath := filepath.Join(a.caDir, pki.CRLFile)
	var prev *pki.CRL
	switch data, err := os.ReadFile(crlPath); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		if prev, err = pki.ParseCRLPEM(data); err != nil {
			return fmt.Errorf("%s: %w", pkiDisplayPath(crlPath), err)
		}
	}
	listed := map[string]bool{}
	for _, e := range prev.Entries() {
		listed[e.Serial.String()] = true
	}

	// The index is needed for --name and, when present, names --serial's
	// certificates; by serial works without it.
	idx, err := pki.LoadIndex(a.caDir)
	switch {
	case errors.Is(err, pki.ErrNoIndex):
		if len(a.names) > 0 {
			return fmt.Errorf("--name needs the CA's index of issued certificates, and %s has none (it predates the index, or issued nothing since); revoke by --serial or by certificate file", pkiDisplayPath(filepath.Join(a.caDir, pki.IndexFile)))
		}
		idx = nil
	case err != nil:
		return err
	}

	var targets []revokeTarget
	certs := make([]*x509.Certificate, 0, len(a.files))
	for _, file := range a.files {
		data, err := pkiReadInput(file, a.stdin)
		if err != nil {
			return err
		}
		c, err := pki.ParseCertPEM(data)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		certs = append(certs, c)
		targets = append(targets, revokeTarget{c.SerialNumber, fmt.Sprintf("%s (serial %s)", c.Subject.CommonName, c.SerialNumber.Text(16))})
	}
	for _, n := range serials {
		label := fmt.Sprintf("serial %s", n.Text(16))
		if idx != nil {
			if e, ok := idx.BySerial(n); ok {
				label = fmt.Sprintf("%s (serial %s)", e.Name, e.Serial)
			} else {
				label += " (not in the index)"
			}
		}
		targets = append(targets, revokeTarget{n, label})
	}
	now := time.Now()
	for _, name := range a.names {
		cur := idx.Current(name, now)
		if len(cur) == 0 {
			return fmt.Errorf("--name %s: the index has no unexpired certificate of that name", name)
		}
		for _, e := range cur {
			n, _ := pki.ParseSerial(e.Serial) // validated by LoadIndex
			serials = append(serials, n)
			targets = append(targets, revokeTarget{n, fmt.Sprintf("%s (serial %s, not after %s)", e.Name, e.Serial, e.NotAfter.UTC().Format(time.RFC3339))})
		}
	}

	// Revoke checks the files' issuer; serials are this CA's by the index
	// (or the operator's word).
	crl, err := ca.Revoke(prev, certs, a.reason, a.validity)
	if err != nil {
		return pkiCLIError(err)
	}
	if len(serials) > 0 {
		// One list, one number: redo it with the serials on top of prev.
		all := make([]*big.Int, 0, len(certs)+len(serials))
		for _, c := range certs {
			all = append(all, c.SerialNumber)
		}
		if crl, err = ca.RevokeSerials(prev, append(all, serials...), a.reason, a.validity); err != nil {
			return pkiCLIError(err)
		}
	}
	// Replacing crl.pem is the point of the command; the write is atomic.
	if err := pki.WriteFile(crlPath, crl.PEM(), 0o644, true); err != nil {
		return err
	}
	var fields []pkiField
	for _, t := range targets {
		v := t.label
		if listed[t.serial.String()] {
			v += " (already listed)"
		}
		fields = append(fields, pkiField{"revoked", v})
	}
	fields = append(fields,
		pkiField{"crl", pkiDisplayPath(crlPath)},
		pkiField{"number", crl.Number().String()},
		pkiField{"entries", fmt.Sprint(len(crl.Entries()))},
		pkiField{"next update", crl.List.NextUpdate.UTC().Format(time.RFC3339)},
	)
	pkiPrintFields(w, fields)
	return nil
}
