package packaging

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// The packages declare a license (nfpm.yaml); the repository's LICENSE must
// be that license, or the .deb and .rpm metadata lie about what users get.
func TestLicenseMatchesPackaging(t *testing.T) {
	spec, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^license:\s*(\S+)\s*$`).FindSubmatch(spec)
	if m == nil {
		t.Fatal("nfpm.yaml declares no license")
	}
	text, err := os.ReadFile("../LICENSE")
	if err != nil {
		t.Fatalf("no LICENSE for the declared %s license: %v", m[1], err)
	}
	// The first line of each SPDX license text that packaging may declare.
	heading := map[string]string{
		"MIT":          "MIT License",
		"Apache-2.0":   "Apache License",
		"BSD-3-Clause": "BSD 3-Clause License",
	}[string(m[1])]
	if heading == "" {
		t.Fatalf("nfpm.yaml declares %q, which this test does not know", m[1])
	}
	if first, _, _ := strings.Cut(string(text), "\n"); strings.TrimSpace(first) != heading {
		t.Errorf("LICENSE starts %q, want the %s text (%q)", first, m[1], heading)
	}
}
