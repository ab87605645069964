package config

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestReadmeSnippets: every ```toml block of the README parses and
// validates as written (the files it names need not exist here), and each
// one that sets up a node gives it a first inbound rule, since inbound is
// deny-all by default.
func TestReadmeSnippets(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := fencedBlocks(string(b), "toml")
	if len(blocks) == 0 {
		t.Fatal("the README has no ```toml blocks")
	}
	for i, text := range blocks {
		cfg, err := Parse("README.md block "+strconv.Itoa(i+1), []byte(text))
		if err != nil {
			t.Errorf("block %d does not load:\n%s\n%v", i+1, text, err)
			continue
		}
		if len(cfg.Firewall.Inbound) == 0 {
			t.Errorf("block %d gives the node no [[firewall.inbound]] rule; with the deny-all default only meshctl ping works:\n%s", i+1, text)
		}
		if cfg.Coordinator.Enabled {
			if a := cfg.Coordinator.SessionListen.Addr(); !a.IsUnspecified() {
				t.Errorf("block %d: the coordinator listens on %s, an address a NATed cloud VM does not have", i+1, a)
			}
			if cfg.Coordinator.GossipKey != "" {
				t.Errorf("block %d: inline gossip_key in a file the package makes readable by group meshd", i+1)
			}
		}
	}
}

// fencedBlocks returns the bodies of the fenced code blocks of language
// lang in markdown text.
func fencedBlocks(text, lang string) []string {
	var out []string
	var cur *strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && trimmed == "```"+lang:
			cur = &strings.Builder{}
		case cur != nil && trimmed == "```":
			out = append(out, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return out
}
