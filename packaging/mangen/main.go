// Command mangen writes meshd.toml(5), the configuration manual page, from
// the configuration reference docs/configuration.md, so that the page and
// the reference (which config/docs_test.go keeps true to the schema) are one
// text. `make package` runs it:
//
//	go run ./packaging/mangen docs/configuration.md > dist/man/meshd.toml.5
//
// It understands the markdown that reference uses: headings, paragraphs,
// bullet lists, fenced code, key tables (| Key | Type | Default | Reload |
// Meaning |) and other tables, `code`, **bold**, *italic* and [links](...).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mangen docs/configuration.md > meshd.toml.5")
		os.Exit(2)
	}
	in, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	render(w, string(in))
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
}

var (
	reLink   = regexp.MustCompile(`\[([^\]]+)\]\([^)]*\)`)
	reCode   = regexp.MustCompile("`([^`]+)`")
	reBold   = regexp.MustCompile(`\*\*([^*]+)\*\*`)
	reItalic = regexp.MustCompile(`\*([^*\s][^*]*)\*`)
)

// glyphs are the non-ASCII characters of the reference, as roff names them
// (so the page renders without preconv).
var glyphs = strings.NewReplacer("—", `\(em`, "–", `\(en`, "→", `\(->`, "←", `\(<-`, "↔", `\(<>`,
	"≤", `\(<=`, "≥", `\(>=`, "×", `\(mu`, "“", `\(lq`, "”", `\(rq`, "’", `\(cq`, "‘", `\(oq`,
	"§", `\(sc`, "…", `\&...`, "≈", `\(~~`, "µ", `\(mc`, "\u00a0", `\ `)

// escape makes plain text safe for roff.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	s = glyphs.Replace(s) // after '-': some glyph names hold one
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// inline renders markdown inline markup as roff fonts.
func inline(s string) string {
	s = strings.ReplaceAll(s, `\|`, "|")
	s = reLink.ReplaceAllString(s, "$1")
	s = escape(s)
	s = reCode.ReplaceAllString(s, `\fB$1\fR`)
	s = reBold.ReplaceAllString(s, `\fB$1\fR`)
	s = reItalic.ReplaceAllString(s, `\fI$1\fR`)
	return s
}

// cells splits a table row, keeping escaped pipes inside cells.
func cells(line string) []string {
	line = strings.ReplaceAll(strings.TrimSpace(line), `\|`, "\x00")
	parts := strings.Split(strings.Trim(line, "|"), "|")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(strings.ReplaceAll(p, "\x00", `\|`))
	}
	return parts
}

func render(w io.Writer, md string) {
	fmt.Fprint(w, `.TH "MESHD.TOML" 5 "" "meshd" "meshd manual"
.SH NAME
meshd.toml \- meshd configuration file
.SH SYNOPSIS
.I /etc/meshd/meshd.toml
`)
	lines := strings.Split(md, "\n")
	var header []string // the current table's header cells
	inCode, inList := false, false
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		trimmed := strings.TrimSpace(line)
		if inCode {
			if strings.HasPrefix(trimmed, "```") {
				fmt.Fprint(w, ".fi\n.RE\n")
				inCode = false
				continue
			}
			fmt.Fprintln(w, escape(line))
			continue
		}
		switch {
		case strings.HasPrefix(trimmed, "```"):
			fmt.Fprint(w, ".PP\n.RS 4\n.nf\n")
			inCode, inList = true, false
		case strings.HasPrefix(line, "# "):
			fmt.Fprint(w, ".SH DESCRIPTION\n")
		case strings.HasPrefix(line, "## "):
			fmt.Fprintf(w, ".SH %q\n", strings.ToUpper(strings.Trim(reCode.ReplaceAllString(line[3:], "$1"), " ")))
			inList = false
		case strings.HasPrefix(line, "### "):
			fmt.Fprintf(w, ".SS %q\n", reCode.ReplaceAllString(line[4:], "$1"))
			inList = false
		case strings.HasPrefix(trimmed, "|"):
			c := cells(line)
			switch {
			case header == nil:
				header = c
			case strings.HasPrefix(trimmed, "|---"):
			case len(header) == 5 && header[0] == "Key" && len(c) >= 5:
				// key, type, default, reload, meaning
				fmt.Fprintf(w, ".TP\n\\fB%s\\fR (%s; default %s; reload: %s)\n%s\n",
					escape(strings.Trim(c[0], "`")), inline(c[1]), inline(c[2]), inline(c[3]), inline(strings.Join(c[4:], " | ")))
			default:
				fmt.Fprintf(w, ".TP\n%s\n", inline(c[0]))
				var rest []string
				for j := 1; j < len(c) && j < len(header); j++ {
					rest = append(rest, inline(header[j])+": "+inline(c[j]))
				}
				fmt.Fprintln(w, strings.Join(rest, "; "))
			}
		case trimmed == "":
			header = nil
			if inList {
				inList = false
			}
		case strings.HasPrefix(line, "- "):
			fmt.Fprintf(w, ".IP \\(bu 2\n%s\n", inline(line[2:]))
			inList = true
		default:
			if !inList && (i == 0 || strings.TrimSpace(lines[i-1]) == "" || strings.HasPrefix(lines[i-1], "#")) {
				fmt.Fprint(w, ".PP\n")
			}
			fmt.Fprintln(w, inline(trimmed))
		}
	}
	fmt.Fprint(w, `.SH FILES
.TP
.I /etc/meshd/meshd.toml
The configuration (installed mode 0640, root:meshd).
.SH SEE ALSO
.BR meshd (8),
.BR meshctl (1),
.BR meshctl\-config\-check (1)
`)
}
