package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// runScripts runs the maintainer scripts in order, as dpkg or rpm would,
// with systemctl and the group tools replaced by stand-ins that record
// their arguments, and returns the systemctl calls.
func runScripts(t *testing.T, steps [][]string) []string {
	t.Helper()
	dir := t.TempDir()
	stubs := filepath.Join(dir, "bin")
	log := filepath.Join(dir, "calls")
	if err := os.Mkdir(stubs, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"systemctl", "getent", "groupadd", "addgroup", "chgrp", "chmod"} {
		// getent fails: the group does not exist yet.
		status := "0"
		if name == "getent" {
			status = "1"
		}
		stub := "#!/bin/sh\necho \"${0##*/} $*\" >> \"$CALLS\"\nexit " + status + "\n"
		if err := os.WriteFile(filepath.Join(stubs, name), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	systemd := filepath.Join(dir, "run-systemd-system")
	etc := filepath.Join(dir, "etc-meshd")
	for _, d := range []string{systemd, etc} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range steps {
		cmd := exec.Command("sh", append([]string{filepath.Join("scripts", step[0])}, step[1:]...)...)
		cmd.Env = []string{"PATH=" + stubs, "CALLS=" + log, "MESHD_SYSTEMD_DIR=" + systemd, "MESHD_ETC=" + etc}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(step, " "), err, out)
		}
	}
	data, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var calls []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.HasPrefix(line, "systemctl ") {
			calls = append(calls, strings.TrimPrefix(line, "systemctl "))
		}
	}
	return calls
}

// The maintainer scripts, called the way dpkg and rpm call them: an
// upgrade must keep the service enabled and restart it on the new binary;
// only a removal stops and disables it.
func TestMaintainerScripts(t *testing.T) {
	tests := []struct {
		name  string
		steps [][]string
		want  []string
	}{
		{"deb install", [][]string{{"postinstall.sh", "configure", ""}},
			[]string{"daemon-reload"}},
		{"deb upgrade", [][]string{
			{"preremove.sh", "upgrade", "0.2.0"},
			{"postremove.sh", "upgrade", "0.2.0"},
			{"postinstall.sh", "configure", "0.1.0"},
		}, []string{"daemon-reload", "daemon-reload", "try-restart meshd.service"}},
		{"deb remove", [][]string{{"preremove.sh", "remove"}, {"postremove.sh", "remove"}},
			[]string{"stop meshd.service", "disable meshd.service", "daemon-reload"}},
		{"deb purge", [][]string{{"postremove.sh", "purge"}}, []string{"daemon-reload"}},
		{"deb failed upgrade", [][]string{{"preremove.sh", "failed-upgrade", "0.1.0"}}, nil},
		{"rpm install", [][]string{{"postinstall.sh", "1"}}, []string{"daemon-reload"}},
		// rpm runs the new package's %post, then the old one's %preun and
		// %postun, each with 1 (still installed).
		{"rpm upgrade", [][]string{{"postinstall.sh", "2"}, {"preremove.sh", "1"}, {"postremove.sh", "1"}},
			[]string{"daemon-reload", "try-restart meshd.service", "daemon-reload"}},
		{"rpm erase", [][]string{{"preremove.sh", "0"}, {"postremove.sh", "0"}},
			[]string{"stop meshd.service", "disable meshd.service", "daemon-reload"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runScripts(t, tc.steps)
			if !slices.Equal(got, tc.want) {
				t.Errorf("systemctl calls %q, want %q", got, tc.want)
			}
		})
	}
}

// Without systemd running (a container, a chroot) the scripts call no
// systemctl at all and still succeed.
func TestMaintainerScriptsWithoutSystemd(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sh", "scripts/preremove.sh", "remove")
	cmd.Env = []string{"PATH=" + dir, "MESHD_SYSTEMD_DIR=" + filepath.Join(dir, "absent")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("preremove without systemd: %v\n%s", err, out)
	}
}
