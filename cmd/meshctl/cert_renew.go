package main

// meshctl cert renew (on the node) and cert sign --renew (at the CA): a new
// key for the same identity, without retyping it and without the CA being
// able to widen it by mistake. The live key is replaced only by cert install,
// once the new certificate exists and matches the new key.

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/pki"
)

// certRenewArgs are the flags of "meshctl cert renew".
type certRenewArgs struct {
	cert    string
	key     string
	dir     string
	keyType string
	force   bool
	stdin   io.Reader
}

func newCertRenewCmd() *cobra.Command {
	var a certRenewArgs
	cmd := &cobra.Command{
		Use:   "renew --cert NODE.crt [--key NODE.key] [--dir DIR]",
		Short: "Make a new key (DIR/NODE.new.key, 0600) and a renewal request (DIR/NODE.new.csr) for the identity of NODE.crt",
		Long: `Run this on the node. The request carries the current certificate's name,
addresses, groups, subnets and role, and the current key's signature over
the new key (the CA renews only for the holder of the current key); sign it
on the CA machine with
"meshctl cert sign --ca-dir CA --csr NODE.new.csr --renew", then install the
new certificate with "meshctl cert install --cert NODE.crt NEW.crt" and reload
meshd. The live key and certificate are not touched until cert install.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a.stdin = cmd.InOrStdin()
			return runCertRenew(cmd.OutOrStdout(), a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.cert, "cert", "", "the node's current certificate (required; - reads it from stdin)")
	f.StringVar(&a.key, "key", "", "the node's current key, which signs the request's proof (default: --cert with .key for .crt)")
	f.StringVar(&a.dir, "dir", "", "directory for NODE.new.key and NODE.new.csr (default: the certificate's directory)")
	f.StringVar(&a.keyType, "key-type", "", "key type of the new key (default: the current certificate's)")
	f.BoolVar(&a.force, "force", false, "replace an existing NODE.new.key and NODE.new.csr")
	_ = cmd.MarkFlagRequired("cert")
	return cmd
}

func runCertRenew(w io.Writer, a certRenewArgs) error {
	if err := pkiNoStdio("--dir", a.dir); err != nil {
		return err
	}
	if a.dir == "" {
		if a.cert == pkiStdio {
			return pkiUsage("--cert - needs --dir for the new key")
		}
		a.dir = filepath.Dir(a.cert)
	}
	if a.key == "" {
		if a.cert == pkiStdio || !strings.HasSuffix(a.cert, ".crt") {
			return pkiUsage("give --key: the current key cannot be found from --cert %s", a.cert)
		}
		a.key = strings.TrimSuffix(a.cert, ".crt") + ".key"
	}
	cur, _, err := pkiReadNodeCert(a.cert, a.stdin)
	if err != nil {
		return err
	}
	curKey, err := pkiReadKeyFor(a.key, cur, a.cert)
	if err != nil {
		return err
	}
	kt, err := pki.KeyTypeOf(cur.Cert.PublicKey)
	if a.keyType != "" {
		kt, err = pki.ParseKeyType(a.keyType)
		if err != nil {
			return pkiUsage("--key-type %q: want ecdsa-p256 or ed25519", a.keyType)
		}
	}
	if err != nil {
		return err
	}
	name := cur.Identity.Name
	keyPath := filepath.Join(a.dir, name+".new.key")
	csrPath := filepath.Join(a.dir, name+".new.csr")
	if !a.force {
		for _, p := range []string{keyPath, csrPath} {
			if err := pkiRefuseExisting(p); err != nil {
				return err
			}
		}
	}
	key, err := pki.GenerateKey(kt)
	if err != nil {
		return err
	}
	csr, err := pki.CreateRenewalCSR(key, cur.Identity, cur, curKey)
	if err != nil {
		return pkiCLIError(err)
	}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return err
	}
	if err := pki.WriteKeyFile(keyPath, key, a.force); err != nil {
		return pkiCLIError(err)
	}
	if err := pki.WriteFile(csrPath, csr, 0o644, a.force); err != nil {
		if !a.force {
			_ = os.Remove(keyPath)
		}
		return pkiCLIError(err)
	}
	pkiPrintFields(w, []pkiField{
		{"name", name},
		{"renews", fmt.Sprintf("serial %s, %s", cur.Cert.SerialNumber.Text(16), pkiValidity(time.Now(), cur.Cert))},
		{"new key", pkiDisplayPath(keyPath) + " (0600; the live key is unchanged)"},
		{"request", pkiDisplayPath(csrPath)},
		{"next", fmt.Sprintf("meshctl cert sign --ca-dir CA --csr %s.new.csr --renew (on the CA machine), then meshctl cert install --cert %s NEW.crt", name, pkiDisplayPath(a.cert))},
	})
	return nil
}

// runCertSignRenew is cert sign --renew: the identity comes from the
// certificate being renewed, and the request must ask for exactly it.
func runCertSignRenew(w io.Writer, a certSignArgs) error {
	if a.csr == "" {
		return pkiUsage("--renew signs a request made by 'meshctl cert renew': give --csr FILE")
	}
	var given []string
	for flag, set := range map[string]bool{"--name": a.name != "", "--ip": a.ip != "", "--ip6": a.ip6 != "" && a.ip6 != ip6Auto,
		"--groups": len(a.groups) > 0, "--subnets": len(a.subnets) > 0, "--exit": a.exit, "--coordinator": a.coord} {
		if set {
			given = append(given, flag)
		}
	}
	if len(given) > 0 {
		return pkiUsage("--renew keeps the identity of the certificate it renews; drop %s (to change it, sign a new certificate)", strings.Join(given, ", "))
	}
	csrPEM, err := pkiReadInput(a.csr, a.stdin)
	if err != nil {
		return err
	}
	csr, err := pki.ParseCSR(csrPEM)
	if err != nil {
		return pkiCLIError(err)
	}
	want, ok, err := pki.CSRIdentity(csr)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is not a renewal request (it carries no identity): make it with 'meshctl cert renew', or sign it without --renew", a.csr)
	}
	ca, err := pki.LoadCA(a.caDir)
	if err != nil {
		return pkiCLIError(err)
	}
	prev, err := renewedCert(a, want.Name)
	if err != nil {
		return err
	}
	if err := refuseRevoked(a.caDir, prev); err != nil {
		return err
	}
	var prevIssuers []*x509.Certificate
	if a.prevCA != "" {
		if a.previous == "" {
			return pkiUsage("--previous-ca needs --previous (the certificate it issued)")
		}
		if prevIssuers, err = pkiReadCAs(a.prevCA); err != nil {
			return err
		}
	}
	nc, err := ca.Renew(csrPEM, prev, a.duration, prevIssuers...)
	if err != nil {
		return pkiCLIError(err)
	}
	return pkiDeliver(w, a, nc, "")
}

// renewedCert is the certificate a renewal of name replaces: --previous, or
// the latest of that name in the CA's index.
func renewedCert(a certSignArgs, name string) (*pki.NodeCert, error) {
	if a.previous != "" {
		nc, _, err := pkiReadNodeCert(a.previous, nil)
		if err != nil {
			return nil, err
		}
		if nc.Identity.Name != name {
			return nil, fmt.Errorf("--previous %s is for %q, the request for %q", a.previous, nc.Identity.Name, name)
		}
		return nc, nil
	}
	idx, err := pki.LoadIndex(a.caDir)
	if errors.Is(err, pki.ErrNoIndex) {
		return nil, fmt.Errorf("--renew needs the certificate being renewed: %s has no index of issued certificates; give --previous OLD.crt", pkiDisplayPath(a.caDir))
	}
	if err != nil {
		return nil, err
	}
	e, ok := idx.Latest(name)
	if !ok {
		return nil, fmt.Errorf("the CA's index has no certificate named %q to renew; give --previous OLD.crt, or sign a new certificate", name)
	}
	return e.NodeCert()
}

// refuseRevoked fails if nc is on the CA directory's CRL: a revoked
// certificate is not renewed.
func refuseRevoked(caDir string, nc *pki.NodeCert) error {
	data, err := os.ReadFile(filepath.Join(caDir, pki.CRLFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	crl, err := pki.ParseCRLPEM(data)
	if err != nil {
		return fmt.Errorf("%s: %w", pkiDisplayPath(filepath.Join(caDir, pki.CRLFile)), err)
	}
	for _, e := range crl.Entries() {
		if e.Serial.Cmp(nc.Cert.SerialNumber) == 0 {
			return fmt.Errorf("the certificate being renewed (%s, serial %s) is revoked; a revoked node gets a new certificate only by an explicit cert sign", nc.Identity.Name, nc.Cert.SerialNumber.Text(16))
		}
	}
	return nil
}
