//go:build e2e

package lab

import (
	"fmt"
	"os/exec"
	"sort"
	"sync"

	"github.com/meshd/meshd/internal/programs"
)

// programList is the module's scripts/programs.txt, read once.
var programList = sync.OnceValues(func() (programs.List, error) {
	return programs.Load(moduleRoot())
})

// checkProgram refuses a program run by name that scripts/programs.txt does
// not list: on a new machine scripts/lab-deps.sh would not have installed
// it. internal/programs finds such programs statically; this catches the
// names it cannot see (computed ones). Paths (built binaries) pass.
func checkProgram(name string) error {
	l, err := programList()
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	// The lab serves make bench too, so a bench-only program passes here;
	// the static test keeps those out of the other targets.
	if err := l.Check(name, programs.TargetBench); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// missingPrograms lists the programs listed for make test that are not on
// PATH.
func missingPrograms() ([]string, error) {
	l, err := programList()
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	var missing []string
	for name, e := range l {
		if e.Target != programs.TargetTest {
			continue
		}
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	return missing, nil
}
