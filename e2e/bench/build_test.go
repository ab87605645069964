//go:build e2e && bench

package bench

// Building the programs under test: wireguard-go from this module's
// requirement, Nebula with `go install` at the newest v1 release that builds,
// and meshd and meshctl from this checkout. Everything goes into a temporary
// directory; nothing is committed or installed.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// buildTimeout bounds one `go build` or `go install` (a cold Nebula build
// downloads and compiles a few dozen modules).
const buildTimeout = 6 * time.Minute

// wireguardModule is the module whose main package is wireguard-go.
const wireguardModule = "golang.zx2c4.com/wireguard"

// nebulaModule is Nebula's module; its commands are nebula and nebula-cert.
const nebulaModule = "github.com/slackhq/nebula"

// nebulaTries bounds how many releases are tried, newest first, before
// Nebula is reported as not available.
const nebulaTries = 4

// moduleRoot is this checkout: the directory above e2e/bench that holds
// go.mod.
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if ok && filepath.IsAbs(file) {
		root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return root, nil
		}
	}
	// Under -trimpath the file name is not a path; go test runs in the
	// package directory.
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("no go.mod two levels above %s", wd)
	}
	return root, nil
}

// goCmd runs the go command in dir with extra environment and returns its
// combined output; a failure carries the output's last line.
func goCmd(dir string, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	// GOFLAGS from the caller (say -mod=vendor) must not leak into
	// builds of other modules; GOTOOLCHAIN=local turns "needs a newer Go"
	// into an error instead of a toolchain download.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOTOOLCHAIN=local")
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), err, firstError(string(out)))
	}
	return string(out), nil
}

// compileError matches a compiler diagnostic, "dir/file.go:12:3: message".
var compileError = regexp.MustCompile(`(?m)^\S+\.go:\d+(:\d+)?: .*$`)

// firstError picks the line of go's output that says what went wrong: the
// first compiler diagnostic (the last line is often "too many errors"), or
// else the last line.
func firstError(out string) string {
	if m := compileError.FindString(out); m != "" {
		return strings.TrimSpace(m)
	}
	return lastLine(out)
}

// buildWireguardGo builds wireguard-go at the version go.mod requires and
// returns the binary and that version.
func buildWireguardGo(root, dir string) (bin, version string, err error) {
	bin = filepath.Join(dir, "wireguard-go")
	if _, err := goCmd(root, nil, "build", "-o", bin, wireguardModule); err != nil {
		return "", "", err
	}
	out, err := goCmd(root, nil, "list", "-m", "-f", "{{.Version}}", wireguardModule)
	if err != nil {
		return "", "", err
	}
	return bin, strings.TrimSpace(out), nil
}

// buildMeshd builds meshd and meshctl from the checkout.
func buildMeshd(root, dir string) (meshd, meshctl string, err error) {
	if _, err := goCmd(root, nil, "build", "-o", dir+string(filepath.Separator), "./cmd/meshd", "./cmd/meshctl"); err != nil {
		return "", "", err
	}
	return filepath.Join(dir, "meshd"), filepath.Join(dir, "meshctl"), nil
}

// nebulaBuild is the outcome of buildNebula.
type nebulaBuild struct {
	dir     string   // holds nebula and nebula-cert
	version string   // the release built
	skipped []string // newer releases that did not build, with the reason
}

// buildNebula installs nebula and nebula-cert into dir: at pinned if it is
// set, otherwise at the newest v1 release the module proxy lists that builds
// with this Go (a release may need a newer Go, or depend on a module version
// the proxy does not serve).
func buildNebula(dir, pinned string) (nebulaBuild, error) {
	b := nebulaBuild{dir: dir}
	versions := []string{pinned}
	if pinned == "" {
		out, err := goCmd(dir, nil, "list", "-m", "-versions", nebulaModule)
		if err != nil {
			return b, fmt.Errorf("listing Nebula releases: %w", err)
		}
		versions = newestV1(strings.Fields(out), nebulaTries)
		if len(versions) == 0 {
			return b, fmt.Errorf("the module proxy lists no v1 release of %s: %q", nebulaModule, short(out))
		}
	}
	for _, v := range versions {
		_, err := goCmd(dir, []string{"GOBIN=" + dir}, "install",
			nebulaModule+"/cmd/nebula@"+v, nebulaModule+"/cmd/nebula-cert@"+v)
		if err == nil {
			b.version = v
			return b, nil
		}
		b.skipped = append(b.skipped, v+" "+whyNoBuild(err))
	}
	return b, fmt.Errorf("no Nebula release builds here: %s", strings.Join(b.skipped, "; "))
}

var (
	releaseRE  = regexp.MustCompile(`^v1\.(\d+)\.(\d+)$`)
	requiresGo = regexp.MustCompile(`requires go >= ([0-9.]+)`)
)

// newestV1 returns up to n of the v1.x.y releases in versions (the first
// word, the module path, and pre-releases are skipped), newest first.
func newestV1(versions []string, n int) []string {
	type rel struct {
		v            string
		minor, patch int
	}
	var rels []rel
	for _, v := range versions {
		m := releaseRE.FindStringSubmatch(v)
		if m == nil {
			continue
		}
		minor, _ := strconv.Atoi(m[1])
		patch, _ := strconv.Atoi(m[2])
		rels = append(rels, rel{v, minor, patch})
	}
	sort.Slice(rels, func(i, j int) bool {
		if rels[i].minor != rels[j].minor {
			return rels[i].minor > rels[j].minor
		}
		return rels[i].patch > rels[j].patch
	})
	var out []string
	for i := 0; i < len(rels) && i < n; i++ {
		out = append(out, rels[i].v)
	}
	return out
}

// whyNoBuild says in a few words why go install failed.
func whyNoBuild(err error) string {
	s := err.Error()
	if m := requiresGo.FindStringSubmatch(s); m != nil {
		return "needs go >= " + m[1] + " (this is " + runtime.Version() + ")"
	}
	if strings.Contains(s, "403") || strings.Contains(s, "not available") || strings.Contains(s, "404") {
		return "needs a module version the module proxy does not serve"
	}
	return "failed: " + lastLine(s)
}
