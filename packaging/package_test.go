//go:build e2e

// Package packaging holds the systemd unit, the default config and the
// .deb/.rpm recipe; this test builds the packages the way `make package` does
// and checks what a user would install.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestDebContents(t *testing.T) {
	// Listed in scripts/programs.txt: a missing one is a failure of the
	// set-up, not a reason to skip.
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Fatalf("dpkg-deb not installed: run scripts/lab-deps.sh: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	run(t, root, "make", "package")
	debs, _ := filepath.Glob(filepath.Join(root, "dist", "meshd_*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(root, "dist", "meshd-*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("want one .deb and one .rpm in dist/, got %v %v", debs, rpms)
	}
	list := run(t, root, "dpkg-deb", "-c", debs[0])
	t.Logf("deb contents:\n%s", list)
	checkListing(t, ".deb", list, []pathMode{
		{"./usr/bin/meshd", "-rwxr-xr-x"},
		{"./usr/bin/meshctl", "-rwxr-xr-x"},
		{"./lib/systemd/system/meshd.service", "-rw-r--r--"},
		{"./etc/meshd/meshd.toml", "-rw-r-----"},
		{"./usr/share/bash-completion/completions/meshctl", "-rw-r--r--"},
		{"./usr/share/zsh/vendor-completions/_meshctl", "-rw-r--r--"},
		{"./usr/share/fish/vendor_completions.d/meshctl.fish", "-rw-r--r--"},
		{"./usr/share/man/man8/meshd.8.gz", "-rw-r--r--"},
		{"./usr/share/man/man5/meshd.toml.5.gz", "-rw-r--r--"},
		{"./usr/share/man/man1/meshctl.1.gz", "-rw-r--r--"},
		{"./usr/share/man/man1/meshctl-config-check.1.gz", "-rw-r--r--"},
		{"./usr/share/man/man1/meshctl-cert-sign.1.gz", "-rw-r--r--"},
		{"./var/lib/meshd/", "drwx------"},
		{"./usr/share/doc/meshd/copyright", "-rw-r--r--"},
	})
	info := run(t, root, "dpkg-deb", "-I", debs[0])
	for _, want := range []string{"postinst", "prerm", "Package: meshd"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	ctl := filepath.Join(t.TempDir(), "control")
	run(t, root, "dpkg-deb", "-e", debs[0], ctl)
	conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if err != nil || !strings.Contains(string(conffiles), "/etc/meshd/meshd.toml") {
		t.Errorf("/etc/meshd/meshd.toml must be a conffile so upgrades keep local edits: %v %q", err, conffiles)
	}
	t.Run("rpm", func(t *testing.T) { checkRPM(t, root, rpms[0]) })
}

// checkRPM reads the .rpm the way an admin on Fedora would (rpm -qp): the
// same files and modes as the .deb (the licence where Fedora keeps it),
// the config file marked so upgrades keep local edits, no dependency a
// Fedora system cannot satisfy (meshd is static and uses netlink: today
// it requires nothing), and the three scriptlets the maintainer scripts
// provide.
func checkRPM(t *testing.T, root, rpm string) {
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Fatalf("rpm not installed: run scripts/lab-deps.sh: %v", err)
	}
	list := run(t, root, "rpm", "-qlpv", rpm)
	checkListing(t, "rpm", list, []pathMode{
		{"/usr/bin/meshd", "-rwxr-xr-x"},
		{"/usr/bin/meshctl", "-rwxr-xr-x"},
		{"/lib/systemd/system/meshd.service", "-rw-r--r--"},
		{"/etc/meshd/meshd.toml", "-rw-r-----"},
		{"/usr/share/bash-completion/completions/meshctl", "-rw-r--r--"},
		{"/usr/share/fish/vendor_completions.d/meshctl.fish", "-rw-r--r--"},
		{"/usr/share/man/man8/meshd.8.gz", "-rw-r--r--"},
		{"/usr/share/man/man5/meshd.toml.5.gz", "-rw-r--r--"},
		{"/usr/share/man/man1/meshctl.1.gz", "-rw-r--r--"},
		{"/usr/share/man/man1/meshctl-cert-renew.1.gz", "-rw-r--r--"},
		{"/usr/share/licenses/meshd/LICENSE", "-rw-r--r--"},
		{"/var/lib/meshd", "drwx------"},
	})
	if !strings.Contains(list, "/usr/share/zsh/") {
		t.Errorf("rpm: no zsh completion")
	}
	if cf := run(t, root, "rpm", "-qp", "--configfiles", rpm); !strings.Contains(cf, "/etc/meshd/meshd.toml") {
		t.Errorf("rpm: /etc/meshd/meshd.toml is not a %%config file: %q", cf)
	}
	for _, req := range strings.Split(strings.TrimSpace(run(t, root, "rpm", "-qp", "--requires", rpm)), "\n") {
		if req != "" && !strings.HasPrefix(req, "rpmlib(") && !strings.HasPrefix(req, "/bin/sh") {
			t.Errorf("rpm requires %q: meshd needs no other package", req)
		}
	}
	scripts := run(t, root, "rpm", "-qp", "--scripts", rpm)
	for _, want := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"} {
		if !strings.Contains(scripts, want) {
			t.Errorf("rpm lacks its %s:\n%s", want, scripts)
		}
	}
	if info := run(t, root, "rpm", "-qp", "--qf", "%{LICENSE}", rpm); info != "MIT" {
		t.Errorf("rpm License %q, want MIT", info)
	}
}

// pathMode is a path a package must install and the mode it must have.
type pathMode struct{ path, mode string }

// checkListing checks that list, a package's file listing (dpkg-deb -c or
// rpm -qlpv: a line a file, its mode first and its path last), holds every
// path of want with its mode; pkg names the package in the errors.
func checkListing(t *testing.T, pkg, list string, want []pathMode) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, line := range strings.Split(list, "\n") {
			f := strings.Fields(line)
			if len(f) >= 6 && f[len(f)-1] == w.path {
				found = true
				if f[0] != w.mode {
					t.Errorf("%s: %s has mode %s, want %s", pkg, w.path, f[0], w.mode)
				}
			}
		}
		if !found {
			t.Errorf("%s: %s missing:\n%s", pkg, w.path, list)
		}
	}
}

func TestUnitVerifies(t *testing.T) {
	// Listed in scripts/programs.txt: a missing one is a failure of the
	// set-up, not a reason to skip.
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze not installed: run scripts/lab-deps.sh: %v", err)
	}
	root, _ := filepath.Abs("..")
	bin := t.TempDir()
	run(t, root, "go", "build", "-o", bin+"/", "./cmd/meshd", "./cmd/meshctl")
	unit, err := os.ReadFile("meshd.service")
	if err != nil {
		t.Fatal(err)
	}
	// systemd-analyze checks that ExecStart and ExecReload exist; point
	// them at the fresh builds.
	fixed := strings.ReplaceAll(string(unit), "/usr/bin/", bin+"/")
	path := filepath.Join(t.TempDir(), "meshd.service")
	if err := os.WriteFile(path, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil || strings.Contains(string(out), "meshd.service") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"Type=notify", "ExecReload=/usr/bin/meshctl --config /etc/meshd/meshd.toml reload", "RestartPreventExitStatus=3 4", "CapabilityBoundingSet=CAP_NET_ADMIN", "ProtectSystem=strict", "StateDirectory=meshd", "RuntimeDirectory=meshd", "ConfigurationDirectory=meshd"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
}
