package pki

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestThreatModelNamesRealTests: every test or fuzz target the "Threat
// model" section of docs/pki.md cites exists in the module, so the claims
// keep pointing at what holds them.
func TestThreatModelNamesRealTests(t *testing.T) {
	doc, err := os.ReadFile("../docs/pki.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Threat model\n")
	if !ok {
		t.Fatal(`docs/pki.md has no "## Threat model" section`)
	}
	if next := strings.Index(section, "\n## "); next >= 0 {
		section = section[:next]
	}
	cited := map[string]bool{}
	for _, m := range regexp.MustCompile(`\b(?:Test|Fuzz)[A-Z][A-Za-z0-9_]*`).FindAllString(section, -1) {
		cited[m] = false
	}
	if len(cited) < 20 {
		t.Fatalf("the threat model cites only %d tests", len(cited))
	}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]*)\(`)
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "artifacts" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range decl.FindAllSubmatch(b, -1) {
			if _, ok := cited[string(m[1])]; ok {
				cited[string(m[1])] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, found := range cited {
		if !found {
			t.Errorf("docs/pki.md threat model cites %s, which no _test.go file declares", name)
		}
	}
}
