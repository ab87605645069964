package main

import (
	"errors"
	"strings"
	"testing"
)

// TestUnknownSubcommand: a mistyped subcommand under a command that only
// groups others fails with exit code 2 and says what it did not know
// (it used to print help and exit 0); the bare group still prints help.
func TestUnknownSubcommand(t *testing.T) {
	for _, args := range [][]string{
		{"config", "chekc"},
		{"ca", "int"},
		{"cert", "shwo", "x.crt"},
		{"statsu"},
	} {
		out, err := runConfigCmd(t, args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("meshctl %s: %v (output %q), want exit code 2", strings.Join(args, " "), err, out)
			continue
		}
		if !strings.Contains(err.Error(), `unknown command "`+args[len(args)-1]) && !strings.Contains(err.Error(), `unknown command "`+args[1]) {
			t.Errorf("meshctl %s: %v", strings.Join(args, " "), err)
		}
	}
	if _, err := runConfigCmd(t, "config", "chekc"); err == nil || !strings.Contains(err.Error(), `did you mean "check"`) {
		t.Errorf("no suggestion: %v", err)
	}
	if out, err := runConfigCmd(t, "config"); err != nil || !strings.Contains(out, "check") {
		t.Errorf("meshctl config: %v\n%s", err, out)
	}
	// An unknown flag is a usage error too.
	var ee *exitError
	if _, err := runConfigCmd(t, "config", "check", "--bogus"); !errors.As(err, &ee) || ee.code != 2 {
		t.Errorf("unknown flag: %v, want exit code 2", err)
	}
}
