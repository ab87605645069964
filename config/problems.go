package config

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// problems collects the errors and warnings of one file.
type problems struct {
	file     string
	pos      positions
	list     []*Error
	keys     map[string]bool // keys that have a problem already
	warnings []*Error
}

// add records a problem with key, positioned at key (or its nearest
// ancestor that has a position). Only the first problem of a key is kept: a
// value that failed to decode stays zero, and the checks after decoding
// would otherwise report that zero a second time.
func (p *problems) add(key string, kind error, msg string) {
	if p.keys[key] {
		return
	}
	if p.keys == nil {
		p.keys = map[string]bool{}
	}
	p.keys[key] = true
	at := p.pos.lookup(key)
	p.list = append(p.list, &Error{File: p.file, Line: at.line, Col: at.col, Key: key, Msg: msg, Kind: kind})
}

func (p *problems) addf(key string, kind error, format string, args ...any) {
	p.add(key, kind, fmt.Sprintf(format, args...))
}

// warnf records a warning with key, positioned like a problem. Warnings do
// not make the file fail.
func (p *problems) warnf(key string, kind error, format string, args ...any) {
	at := p.pos.lookup(key)
	p.warnings = append(p.warnings, &Error{File: p.file, Line: at.line, Col: at.col, Key: key, Msg: fmt.Sprintf(format, args...), Kind: kind})
}

// err returns the collected problems sorted by position (unpositioned last),
// or nil.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	sortByPosition(p.list)
	return &Errors{List: p.list}
}

// sortedWarnings returns the collected warnings sorted like problems, or nil.
func (p *problems) sortedWarnings() []*Error {
	sortByPosition(p.warnings)
	return p.warnings
}

// sortByPosition sorts problems into file order, unpositioned ones last.
func sortByPosition(list []*Error) {
	slices.SortStableFunc(list, func(a, b *Error) int {
		if (a.Line == 0) != (b.Line == 0) {
			if a.Line == 0 {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
}

// suggestKey returns "; did you mean X?" for an unknown key k in the table at
// path whose known keys are fs, or "". In order of preference: a key of the
// same table differing only in case or '-' versus '_'; the same key name in
// another table (a key put under the wrong header, such as a top-level
// "coordinators"); the closest key of the same table.
func (p *problems) suggestKey(path, k string, fs []field) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	near, d := closest(k, names)
	if near != "" && d == 0 {
		return "; did you mean " + joinKey(path, near) + "?"
	}
	var elsewhere []string
	walkSchema(reflect.TypeFor[Config](), "", func(key, leaf string) {
		if leaf == k && key != joinKey(path, k) {
			elsewhere = append(elsewhere, key)
		}
	})
	if len(elsewhere) > 0 {
		return "; did you mean " + strings.Join(elsewhere, " or ") + "?"
	}
	if near != "" {
		return "; did you mean " + joinKey(path, near) + "?"
	}
	return ""
}

// walkSchema calls fn with the dotted path and name of every key of the
// schema, descending into tables but not into arrays of tables.
func walkSchema(t reflect.Type, path string, fn func(key, leaf string)) {
	for _, f := range schemaFields(t) {
		key := joinKey(path, f.name)
		fn(key, f.name)
		ft := t.Field(f.index).Type
		if ft.Kind() == reflect.Struct && !isLeafStruct(ft) {
			walkSchema(ft, key, fn)
		}
	}
}

// isLeafStruct reports whether a struct type is a single TOML value rather
// than a table.
func isLeafStruct(t reflect.Type) bool {
	switch t {
	case portRangeType, prefixType, addrPortType, addrType:
		return true
	}
	return false
}

// closest returns the candidate nearest to s and its distance, if it is near
// enough to be a plausible typo, else "". Case and '-' versus '_' do not
// count.
func closest(s string, candidates []string) (string, int) {
	norm := func(x string) string { return strings.ReplaceAll(strings.ToLower(x), "-", "_") }
	limit := 1
	if len(s) > 4 {
		limit = 2
	}
	if len(s) > 10 {
		limit = 3
	}
	best, bestD := "", limit+1
	for _, c := range candidates {
		if c == s {
			continue
		}
		if d := editDistance(norm(s), norm(c)); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD > limit {
		return "", 0
	}
	return best, bestD
}

// editDistance is the optimal-string-alignment distance (Levenshtein plus
// adjacent transpositions, which are common typos) between a and b, by byte.
func editDistance(a, b string) int {
	// Three rolling rows: i-2, i-1, i.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
