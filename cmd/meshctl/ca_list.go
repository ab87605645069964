package main

// meshctl ca list: what the CA issued (its index) and what it revoked.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshd/meshd/pki"
)

// caListArgs are the flags of "meshctl ca list".
type caListArgs struct {
	caDir string
	name  string
	json  bool
}

func newCAListCmd() *cobra.Command {
	var a caListArgs
	cmd := &cobra.Command{
		Use:   "list --ca-dir DIR [--name NODE]",
		Short: "List the certificates the CA issued (DIR/index.json) with their state: valid, expired or revoked",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCAList(cmd.OutOrStdout(), a)
		},
	}
	f := cmd.Flags()
	f.StringVar(&a.caDir, "ca-dir", "", "the CA directory (required)")
	f.StringVar(&a.name, "name", "", "only the certificates of this node")
	f.BoolVar(&a.json, "json", false, "print JSON (with schema_version) instead of a table")
	_ = cmd.MarkFlagRequired("ca-dir")
	return cmd
}

// caListJSON is the --json output of "meshctl ca list". Fields are only
// ever added; a change of meaning bumps schema_version.
type caListJSON struct {
	SchemaVersion int             `json:"schema_version"`
	Certificates  []caListJSONRow `json:"certificates"`
}

type caListJSONRow struct {
	Serial      string    `json:"serial"`
	Name        string    `json:"name"`
	Role        string    `json:"role"`
	NotAfter    time.Time `json:"not_after"`
	Issued      time.Time `json:"issued"`
	Fingerprint string    `json:"fingerprint"`
	State       string    `json:"state"` // "valid", "expired" or "revoked"
}

func runCAList(w io.Writer, a caListArgs) error {
	if err := pkiNoStdio("--ca-dir", a.caDir); err != nil {
		return err
	}
	idx, err := pki.LoadIndex(a.caDir)
	if errors.Is(err, pki.ErrNoIndex) {
		return fmt.Errorf("%s has no index of issued certificates (it predates the index, or issued nothing since)", pkiDisplayPath(filepath.Join(a.caDir, pki.IndexFile)))
	}
	if err != nil {
		return err
	}
	revoked := map[string]bool{}
	crlPath := filepath.Join(a.caDir, pki.CRLFile)
	switch data, err := os.ReadFile(crlPath); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		crl, err := pki.ParseCRLPEM(data)
		if err != nil {
			return fmt.Errorf("%s: %w", pkiDisplayPath(crlPath), err)
		}
		for _, e := range crl.Entries() {
			revoked[e.Serial.Text(16)] = true
		}
	}
	now := time.Now()
	out := caListJSON{SchemaVersion: 1, Certificates: []caListJSONRow{}}
	for _, e := range idx.Certificates {
		if a.name != "" && e.Name != a.name {
			continue
		}
		state := "valid"
		switch {
		case revoked[e.Serial]:
			state = "revoked"
		case !now.Before(e.NotAfter):
			state = "expired"
		}
		out.Certificates = append(out.Certificates, caListJSONRow{Serial: e.Serial, Name: e.Name, Role: e.Role,
			NotAfter: e.NotAfter.UTC(), Issued: e.Issued.UTC(), Fingerprint: e.Fingerprint, State: state})
	}
	if a.json {
		return printJSONDoc(w, out)
	}
	tw := newTable(w)
	row(tw, "SERIAL", "NAME", "ROLE", "NOT AFTER", "STATE")
	for _, r := range out.Certificates {
		row(tw, r.Serial, r.Name, r.Role, r.NotAfter.Format(time.RFC3339), r.State)
	}
	return tw.Flush()
}
