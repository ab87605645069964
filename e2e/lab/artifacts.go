//go:build e2e

package lab

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"testing"
)

// ArtifactsEnv overrides where artifacts go (default: e2e/artifacts in the
// checkout, which .gitignore excludes).
const ArtifactsEnv = "MESHD_E2E_ARTIFACTS"

var artifactDirs sync.Map // testing.TB -> string

// ArtifactDir returns this test's artifact directory,
// e2e/artifacts/<test name>, emptied the first time a test asks for it and
// kept after the test for inspection. Labs put their logs and process
// output there; scenarios can add their own files.
func ArtifactDir(t testing.TB) string {
	t.Helper()
	if d, ok := artifactDirs.Load(t); ok {
		return d.(string)
	}
	dir := filepath.Join(artifactsRoot(), sanitize(t.Name()))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatalf("lab: clearing artifact dir: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("lab: artifact dir: %v", err)
	}
	artifactDirs.Store(t, dir)
	t.Cleanup(func() { artifactDirs.Delete(t) })
	return dir
}

func artifactsRoot() string {
	if d := os.Getenv(ArtifactsEnv); d != "" {
		return d
	}
	return filepath.Join(moduleRoot(), "e2e", "artifacts")
}

var moduleRootOnce = sync.OnceValue(findModuleRoot)

// moduleRoot is the checkout the tests run from: where this file was
// compiled, or (under -trimpath) the first directory with a go.mod above the
// test's working directory, which go test sets to the package directory.
func moduleRoot() string { return moduleRootOnce() }

func findModuleRoot() string {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if fileExists(filepath.Join(root, "go.mod")) {
			return root
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if fileExists(filepath.Join(d, "go.mod")) {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// sanitize turns a test name or label into one safe path component.
func sanitize(s string) string {
	s = unsafeChars.ReplaceAllString(s, "_")
	if s == "" || s == "." || s == ".." {
		return "_"
	}
	return s
}
