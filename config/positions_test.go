package config

import (
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

func TestScanPositions(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want map[string]pos
	}{
		{"tables and keys", "a = 1\n[t]\n  b = 'x' # c\n[t.u]\nc.d = 2\n", map[string]pos{
			"a": {1, 1}, "t": {2, 1}, "t.b": {3, 3}, "t.u": {4, 1}, "t.u.c": {5, 1}, "t.u.c.d": {5, 1},
		}},
		{"header with spaces and quotes", "[ a . \"b.c\" . 'd' ]\nk = 1\n", map[string]pos{
			"a": {1, 1}, `a."b.c"`: {1, 1}, `a."b.c".d`: {1, 1}, `a."b.c".d.k`: {2, 1},
		}},
		{"arrays of tables", "[[a]]\nx = 1\n[[a]]\nx = 2\n[[a.b]]\ny = 1\n[a.c]\nz = 1\n[[a.b]]\ny = 2\n", map[string]pos{
			"a": {1, 1}, "a[0]": {1, 1}, "a[0].x": {2, 1}, "a[1]": {3, 1}, "a[1].x": {4, 1},
			"a[1].b": {5, 1}, "a[1].b[0]": {5, 1}, "a[1].b[0].y": {6, 1},
			"a[1].c": {7, 1}, "a[1].c.z": {8, 1}, "a[1].b[1]": {9, 1}, "a[1].b[1].y": {10, 1},
		}},
		{"arrays over lines with comments", "a = [ # first\n  1, # one\n\n  [2, 3],\n  { k = 4 },\n]\n", map[string]pos{
			"a": {1, 1}, "a[0]": {2, 3}, "a[1]": {4, 3}, "a[1][0]": {4, 4}, "a[1][1]": {4, 7},
			"a[2]": {5, 3}, "a[2].k": {5, 5},
		}},
		{"strings that look like syntax", "a = \"x = [1, \\\"2\\\"] # no\"\nb = 'c:\\x'\nc = \"\"\"\n[d]\ne = \"\"\"\"\"\nf = '''\n]'''\ng = 1\n", map[string]pos{
			"a": {1, 1}, "b": {2, 1}, "c": {3, 1}, "f": {6, 1}, "g": {8, 1},
		}},
		{"escaped key", "\"a\\u0062\" = 1\n\"\\x41\" = 2\n", map[string]pos{
			"ab": {1, 1}, "A": {2, 1},
		}},
		{"date-times and numbers", "d = 1979-05-27 07:32:00Z\ne = [1979-05-27 07:32:00, +inf, 0x1F]\n", map[string]pos{
			"d": {1, 1}, "e": {2, 1}, "e[0]": {2, 6}, "e[1]": {2, 27}, "e[2]": {2, 33},
		}},
		{"inline tables over lines", "t = {\n  a = 1, # c\n  b = { c = [ 1 ] },\n}\n", map[string]pos{
			"t": {1, 1}, "t.a": {2, 3}, "t.b": {3, 3}, "t.b.c": {3, 9}, "t.b.c[0]": {3, 15},
		}},
		{"crlf", "[t]\r\na = 1\r\n\r\nb = [\r\n 2]\r\n", map[string]pos{
			"t": {1, 1}, "t.a": {2, 1}, "t.b": {4, 1}, "t.b[0]": {5, 2},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m map[string]any
			if _, err := toml.Decode(tt.src, &m); err != nil {
				t.Fatalf("test input is not TOML: %v", err)
			}
			got := scanPositions(tt.src)
			for k, w := range tt.want {
				if g, ok := got[k]; !ok || g != w {
					t.Errorf("%s at %v (found %v), want %v", k, g, ok, w)
				}
			}
			checkKeysPositioned(t, tt.src)
		})
	}
}

// checkKeysPositioned checks the scanner against the TOML library: every key
// the library reports must have a position, and the text there must start
// that key (or the table header holding it).
func checkKeysPositioned(t *testing.T, src string) {
	t.Helper()
	var m map[string]any
	md, err := toml.Decode(src, &m)
	if err != nil {
		return
	}
	text := strings.TrimPrefix(src, "\ufeff")
	got := scanPositions(text)
	unindexed := map[string]pos{}
	for k, p := range got {
		// Keep the earliest of the indexed paths a key stands for: the key
		// itself comes before its array elements.
		u := stripIndices(k)
		if q, ok := unindexed[u]; !ok || p.line < q.line || p.line == q.line && p.col < q.col {
			unindexed[u] = p
		}
	}
	lines := strings.Split(text, "\n")
	for _, key := range md.Keys() {
		path := ""
		for _, seg := range key {
			path = joinKey(path, seg)
		}
		p, ok := unindexed[path]
		if !ok {
			t.Errorf("key %s (%q) has no position", path, []string(key))
			continue
		}
		if p.line < 1 || p.line > len(lines) || p.col < 1 || p.col > len(lines[p.line-1]) {
			t.Errorf("key %s at %d:%d, outside the text", path, p.line, p.col)
			continue
		}
		if c := lines[p.line-1][p.col-1]; !isBareChar(c) && c != '"' && c != '\'' && c != '[' {
			t.Errorf("key %s at %d:%d, which holds %q", path, p.line, p.col, c)
		}
	}
}

// stripIndices removes the [n] array indices of a key path (outside quoted
// segments).
func stripIndices(k string) string {
	var b strings.Builder
	inQuote := false
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '\\' && inQuote && i+1 < len(k):
			b.WriteByte(c)
			b.WriteByte(k[i+1])
			i++
			continue
		case c == '"':
			inQuote = !inQuote
		case c == '[' && !inQuote:
			for i < len(k) && k[i] != ']' {
				i++
			}
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func TestPositionsLookupFallsBack(t *testing.T) {
	p := positions{"a": {1, 1}, "a.b[2]": {3, 4}, `a."x.y"`: {5, 1}}
	for key, want := range map[string]pos{
		"a.b[2].c":      {3, 4},
		"a.b[3]":        {1, 1},
		`a."x.y".z`:     {5, 1},
		`a."x.y[1]".z`:  {1, 1},
		"nothing.here":  {},
		"a.b[2].c[0].d": {3, 4},
	} {
		if got := p.lookup(key); got != want {
			t.Errorf("lookup(%s) = %v, want %v", key, got, want)
		}
	}
}

func TestLineCol(t *testing.T) {
	text := "ab\ncd\n\nx"
	for off, want := range map[int][2]int{0: {1, 1}, 2: {1, 3}, 3: {2, 1}, 6: {3, 1}, 7: {4, 1}, 8: {4, 2}, 99: {4, 2}, -1: {1, 1}} {
		l, c := lineCol(text, off)
		if l != want[0] || c != want[1] {
			t.Errorf("lineCol(%d) = %d:%d, want %d:%d", off, l, c, want[0], want[1])
		}
	}
}
