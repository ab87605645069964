// Package programs owns the list of external programs that the project's
// make targets and tests run by name (scripts/programs.txt): its parser, and
// a test that reads every Go file of the module and fails when one runs a
// program the list lacks. scripts/lab-deps.sh installs from the same list,
// so a program the tests need cannot be missing on a new machine.
package programs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The targets a program may be listed for.
const (
	// TargetTest is make test and make demo.
	TargetTest = "test"
	// TargetBench is make bench only.
	TargetBench = "bench"
)

// Prerequisite is the package column of a program the project cannot
// install itself (the Go toolchain, make).
const Prerequisite = "-"

// RelPath is where the list lives, relative to the module root.
const RelPath = "scripts/programs.txt"

// maxLines bounds what Parse reads; the real list has a few dozen lines.
const maxLines = 10000

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("programs: syntax error")

// Entry is one listed program.
type Entry struct {
	Name    string // as run by name, e.g. "ping"
	Package string // Debian package, or Prerequisite
	Target  string // TargetTest or TargetBench
	Line    int
}

// List maps a program name to its entry.
type List map[string]Entry

// Parse reads the list: one "program package target" line per program,
// blank lines and #-comments ignored.
func Parse(data []byte) (List, error) {
	l := List{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		if n > maxLines {
			return nil, fmt.Errorf("%w: more than %d lines", ErrSyntax, maxLines)
		}
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("%w: line %d: want \"program package target\", got %d fields", ErrSyntax, n, len(f))
		}
		e := Entry{Name: f[0], Package: f[1], Target: f[2], Line: n}
		if strings.ContainsRune(e.Name, '/') {
			return nil, fmt.Errorf("%w: line %d: %q: list programs by name, not path", ErrSyntax, n, e.Name)
		}
		if e.Target != TargetTest && e.Target != TargetBench {
			return nil, fmt.Errorf("%w: line %d: target %q, want %q or %q", ErrSyntax, n, e.Target, TargetTest, TargetBench)
		}
		if prev, ok := l[e.Name]; ok {
			return nil, fmt.Errorf("%w: line %d: %s listed again (first on line %d)", ErrSyntax, n, e.Name, prev.Line)
		}
		l[e.Name] = e
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	return l, nil
}

// Load reads and parses the list of the module rooted at root.
func Load(root string) (List, error) {
	path := filepath.Join(root, RelPath)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("programs: %w", err)
	}
	l, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// Check says whether name may be run by code that installs target's
// programs (a bench run also has the test programs). A path (it holds a
// slash) is a program the project built and is always allowed.
func (l List) Check(name, target string) error {
	if strings.ContainsRune(name, '/') {
		return nil
	}
	e, ok := l[name]
	if !ok {
		return fmt.Errorf("programs: %q is run by name but not listed in %s (add it with the Debian package that ships it, so scripts/lab-deps.sh installs it)", name, RelPath)
	}
	if e.Target == TargetBench && target != TargetBench {
		return fmt.Errorf("programs: %q is listed for %q only (%s line %d), but %q code runs it: list it for %q", name, TargetBench, RelPath, e.Line, target, TargetTest)
	}
	return nil
}
