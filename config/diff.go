package config

import (
	"reflect"
	"slices"
	"strings"
)

// reloadable lists the keys (and key prefixes: a table covers all its keys)
// whose changes a reload applies without restarting meshd. Everything else
// needs a restart. docs/configuration.md marks each key the same way.
var reloadable = []string{
	"log.level",
	"firewall",
	"join.coordinators",
	"pki.crl",
	"ice.stun_servers",
	"ice.turn_servers",
}

// Reloadable reports whether a change to key (a dotted key as returned by
// [Changes], or a section as returned by [Diff]) takes effect on reload. A
// section is reloadable only if every key in it is.
func Reloadable(key string) bool {
	for _, r := range reloadable {
		if key == r || strings.HasPrefix(key, r+".") || strings.HasPrefix(key, r+"[") {
			return true
		}
	}
	return false
}

// Changes returns the dotted keys whose values differ between old and new,
// in schema order. Tables are compared key by key; arrays (of values or of
// tables) are compared whole and reported by their key. Config.File is
// ignored.
func Changes(old, new *Config) []string {
	var out []string
	changes(reflect.ValueOf(old).Elem(), reflect.ValueOf(new).Elem(), "", &out)
	return out
}

func changes(a, b reflect.Value, path string, out *[]string) {
	for _, f := range schemaFields(a.Type()) {
		key := joinKey(path, f.name)
		fa, fb := a.Field(f.index), b.Field(f.index)
		if fa.Kind() == reflect.Struct && !isLeafStruct(fa.Type()) {
			changes(fa, fb, key, out)
			continue
		}
		if !equalValues(fa, fb) {
			*out = append(*out, key)
		}
	}
}

// equalValues compares two schema values; nil and empty slices are equal
// (both mean "none").
func equalValues(a, b reflect.Value) bool {
	if a.Kind() == reflect.Slice {
		if a.Len() != b.Len() {
			return false
		}
		for i := 0; i < a.Len(); i++ {
			if !reflect.DeepEqual(a.Index(i).Interface(), b.Index(i).Interface()) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// Diff returns the top-level sections ("log", "firewall", "join", ...) that
// differ between old and new, in schema order.
func Diff(old, new *Config) []string {
	var out []string
	for _, k := range Changes(old, new) {
		section, _, _ := strings.Cut(k, ".")
		if !slices.Contains(out, section) {
			out = append(out, section)
		}
	}
	return out
}

// RestartRequired returns the changed keys (as [Changes] names them) that a
// reload cannot apply; empty means a reload applies everything.
func RestartRequired(old, new *Config) []string {
	var out []string
	for _, k := range Changes(old, new) {
		if !Reloadable(k) {
			out = append(out, k)
		}
	}
	return out
}
