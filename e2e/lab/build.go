//go:build e2e

package lab

import (
	"context"
	"fmt"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// builds caches one build per package per test binary.
var builds struct {
	mu   sync.Mutex // held during a build, so concurrent callers build once
	done map[string]string
}

// Build compiles the main package pkg (an import path such as
// "github.com/meshd/meshd/cmd/meshd", or a path relative to the module root
// such as "./cmd/meshd") once per test binary and returns the executable's
// path. Binaries live in a temporary directory that Main removes at exit.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	bin, err := build(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func build(pkg string) (string, error) {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.done[pkg]; ok {
		return bin, nil
	}
	run.mu.Lock()
	dir := run.buildDir
	run.mu.Unlock()
	if dir == "" {
		return "", ErrNoMain
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("lab: build %s: no go command on PATH: %w", pkg, err)
	}
	name := path.Base(strings.TrimSuffix(pkg, "/"))
	out := filepath.Join(dir, fmt.Sprintf("%s-%d", name, len(builds.done)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, pkg)
	cmd.Dir = moduleRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("lab: go build %s: %w\n%s", pkg, err, b)
	}
	if builds.done == nil {
		builds.done = map[string]string{}
	}
	builds.done[pkg] = out
	return out, nil
}
