package main

// meshctl man DIR: the manual pages of meshctl, one per command (meshctl(1),
// meshctl-config-check(1), ...), written from the command tree itself so
// they cannot drift from --help. `make package` runs it; the packages ship
// the pages. A small roff writer rather than cobra/doc keeps go-md2man and
// blackfriday out of the module.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func init() { register(newManCmd) }

func newManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write meshctl's manual pages (section 1) into DIR",
		Hidden: true, // for packaging, not for daily use
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return writeManPages(cmd.Root(), args[0])
		},
	}
}

// manName is a command's page name: its path joined with '-'.
func manName(c *cobra.Command) string { return strings.ReplaceAll(c.CommandPath(), " ", "-") }

// manCommands returns c and every command under it that has a page.
func manCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, s := range c.Commands() {
		if s.Hidden || s.Name() == "help" || s.Deprecated != "" {
			continue
		}
		out = append(out, manCommands(s)...)
	}
	return out
}

// writeManPages writes one page per command into dir.
func writeManPages(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, c := range manCommands(root) {
		path := filepath.Join(dir, manName(c)+".1")
		if err := os.WriteFile(path, []byte(manPage(c)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// roffEscape makes text safe as roff body text.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}

// roffText writes cobra help text: paragraphs at blank lines, indented
// lines (examples) verbatim.
func roffText(b *strings.Builder, text string) {
	inExample := false
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		lines := strings.Split(para, "\n")
		example := strings.HasPrefix(lines[0], "  ") || strings.HasPrefix(lines[0], "\t")
		switch {
		case example && !inExample:
			b.WriteString(".PP\n.RS 4\n.nf\n")
		case example:
			b.WriteString("\n")
		case inExample:
			b.WriteString(".fi\n.RE\n.PP\n")
		default:
			b.WriteString(".PP\n")
		}
		inExample = example
		for _, l := range lines {
			if example {
				l = strings.TrimSpace(l)
			}
			b.WriteString(roffEscape(l) + "\n")
		}
	}
	if inExample {
		b.WriteString(".fi\n.RE\n")
	}
}

func roffFlags(b *strings.Builder, title string, fs *pflag.FlagSet) {
	var flags []*pflag.Flag
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Name != "help" {
			flags = append(flags, f)
		}
	})
	if len(flags) == 0 {
		return
	}
	fmt.Fprintf(b, ".SH %s\n", title)
	for _, f := range flags {
		varname, usage := pflag.UnquoteUsage(f)
		b.WriteString(".TP\n")
		if f.Shorthand != "" {
			fmt.Fprintf(b, `\fB\-%s\fR, `, f.Shorthand)
		}
		fmt.Fprintf(b, `\fB\-\-%s\fR`, roffEscape(f.Name))
		if varname != "" {
			fmt.Fprintf(b, ` \fI%s\fR`, roffEscape(varname))
		}
		b.WriteString("\n" + roffEscape(usage))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" && f.DefValue != "0" {
			fmt.Fprintf(b, " (default %s)", roffEscape(f.DefValue))
		}
		b.WriteString("\n")
	}
}

// manPage renders c's page.
func manPage(c *cobra.Command) string {
	var b strings.Builder
	name := manName(c)
	fmt.Fprintf(&b, ".TH %q 1 \"\" \"meshd %s\" \"meshd manual\"\n", strings.ToUpper(name), version)
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", roffEscape(name), roffEscape(c.Short))
	b.WriteString(".SH SYNOPSIS\n")
	if c.Runnable() {
		fmt.Fprintf(&b, ".B %s\n", roffEscape(c.UseLine()))
	} else {
		fmt.Fprintf(&b, ".B %s\n\\fICOMMAND\\fR ...\n", roffEscape(c.CommandPath()))
	}
	b.WriteString(".SH DESCRIPTION\n")
	text := c.Long
	if text == "" {
		text = c.Short + "."
	}
	roffText(&b, text)
	var subs []*cobra.Command
	for _, s := range c.Commands() {
		if !s.Hidden && s.Name() != "help" && s.Deprecated == "" {
			subs = append(subs, s)
		}
	}
	if len(subs) > 0 {
		b.WriteString(".SH COMMANDS\n")
		for _, s := range subs {
			fmt.Fprintf(&b, ".TP\n\\fB%s\\fR(1)\n%s\n", roffEscape(manName(s)), roffEscape(s.Short))
		}
	}
	roffFlags(&b, "OPTIONS", c.NonInheritedFlags())
	roffFlags(&b, "OPTIONS INHERITED FROM PARENT COMMANDS", c.InheritedFlags())
	if !c.HasParent() {
		b.WriteString(`.SH EXIT STATUS
0 on success; 1 when the command failed (a problem in the file for config check,
meshd refused a reload, a peer did not answer, wait timed out, meshd is not
running); 2 for a command line meshctl does not understand (unknown command or
flag).
`)
	}
	b.WriteString(".SH SEE ALSO\n")
	var see []string
	if c.HasParent() {
		see = append(see, `\fB`+roffEscape(manName(c.Parent()))+`\fR(1)`)
	}
	see = append(see, `\fBmeshd\fR(8)`, `\fBmeshd.toml\fR(5)`)
	b.WriteString(strings.Join(see, ", ") + "\n")
	return b.String()
}
