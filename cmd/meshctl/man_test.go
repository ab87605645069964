package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestManPages: `meshctl man DIR` writes a page for meshctl and for every
// visible subcommand, each naming the command, its synopsis and every flag
// it takes, and linking its parent.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	if out, err := runConfigCmd(t, "man", dir); err != nil {
		t.Fatalf("meshctl man: %v\n%s", err, out)
	}
	root := newRootCmd()
	root.InitDefaultCompletionCmd()
	cmds := manCommands(root)
	files, _ := filepath.Glob(filepath.Join(dir, "*.1"))
	if len(files) != len(cmds) {
		t.Errorf("%d pages for %d commands: %v", len(files), len(cmds), files)
	}
	wantPages := []string{"meshctl", "meshctl-config-check", "meshctl-status", "meshctl-cert-sign", "meshctl-completion-zsh"}
	for _, c := range cmds {
		b, err := os.ReadFile(filepath.Join(dir, manName(c)+".1"))
		if err != nil {
			t.Errorf("no page for %q: %v", c.CommandPath(), err)
			continue
		}
		page := string(b)
		wantPages = removeString(wantPages, manName(c))
		if !strings.HasPrefix(page, `.TH "`+strings.ToUpper(manName(c))+`" 1`) || !strings.Contains(page, ".SH SYNOPSIS\n") {
			t.Errorf("%s: no title or synopsis:\n%s", manName(c), page)
		}
		c.NonInheritedFlags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden && f.Name != "help" && !strings.Contains(page, `\fB\-\-`+roffEscape(f.Name)+`\fR`) {
				t.Errorf("%s does not document --%s", manName(c), f.Name)
			}
		})
		if c.HasParent() && !strings.Contains(page, `\fB`+roffEscape(manName(c.Parent()))+`\fR(1)`) {
			t.Errorf("%s does not refer to its parent", manName(c))
		}
		for _, line := range strings.Split(page, "\n") {
			if strings.HasPrefix(line, ".") && !strings.HasPrefix(line, ".TH") && !strings.HasPrefix(line, ".SH") &&
				!strings.HasPrefix(line, ".TP") && !strings.HasPrefix(line, ".PP") && !strings.HasPrefix(line, ".B ") &&
				!strings.HasPrefix(line, ".RS") && !strings.HasPrefix(line, ".RE") && line != ".nf" && line != ".fi" {
				t.Errorf("%s: stray request %q (unescaped text?)", manName(c), line)
			}
		}
	}
	if len(wantPages) > 0 {
		t.Errorf("missing pages %v", wantPages)
	}
}

func removeString(list []string, s string) []string {
	out := list[:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}
