package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshd/meshd/internal/testutil"
)

func TestDecide(t *testing.T) {
	const daemonUID, group = 0, 4242
	withGroup := policy{selfUID: daemonUID, gid: group, hasGroup: true}
	noGroup := policy{selfUID: daemonUID}
	unprivDaemon := policy{selfUID: 1500, gid: group, hasGroup: true}
	all := accessRead | accessWrite
	tests := []struct {
		name string
		p    policy
		c    peerCred
		want access
	}{
		{"root", withGroup, peerCred{UID: 0, GID: 0}, all},
		{"root without group configured", noGroup, peerCred{UID: 0, GID: 0}, all},
		{"primary gid is the group", withGroup, peerCred{UID: 1000, GID: group}, all},
		{"supplementary group", withGroup, peerCred{UID: 1000, GID: 1000, Groups: []uint32{27, group, 100}}, all},
		{"not in the group", withGroup, peerCred{UID: 1000, GID: 1000, Groups: []uint32{27, 100}}, 0},
		{"no groups at all", withGroup, peerCred{UID: 1000, GID: 1000}, 0},
		{"group member but no group configured", noGroup, peerCred{UID: 1000, GID: group, Groups: []uint32{group}}, 0},
		{"gid 0 is not root", noGroup, peerCred{UID: 1000, GID: 0}, 0},
		{"daemon's own uid", unprivDaemon, peerCred{UID: 1500, GID: 1500}, all},
		{"other user of unprivileged daemon", unprivDaemon, peerCred{UID: 1501, GID: 1501}, 0},
		{"nobody", withGroup, peerCred{UID: 65534, GID: 65534, Groups: []uint32{65534}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.decide(tt.c); got != tt.want {
				t.Errorf("decide(%+v) = %b, want %b", tt.c, got, tt.want)
			}
		})
	}
}

const procStatusSample = `Name:	bash
Umask:	0022
State:	S (sleeping)
Tgid:	4711
Pid:	4711
Uid:	1000	1001	1000	1001
Gid:	1000	1002	1000	1002
FDSize:	256
Groups:	4 24 27 4242 
NStgid:	4711
`

func TestParseProcStatus(t *testing.T) {
	st, err := parseProcStatus(strings.NewReader(procStatusSample))
	if err != nil {
		t.Fatal(err)
	}
	if st.euid != 1001 || st.egid != 1002 {
		t.Errorf("euid/egid = %d/%d, want the effective (second) fields 1001/1002", st.euid, st.egid)
	}
	if want := []uint32{4, 24, 27, 4242}; !slices.Equal(st.groups, want) {
		t.Errorf("groups = %v, want %v", st.groups, want)
	}

	bad := []struct{ name, in string }{
		{"no uid line", "Gid:\t1 1 1 1\n"},
		{"short uid line", "Uid:\t1\nGid:\t1 1 1 1\n"},
		{"non-numeric gid", "Uid:\t1 1 1 1\nGid:\t1 x 1 1\n"},
		{"non-numeric group", "Uid:\t1 1 1 1\nGid:\t1 1 1 1\nGroups:\t4 x\n"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if _, err := parseProcStatus(strings.NewReader(b.in)); err == nil {
				t.Errorf("parseProcStatus(%q) succeeded, want an error", b.in)
			}
		})
	}
}

func TestProcGroups(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "4711"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "4711", "status"), []byte(procStatusSample), 0o644); err != nil {
		t.Fatal(err)
	}
	groups, err := procGroups(root, 4711, 1001, 1002)
	if err != nil || !slices.Equal(groups, []uint32{4, 24, 27, 4242}) {
		t.Errorf("procGroups = %v, %v; want the Groups line", groups, err)
	}
	// A pid reused by a process with other credentials is not trusted.
	if _, err := procGroups(root, 4711, 1000, 1000); err == nil {
		t.Error("procGroups accepted a process whose effective ids differ from SO_PEERCRED")
	}
	if _, err := procGroups(root, 4712, 1001, 1002); err == nil {
		t.Error("procGroups of a missing pid succeeded")
	}
}

func TestResolveGroup(t *testing.T) {
	gid, name, err := resolveGroup("root")
	if err != nil || gid != 0 || name != "root" {
		t.Errorf(`resolveGroup("root") = %d, %q, %v; want 0, "root"`, gid, name, err)
	}
	gid, name, err = resolveGroup("0")
	if err != nil || gid != 0 || name != "root" {
		t.Errorf(`resolveGroup("0") = %d, %q, %v; want 0, "root"`, gid, name, err)
	}
	gid, _, err = resolveGroup("424242")
	if err != nil || gid != 424242 {
		t.Errorf(`resolveGroup("424242") = %d, %v; a numeric gid needs no group entry`, gid, err)
	}
	if _, _, err := resolveGroup("no-such-group-meshd-test"); !errors.Is(err, ErrUnknownGroup) {
		t.Errorf("resolveGroup of an unknown name: %v, want ErrUnknownGroup", err)
	}
}

// TestConnCred reads real SO_PEERCRED credentials over a unix socket.
func TestConnCred(t *testing.T) {
	testutil.LeakCheck(t)
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	c, err := connCred(server, "/proc")
	if err != nil {
		t.Fatal(err)
	}
	if int(c.UID) != os.Geteuid() || int(c.GID) != os.Getegid() || int(c.PID) != os.Getpid() {
		t.Errorf("cred = %+v, want uid %d gid %d pid %d", c, os.Geteuid(), os.Getegid(), os.Getpid())
	}
	want, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range want {
		if !slices.Contains(c.Groups, uint32(g)) {
			t.Errorf("groups %v lack %d from getgroups %v", c.Groups, g, want)
		}
	}
	if _, err := connCred(fakeConn{}, "/proc"); err == nil {
		t.Error("connCred of a non-unix connection succeeded")
	}
}

type fakeConn struct{ net.Conn }
