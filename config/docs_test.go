package config

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const docsPath = "../docs/configuration.md"

// docRow is one key row of a table in docs/configuration.md.
type docRow struct {
	key, typ, def, reload, meaning string
}

// docRows reads the key rows: a first cell holding a `dotted.key`.
func docRows(t *testing.T) map[string]docRow {
	t.Helper()
	b, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatalf("reading the configuration reference: %v", err)
	}
	rows := map[string]docRow{}
	for _, line := range strings.Split(string(b), "\n") {
		// Cells may contain escaped pipes (\|) inside type descriptions.
		cells := strings.Split(strings.ReplaceAll(line, `\|`, "¦"), "|")
		if len(cells) < 6 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		key := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if !strings.Contains(key, ".") || strings.ContainsAny(key, " /,") {
			continue // the ports table
		}
		rows[key] = docRow{key: key, typ: strings.TrimSpace(cells[2]), def: strings.TrimSpace(cells[3]), reload: strings.TrimSpace(cells[4]),
			meaning: strings.TrimSpace(strings.Join(cells[5:], "|"))}
	}
	return rows
}

// TestDocsCoverTheSchema checks that the reference has a row for every key,
// no row for a key that does not exist, and the right Reload column.
func TestDocsCoverTheSchema(t *testing.T) {
	rows := docRows(t)
	known := map[string]bool{}
	for _, key := range schemaKeys() {
		// Outbound rules are documented once, as inbound rules.
		doc := key
		if strings.HasPrefix(key, "firewall.outbound[]") {
			doc = strings.Replace(key, "firewall.outbound", "firewall.inbound", 1)
		}
		known[doc] = true
		row, ok := rows[doc]
		if !ok {
			t.Errorf("docs/configuration.md has no row for %s", doc)
			continue
		}
		want := "no"
		if Reloadable(strings.ReplaceAll(key, "[]", "[0]")) {
			want = "yes"
		}
		if row.reload != want {
			t.Errorf("%s: docs say reload %q, Reloadable says %q", doc, row.reload, want)
		}
	}
	for key := range rows {
		if !known[key] {
			t.Errorf("docs/configuration.md documents %s, which is not in the schema", key)
		}
	}
}

// TestDocsStateTheDefaults builds a file from every default the reference
// writes as a TOML literal and checks that it changes nothing.
func TestDocsStateTheDefaults(t *testing.T) {
	// Dotted keys at the top level, so that no table is opened twice.
	lines := []string{
		`pki.ca = "ca.crt"`,
		`pki.cert = "node.crt"`,
		`pki.key = "/etc/meshd/private/node.key"`,
		`join.coordinators = ["coord.example.net"]`,
	}
	rows := docRows(t)
	keys := make([]string, 0, len(rows))
	for key := range rows {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	n := 0
	for _, key := range keys {
		def := rows[key].def
		if strings.Contains(key, "[]") || key == "join.coordinators" || !strings.HasPrefix(def, "`") {
			continue // no default, or one described in words
		}
		lit, _, ok := strings.Cut(def[1:], "`")
		if !ok {
			t.Fatalf("%s: unterminated literal in %q", key, def)
		}
		var probe map[string]any
		if _, err := toml.Decode("x = "+lit, &probe); err != nil {
			continue // a reference to another key, such as `pki.cert`
		}
		lines = append(lines, key+" = "+lit)
		n++
	}
	if n < 40 {
		t.Fatalf("only %d literal defaults found; is the table format still parsed right?", n)
	}
	src := strings.Join(lines, "\n") + "\n"
	want, err := Parse("/etc/meshd/meshd.toml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("/etc/meshd/meshd.toml", []byte(src))
	if err != nil {
		t.Fatalf("the documented defaults do not parse:\n%v\n%s", err, src)
	}
	if ch := Changes(want, got); len(ch) > 0 {
		t.Errorf("documented defaults differ from the real ones: %q", ch)
	}
}

// TestDocsExamplesParse checks the TOML examples of the reference: a complete
// file (one with [pki]) on its own, a fragment added to the minimal file.
func TestDocsExamplesParse(t *testing.T) {
	b, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(b), "```toml\n")[1:]
	if len(blocks) < 3 {
		t.Fatalf("found %d TOML examples, want at least 3", len(blocks))
	}
	for i, block := range blocks {
		src, _, _ := strings.Cut(block, "```")
		if !strings.Contains(src, "[pki]") {
			src = minimal + src
		}
		if _, err := Parse("/etc/meshd/meshd.toml", []byte(src)); err != nil {
			t.Errorf("example %d does not parse:\n%v\n%s", i+1, err, src)
		}
	}
}
