package config

import (
	"encoding"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// decoder fills the schema structs from the generic maps the TOML library
// produced, reporting every problem instead of stopping at the first.
type decoder struct {
	p *problems
}

var (
	durationType  = reflect.TypeFor[Duration]()
	portRangeType = reflect.TypeFor[PortRange]()
	prefixType    = reflect.TypeFor[netip.Prefix]()
	addrPortType  = reflect.TypeFor[netip.AddrPort]()
	addrType      = reflect.TypeFor[netip.Addr]()
	enumType      = reflect.TypeFor[enum]()
)

// field is one schema key of a struct.
type field struct {
	name  string
	index int
}

// schemaFields lists the TOML keys of a schema struct in declaration order.
func schemaFields(t reflect.Type) []field {
	var fs []field
	for i := 0; i < t.NumField(); i++ {
		name := t.Field(i).Tag.Get("toml")
		if name == "" || name == "-" {
			continue
		}
		fs = append(fs, field{name: name, index: i})
	}
	return fs
}

// table decodes the TOML table m at path into the struct v.
func (d *decoder) table(path string, m map[string]any, v reflect.Value) {
	fs := schemaFields(v.Type())
	// Map iteration order is random; decode in key order so problems come
	// out deterministically (they are sorted by position later anyway).
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		key := joinKey(path, k)
		i := slices.IndexFunc(fs, func(f field) bool { return f.name == k })
		if i < 0 {
			d.p.add(key, ErrUnknownKey, "unknown key"+d.p.suggestKey(path, k, fs))
			continue
		}
		d.value(key, m[k], v.Field(fs[i].index))
	}
}

// value decodes the TOML value raw at path into v.
func (d *decoder) value(path string, raw any, v reflect.Value) {
	t := v.Type()
	switch t {
	case durationType, prefixType, addrPortType, addrType:
		s, ok := raw.(string)
		if !ok {
			d.wrongType(path, raw, "a string")
			return
		}
		if err := parseText(t, s, v); err != nil {
			d.p.add(path, ErrInvalid, err.Error())
		}
		return
	case portRangeType:
		switch x := raw.(type) {
		case string:
			if err := parseText(t, x, v); err != nil {
				d.p.add(path, ErrInvalid, err.Error())
			}
		case int64:
			if x < 1 || x > 65535 {
				d.p.add(path, ErrInvalid, fmt.Sprintf("%d is not a port (1-65535)", x))
				return
			}
			v.Set(reflect.ValueOf(PortRange{First: uint16(x), Last: uint16(x)}))
		default:
			d.wrongType(path, raw, `a port or range ("any", 80, "8000-8100")`)
		}
		return
	}

	switch t.Kind() {
	case reflect.String:
		s, ok := raw.(string)
		if !ok {
			d.wrongType(path, raw, "a string")
			return
		}
		if t.Implements(enumType) {
			allowed := reflect.Zero(t).Interface().(enum).values()
			if !slices.Contains(allowed, s) {
				msg := fmt.Sprintf("%q is not one of %s", s, strings.Join(allowed, ", "))
				if sug, _ := closest(s, allowed); sug != "" {
					msg += fmt.Sprintf("; did you mean %q?", sug)
				}
				d.p.add(path, ErrInvalid, msg)
				return
			}
		}
		v.SetString(s)
	case reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			d.wrongType(path, raw, "a boolean (true or false)")
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := raw.(int64)
		if !ok {
			d.wrongType(path, raw, "an integer")
			return
		}
		if v.OverflowInt(n) {
			d.p.add(path, ErrInvalid, fmt.Sprintf("%d is out of range", n))
			return
		}
		v.SetInt(n)
	case reflect.Slice:
		elems, ok := asArray(raw)
		if !ok {
			want := "an array"
			if _, isTable := raw.(map[string]any); isTable && t.Elem().Kind() == reflect.Struct && !isLeafStruct(t.Elem()) {
				want = fmt.Sprintf("an array of tables (write [[%s]] for each entry)", path)
			}
			d.wrongType(path, raw, want)
			return
		}
		out := reflect.MakeSlice(t, len(elems), len(elems))
		for i, e := range elems {
			d.value(indexKey(path, i), e, out.Index(i))
		}
		v.Set(out)
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			d.wrongType(path, raw, "a table")
			return
		}
		d.table(path, m, v)
	default:
		// A schema field of a kind the decoder does not know is a bug in
		// this package, not in the file; say so rather than panic.
		d.p.add(path, ErrInvalid, fmt.Sprintf("internal error: cannot decode into %s", t))
	}
}

// asArray accepts both array shapes the TOML library produces: []any for
// arrays and []map[string]any for arrays of tables.
func asArray(raw any) ([]any, bool) {
	switch x := raw.(type) {
	case []any:
		return x, true
	case []map[string]any:
		out := make([]any, len(x))
		for i, m := range x {
			out[i] = m
		}
		return out, true
	}
	return nil, false
}

func (d *decoder) wrongType(path string, raw any, want string) {
	d.p.add(path, ErrType, fmt.Sprintf("expected %s, found %s", want, describe(raw)))
}

// describe names a TOML value's type, with the value when it is short.
func describe(raw any) string {
	switch x := raw.(type) {
	case string:
		if len(x) > 40 {
			return "a string"
		}
		return "string " + strconv.Quote(x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case time.Time:
		return "a date-time"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("a %T", raw)
	}
}

// parseText parses s into v (of type t) with messages that say what was
// expected. The empty string is the zero value for the netip types: it is
// how an optional address is written as "off" in the example file.
func parseText(t reflect.Type, s string, v reflect.Value) error {
	switch t {
	case prefixType:
		if s == "" {
			v.Set(reflect.ValueOf(netip.Prefix{}))
			return nil
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("%q is not a CIDR prefix like \"10.1.0.0/16\" or \"fd00::/64\"", s)
		}
		if m := p.Masked(); m != p {
			return fmt.Errorf("%q has bits set beyond the prefix length; write %q", s, m.String())
		}
		v.Set(reflect.ValueOf(p))
	case addrPortType:
		if s == "" {
			v.Set(reflect.ValueOf(netip.AddrPort{}))
			return nil
		}
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return fmt.Errorf("%q is not an IP address and port like \"127.0.0.1:9477\" or \"[::1]:9477\" (host names are not resolved)", s)
		}
		v.Set(reflect.ValueOf(ap))
	case addrType:
		if s == "" {
			v.Set(reflect.ValueOf(netip.Addr{}))
			return nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("%q is not an IP address", s)
		}
		v.Set(reflect.ValueOf(a))
	default:
		u, ok := v.Addr().Interface().(encoding.TextUnmarshaler)
		if !ok {
			return fmt.Errorf("internal error: %s is not a text type", t)
		}
		return u.UnmarshalText([]byte(s))
	}
	return nil
}
