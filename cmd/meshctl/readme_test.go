package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestReadmeJSONClaim: the README names exactly the commands that take
// --json (it used to say every command does).
func TestReadmeJSONClaim(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(b)), " ")
	m := regexp.MustCompile("The commands that ask meshd \\(([^)]*)\\) and ((?:`[^`]+`(?:, )?)+) take `--json`").FindStringSubmatch(text)
	if m == nil {
		t.Fatal("the README does not say which commands take --json")
	}
	var claimed []string
	for _, c := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(m[1]+" "+m[2], -1) {
		claimed = append(claimed, c[1])
	}
	var have []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Flags().Lookup("json") != nil {
			have = append(have, strings.TrimPrefix(c.CommandPath(), "meshctl "))
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd())
	slices.Sort(claimed)
	slices.Sort(have)
	if !slices.Equal(claimed, have) {
		t.Errorf("README says %v take --json; the commands with --json are %v", claimed, have)
	}
}
