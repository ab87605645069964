package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestManPage: meshd(8), shipped in the packages, documents every flag
// meshd takes and every exit status it uses.
func TestManPage(t *testing.T) {
	b, err := os.ReadFile("../../packaging/man/meshd.8")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	var stderr bytes.Buffer
	if code := run([]string{"--help"}, &bytes.Buffer{}, &stderr); code != exitOK {
		t.Fatalf("meshd --help exited %d", code)
	}
	flags := regexp.MustCompile(`(?m)^\s+-(\w[\w-]*)`).FindAllStringSubmatch(stderr.String(), -1)
	if len(flags) == 0 {
		t.Fatalf("no flags in the usage:\n%s", stderr.String())
	}
	for _, f := range flags {
		if want := `\fB\-\-` + strings.ReplaceAll(f[1], "-", `\-`) + `\fR`; !strings.Contains(page, want) {
			t.Errorf("meshd(8) does not document --%s", f[1])
		}
	}
	for _, code := range []int{exitOK, exitRuntime, exitUsage, exitConfig, exitCredentials, exitNetwork} {
		if !strings.Contains(page, fmt.Sprintf(".TP\n.B %d\n", code)) {
			t.Errorf("meshd(8) does not document exit status %d", code)
		}
	}
}
