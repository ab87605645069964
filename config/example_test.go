package config

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// examplePath is the packaged, fully commented configuration.
const examplePath = "../packaging/meshd.toml"

func readExample(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatalf("reading the example configuration: %v", err)
	}
	return string(b)
}

func TestExampleLoads(t *testing.T) {
	src := readExample(t)
	if _, err := Parse("/etc/meshd/meshd.toml", []byte(src)); err != nil {
		t.Fatalf("example does not parse:\n%v", err)
	}
	// With file checks on, next to the files it names.
	dir := t.TempDir()
	for _, n := range []string{"meshd.toml", "ca.crt", "node.crt", "node.key"} {
		data := ""
		if n == "meshd.toml" {
			data = src
		}
		if err := os.WriteFile(filepath.Join(dir, n), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Load(filepath.Join(dir, "meshd.toml")); err != nil {
		t.Fatalf("example does not load with its files present:\n%v", err)
	}
}

var (
	commentedKey    = regexp.MustCompile(`^# ([a-z][a-z0-9_]* = .*)$`)
	commentedHeader = regexp.MustCompile(`^# (\[\[?[a-z_.]+\]\]?)\s*$`)
	activeHeader    = regexp.MustCompile(`^\[`)
)

// uncomment turns the commented "# key = value" lines of the example into
// keys. With examples false it leaves the example blocks (those under a
// commented-out table header) alone, so what it uncomments are the
// documented defaults.
func uncomment(src string, examples bool) string {
	lines := strings.Split(src, "\n")
	inExample := false
	for i, l := range lines {
		switch {
		case activeHeader.MatchString(l):
			inExample = false
		case commentedHeader.MatchString(l):
			inExample = true
			if examples {
				lines[i] = commentedHeader.FindStringSubmatch(l)[1]
			}
		case commentedKey.MatchString(l) && (examples || !inExample):
			lines[i] = commentedKey.FindStringSubmatch(l)[1]
		}
	}
	return strings.Join(lines, "\n")
}

// TestExampleStatesTheDefaults uncomments every default the example shows
// and checks that the result is the same configuration.
func TestExampleStatesTheDefaults(t *testing.T) {
	src := readExample(t)
	defaults := uncomment(src, false)
	if defaults == src {
		t.Fatal("uncommenting changed nothing")
	}
	a, err := Parse("/etc/meshd/meshd.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("/etc/meshd/meshd.toml", []byte(defaults))
	if err != nil {
		t.Fatalf("example with its defaults uncommented:\n%v\n%s", err, defaults)
	}
	// Changes, not DeepEqual: "peers = []" and no peers are the same.
	if ch := Changes(a, b); len(ch) > 0 {
		t.Errorf("defaults shown in the example differ from the real ones: %q", ch)
	}
}

// TestExampleCoversTheSchema checks that the example names every key.
func TestExampleCoversTheSchema(t *testing.T) {
	all := uncomment(readExample(t), true)
	var m map[string]any
	md, err := toml.Decode(all, &m)
	if err != nil {
		t.Fatalf("example with everything uncommented is not TOML: %v", err)
	}
	have := map[string]bool{}
	for _, k := range md.Keys() {
		path := ""
		for _, seg := range k {
			path = joinKey(path, seg)
		}
		have[path] = true
	}
	for _, key := range schemaKeys() {
		// Outbound rules have the inbound rules' keys, shown once.
		key = strings.Replace(key, "firewall.outbound", "firewall.inbound", 1)
		if !have[strings.ReplaceAll(key, "[]", "")] {
			t.Errorf("the example does not show %s", key)
		}
	}
}

// schemaKeys lists every key of the schema that holds a value (tables are
// left out, arrays of tables are in), with "[]" after arrays of tables
// followed by their keys.
func schemaKeys() []string {
	var keys []string
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for _, f := range schemaFields(t) {
			key := joinKey(path, f.name)
			ft := t.Field(f.index).Type
			switch {
			case ft.Kind() == reflect.Struct && !isLeafStruct(ft):
				walk(ft, key)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && !isLeafStruct(ft.Elem()):
				keys = append(keys, key)
				walk(ft.Elem(), key+"[]")
			default:
				keys = append(keys, key)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys
}
