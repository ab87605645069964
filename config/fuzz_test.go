package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(examplePath); err == nil {
		f.Add(string(b))
		f.Add(uncomment(string(b), true))
	}
	f.Add(minimal)
	f.Add(minimal + "[[firewall.inbound]]\npeer = \"any\"\nport = \"80-90\"\n[firewall]\ninbound = []\n")
	f.Add("a = [1, [2, {b = 'c'}], \"\"\"\nx\"\"\"]\n[[t]]\n[t.u]\n\"q.k\" = 1979-05-27 07:32:00\n")
	f.Add("\ufeff[pki]\r\nca = '''\n'''\n")
	f.Add("[coordinator]\nenabled = true\nsession_listen = \"[::]:0\"\n[coordinator.turn]\nlisten = \"[::]:0\"\n")
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := Parse("fuzz.toml", []byte(src))
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config and nil error")
			}
		} else {
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			var errs *Errors
			if !errors.As(err, &errs) || len(errs.List) == 0 {
				t.Fatalf("error is not a non-empty *Errors: %v", err)
			}
			text := strings.TrimPrefix(src, "\ufeff")
			nlines := strings.Count(text, "\n") + 1
			for _, e := range errs.List {
				if e.File != "fuzz.toml" || e.Msg == "" || e.Kind == nil {
					t.Fatalf("incomplete error %#v", e)
				}
				if e.Line < 0 || e.Line > nlines || (e.Line > 0 && e.Col < 1) {
					t.Fatalf("error outside the text (%d lines): %v", nlines, e)
				}
			}
		}
		checkKeysPositioned(t, src)
	})
}
