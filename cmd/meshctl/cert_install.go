package main

// meshctl cert install: put a renewed certificate and its new key in place
// of the live pair, only once both exist and belong together.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/pki"
)

// certInstallArgs are the flags of "meshctl cert install".
type certInstallArgs struct {
	newCert string
	cert    string
	key     string
	newKey  string
	ca      string
	force   bool
	stdin   io.Reader
}

func newCertInstallCmd() *cobra.Command {
	var a certInstallArgs
	cmd := &cobra.Command{
		Use:   "install --cert NODE.crt NEW.crt",
		Short: "Replace the live certificate and key with a renewed certificate and the key cert renew made",
		Long: `Install checks that NEW.crt belongs to the new key (NODE.new.key next to
NODE.crt unless --new-key), binds the same identity as the live certificate
and, with --ca, is signed by a CA of that bundle. It then keeps the live pair
as NODE.crt.old and NODE.key.old, writes NEW.crt over NODE.crt (atomic rename)
and renames the new key over NODE.key. Reload meshd afterwards
("meshctl reload"); it re-handshakes its links with the new certificate.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a.newCert, a.stdin = args[0], cmd.InOrStdin()
			return runCertInstall(cmd.OutOrStdout(), a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.cert, "cert", "", "the live certificate, e.g. /etc/meshd/nas.crt (required)")
	f.StringVar(&a.key, "key", "", "the live key (default: --cert with .key for .crt)")
	f.StringVar(&a.newKey, "new-key", "", "the key cert renew made (default: NODE.new.key next to --cert)")
	f.StringVar(&a.ca, "ca", "", "check that the new certificate is signed by a CA of this bundle (pki.ca)")
	f.BoolVar(&a.force, "force", false, "install even if the identity differs from the live certificate's (meshd then needs a restart, not a reload)")
	_ = cmd.MarkFlagRequired("cert")
	return cmd
}

func runCertInstall(w io.Writer, a certInstallArgs) error {
	if a.cert == pkiStdio || a.key == pkiStdio || a.newKey == pkiStdio {
		return pkiUsage("--cert, --key and --new-key name files (only NEW.crt may be -)")
	}
	if a.key == "" {
		if !strings.HasSuffix(a.cert, ".crt") {
			return pkiUsage("--cert %s does not end in .crt: give --key", a.cert)
		}
		a.key = strings.TrimSuffix(a.cert, ".crt") + ".key"
	}
	nc, _, err := pkiReadNodeCert(a.newCert, a.stdin)
	if err != nil {
		return err
	}
	if a.newKey == "" {
		a.newKey = filepath.Join(filepath.Dir(a.cert), nc.Identity.Name+".new.key")
	}
	if _, err := pkiReadKeyFor(a.newKey, nc, a.newCert); err != nil {
		return err
	}
	cur, oldCertPEM, err := pkiReadNodeCert(a.cert, nil)
	if err != nil {
		return err
	}
	oldKeyPEM, err := os.ReadFile(a.key)
	if err != nil {
		return err
	}
	if !nc.Identity.Equal(cur.Identity) && !a.force {
		return fmt.Errorf("%s binds another identity than %s (a reload applies only a renewal of the same name, addresses, groups, subnets and role); pass --force to install it anyway and restart meshd", a.newCert, a.cert)
	}
	if a.ca != "" {
		cas, err := pkiReadCAs(a.ca)
		if err != nil {
			return err
		}
		signed := false
		for _, ca := range cas {
			signed = signed || nc.Cert.CheckSignatureFrom(ca) == nil
		}
		if !signed {
			return fmt.Errorf("%s is not signed by a CA in %s: %w", a.newCert, a.ca, pki.ErrUnknownCA)
		}
	}

	// Keep the live pair, then swap: the certificate by an atomic write, the
	// key by a rename. Either way round there is an instant where the two
	// disagree; meshd reads them only at start and on reload, and a failed
	// reload keeps the running pair.
	if err := pki.WriteFile(a.cert+".old", oldCertPEM, 0o644, true); err != nil {
		return err
	}
	if err := pki.WriteFile(a.key+".old", oldKeyPEM, 0o600, true); err != nil {
		return err
	}
	if err := pki.WriteFile(a.cert, nc.PEM(), 0o644, true); err != nil {
		return err
	}
	if err := os.Chmod(a.newKey, 0o600); err != nil {
		return err
	}
	if err := os.Rename(a.newKey, a.key); err != nil {
		_ = pki.WriteFile(a.cert, oldCertPEM, 0o644, true) // back to a matching pair
		return fmt.Errorf("install the new key: %w", err)
	}
	pkiPrintFields(w, append([]pkiField{
		{"installed", pkiDisplayPath(a.cert) + " and " + pkiDisplayPath(a.key)},
		{"previous", pkiDisplayPath(a.cert+".old") + " and " + pkiDisplayPath(a.key+".old")},
		{"next", "meshctl reload (meshd re-handshakes its links with the new certificate)"},
	}, pkiCertFields(time.Now(), nc.Cert, &nc.Identity)...))
	return nil
}
