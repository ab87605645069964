package main

// meshctl ca: the offline certificate authority. These commands run on the
// operator's machine that holds ca.key; they never talk to a daemon.

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	cmd.AddCommand(newCAInitCmd(), newCARevokeCmd())
	return cmd
}

// caInitArgs are the flags of "meshctl ca init".
type caInitArgs struct {
	name     string
	dir      string
	duration time.Duration
	keyType  string
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
	if !a.force {
		// Fail before generating anything.
		for _, f := range []string{pki.CAKeyFile, pki.CACertFile} {
			if err := pkiRefuseExisting(filepath.Join(a.dir, f)); err != nil {
				return err
			}
		}
	}
	ca, err := pki.NewCA(a.name, a.duration, kt)
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
	files    []string
	stdin    io.Reader // a file "-"
}

func newCARevokeCmd() *cobra.Command {
	var a caRevokeArgs
	cmd := &cobra.Command{
		Use:   "revoke --ca-dir DIR CERTFILE...",
		Short: "Revoke certificates: add them to DIR/crl.pem (earlier entries are kept)",
		Long: `Revoke adds the certificates to the CA's revocation list DIR/crl.pem and
signs it again with a higher number. Distribute crl.pem to one node or
coordinator; newer lists spread through the mesh, and every node checks the
CA signature before using one.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.files, a.stdin = args, cmd.InOrStdin()
			return runCARevoke(cmd.OutOrStdout(), a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.caDir, "ca-dir", "", "the CA directory (ca.crt, ca.key, crl.pem) (required)")
	f.StringVar(&a.reason, "reason", "", `why, as free text; an RFC 5280 reason name ("keyCompromise", "superseded", "cessationOfOperation") also sets the reason code`)
	durationVar(f, &a.validity, "crl-validity", pki.DefaultCRLValidity, "NextUpdate of the new list (informational: meshd keeps using an older list)")
	_ = cmd.MarkFlagRequired("ca-dir")
	return cmd
}

func runCARevoke(w io.Writer, a caRevokeArgs) error {
	if a.validity <= 0 {
		return pkiUsage("--crl-validity %v: must be positive", a.validity)
	}
	if err := pkiNoStdio("--ca-dir", a.caDir); err != nil {
		return err
	}
	if i := slices.Index(a.files, pkiStdio); i >= 0 && slices.Contains(a.files[i+1:], pkiStdio) {
		return pkiUsage("- (stdin) given twice")
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
	}
	crl, err := ca.Revoke(prev, certs, a.reason, a.validity)
	if err != nil {
		return pkiCLIError(err)
	}
	// Replacing crl.pem is the point of the command; the write is atomic.
	if err := pki.WriteFile(crlPath, crl.PEM(), 0o644, true); err != nil {
		return err
	}
	var fields []pkiField
	for _, c := range certs {
		v := fmt.Sprintf("%s (serial %s)", c.Subject.CommonName, c.SerialNumber.Text(16))
		if listed[c.SerialNumber.String()] {
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
