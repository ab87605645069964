package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestConfigPage: meshd.toml(5) made from docs/configuration.md has an
// entry for every key of the reference and nothing roff would take for a
// request by accident.
func TestConfigPage(t *testing.T) {
	md, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	render(&b, string(md))
	page := b.String()
	keys := regexp.MustCompile("(?m)^\\| `([a-z_]+\\.[a-z_.\\[\\]]+)` \\|").FindAllStringSubmatch(string(md), -1)
	if len(keys) < 50 {
		t.Fatalf("found only %d keys in the reference", len(keys))
	}
	for _, k := range keys {
		if !strings.Contains(page, ".TP\n\\fB"+escape(k[1])+"\\fR (") {
			t.Errorf("meshd.toml(5) has no entry for %s", k[1])
		}
	}
	for _, sec := range []string{`.SH "[NODE]"`, `.SH "[FIREWALL]"`, `.SS "[coordinator.turn]"`, ".SH SEE ALSO"} {
		if !strings.Contains(page, sec+"\n") {
			t.Errorf("no section %s", sec)
		}
	}
	requests := regexp.MustCompile(`^\.(TH|SH|SS|PP|TP|IP|RS|RE|nf|fi|I|B|BR)( |$)`)
	for i, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, ".") && !requests.MatchString(line) {
			t.Errorf("line %d: stray request %q", i+1, line)
		}
		if strings.ContainsFunc(line, func(r rune) bool { return r > 127 }) {
			t.Errorf("line %d: non-ASCII text needs a glyph name: %q", i+1, line)
		}
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"a-b":       `a\-b`,
		".start":    `\&.start`,
		`back\sl`:   `back\esl`,
		"x → y":     `x \(-> y`,
		"em — dash": `em \(em dash`,
	} {
		if got := escape(in); got != want {
			t.Errorf("escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzRender: any markdown renders without panicking, and no text line
// becomes a roff request.
func FuzzRender(f *testing.F) {
	f.Add("# t\n\n| Key | Type | Default | Reload | Meaning |\n|---|---|---|---|---|\n| `a.b` | x |\n")
	f.Add("## [x]\n\n- item `c`\n\n```\n.code\n```\n.text\n'quote\n")
	f.Add("| a | b |\n|---|---|\n| `k` \\| x | y |\n")
	f.Fuzz(func(t *testing.T, md string) {
		var b strings.Builder
		render(&b, md)
		for _, line := range strings.Split(b.String(), "\n") {
			if strings.HasPrefix(line, "'") {
				t.Fatalf("line %q is a roff request", line)
			}
		}
	})
}
