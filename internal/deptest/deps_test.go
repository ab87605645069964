// Package deptest enforces the dependency direction of the design: the CLI
// never links the data plane or pion, and leaf packages never reach up into
// config or daemon. It asks the go command for each package's transitive
// imports (non-test code only), as tailscale's deptest does.
package deptest

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/meshd/meshd"

type pkgInfo struct {
	ImportPath string
	Deps       []string
	Standard   bool
}

// listDeps returns every package of the module with its transitive deps.
func listDeps(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps=false", "-json=ImportPath,Deps", module+"/...")
	cmd.Dir = "../.."
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, errb.String())
	}
	res := map[string][]string{}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var p pkgInfo
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		res[p.ImportPath] = p.Deps
	}
	return res
}

// rule forbids packages whose import path starts with any of bad for the
// packages whose path (relative to the module) starts with from.
type rule struct {
	from   string
	bad    []string
	reason string
}

var rules = []rule{
	{"cmd/meshctl", []string{"github.com/pion/", module + "/overlay", module + "/tunnel", module + "/discovery", module + "/daemon", module + "/relay", "github.com/hashicorp/memberlist", "golang.zx2c4.com/wireguard", "gvisor.dev/"},
		"meshctl talks to meshd through control's client; it never links the data plane"},
	{"pki", []string{module + "/", "github.com/"}, "pki is stdlib crypto only"},
	{"control", []string{module + "/", "github.com/pion/", "github.com/hashicorp/"}, "control is wire types and handlers over a Backend interface"},
	{"config", []string{module + "/"}, "config is pure: the schema and its validation"},
	{"overlay", []string{module + "/config", module + "/daemon", module + "/tunnel", module + "/discovery", "github.com/pion/"}, "overlay defines PeerConn; tunnel satisfies it"},
	{"tunnel", []string{module + "/config", module + "/daemon", module + "/overlay", module + "/discovery"}, "tunnel takes Options and a Signaler; daemon wires it"},
	{"dns", []string{module + "/config", module + "/daemon", module + "/overlay", module + "/tunnel", module + "/discovery", "github.com/pion/"}, "dns serves the table daemon builds"},
	{"internal/udpbatch", []string{module + "/", "github.com/"}, "udpbatch is syscalls over a UDP socket, shared by tunnel and discovery: stdlib and x/sys only"},
	{"discovery", []string{module + "/config", module + "/daemon", module + "/overlay", module + "/tunnel"}, "discovery carries opaque signals"},
	{"relay", []string{module + "/config", module + "/daemon", module + "/overlay", module + "/tunnel", module + "/discovery"}, "the member relay takes Options (member lookup, vouched addresses); daemon wires it"},
}

func TestDependencyDirection(t *testing.T) {
	deps := listDeps(t)
	checked := 0
	for pkg, ds := range deps {
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")
		for _, r := range rules {
			if rel != r.from && !strings.HasPrefix(rel, r.from+"/") {
				continue
			}
			checked++
			for _, d := range ds {
				if strings.HasPrefix(d, module+"/internal/") && r.from != "cmd/meshctl" {
					continue // shared internal helpers are fine for leaves
				}
				if d == module+"/"+r.from {
					continue // a sibling test double (control/controltest) imports its parent
				}
				for _, b := range r.bad {
					if strings.HasPrefix(d, b) && d != pkg && !strings.HasPrefix(d, pkg+"/") {
						t.Errorf("%s imports %s: %s", rel, d, r.reason)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package matched any rule: is the module path right?")
	}
}
