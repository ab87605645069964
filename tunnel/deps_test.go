package tunnel

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports: tunnel sits below the overlay, the daemon and discovery
// (shared/DESIGN.md's dependency table); its non-test code imports none of
// them, nor config.
func TestImports(t *testing.T) {
	forbidden := []string{
		"github.com/meshd/meshd/overlay", "github.com/meshd/meshd/config",
		"github.com/meshd/meshd/daemon", "github.com/meshd/meshd/discovery",
		"github.com/meshd/meshd/control",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			for _, bad := range forbidden {
				if path == bad || strings.HasPrefix(path, bad+"/") {
					t.Errorf("%s imports %s", f, path)
				}
			}
		}
	}
}
