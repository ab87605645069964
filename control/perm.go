package control

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// Permission model.
//
// The socket file is mode 0660, owned by the daemon's user and the control
// group, so the kernel already refuses connect(2) to anyone else. The server
// checks again per request from the peer's SO_PEERCRED credentials, because a
// socket's mode is easy to loosen by accident (a bind mount, a chmod in a
// container image) and a handler must not depend on it.
//
// Read (status, peers, why, ping, netcheck, events) is allowed to:
//   - root (uid 0),
//   - the daemon's own uid (a daemon run unprivileged for testing),
//   - members of the configured group: the caller's primary gid, or one of
//     its supplementary groups read from /proc/<pid>/status "Groups:".
//
// Write (reload) is allowed to the same callers. Reload only makes meshd
// re-read configuration files that root owns, exactly as SIGHUP does; it
// cannot inject content, so a group member gains nothing beyond what the
// operator already wrote. Any future endpoint that takes configuration from
// the caller must require accessWrite and revisit this rule (decide is the one
// place that changes).
//
// Supplementary groups are read at accept time, and only trusted when the
// process's effective uid and gid in /proc still match SO_PEERCRED, so a pid
// that exited and was reused by a different user's process is not credited
// with that process's groups.

// access is what a caller may do, a bit set.
type access uint8

const (
	accessRead access = 1 << iota
	accessWrite
)

// peerCred is the identity of the process at the other end of a connection.
type peerCred struct {
	PID    int32
	UID    uint32 // effective uid at connect(2)
	GID    uint32 // effective gid at connect(2)
	Groups []uint32
}

// policy is the permission decision, made from explicit inputs so that it can
// be tested without running as different users.
type policy struct {
	selfUID  uint32 // the daemon's effective uid
	gid      uint32 // the control group
	hasGroup bool   // false: only root and selfUID
}

// decide returns what c may do.
func (p policy) decide(c peerCred) access {
	const all = accessRead | accessWrite
	if c.UID == 0 || c.UID == p.selfUID {
		return all
	}
	if !p.hasGroup {
		return 0
	}
	if c.GID == p.gid {
		return all
	}
	for _, g := range c.Groups {
		if g == p.gid {
			return all
		}
	}
	return 0
}

// resolveGroup turns ServerOptions.Group (a name or a numeric gid) into a gid
// and a display name.
func resolveGroup(s string) (gid uint32, name string, err error) {
	if n, perr := strconv.ParseUint(s, 10, 32); perr == nil {
		name = s
		if g, lerr := user.LookupGroupId(s); lerr == nil {
			name = g.Name
		}
		return uint32(n), name, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, "", fmt.Errorf("%w %q: %v", ErrUnknownGroup, s, err)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, "", fmt.Errorf("%w %q: gid %q is not numeric", ErrUnknownGroup, s, g.Gid)
	}
	return uint32(n), g.Name, nil
}

// procGroups returns the supplementary groups of pid from
// procRoot/<pid>/status, provided its effective uid and gid are still uid and
// gid.
func procGroups(procRoot string, pid int32, uid, gid uint32) ([]uint32, error) {
	f, err := os.Open(procRoot + "/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := parseProcStatus(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	if st.euid != uid || st.egid != gid {
		return nil, fmt.Errorf("pid %d changed credentials since connect (euid %d egid %d, connected as %d/%d)",
			pid, st.euid, st.egid, uid, gid)
	}
	return st.groups, nil
}

type procStatus struct {
	euid, egid uint32
	groups     []uint32
}

// parseProcStatus reads the Uid, Gid and Groups lines of a /proc/<pid>/status
// file. Uid and Gid list real, effective, saved and filesystem ids.
func parseProcStatus(r io.Reader) (procStatus, error) {
	var st procStatus
	var haveUID, haveGID bool
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(val)
		switch key {
		case "Uid", "Gid":
			if len(fields) < 2 {
				return st, fmt.Errorf("malformed %s line %q", key, sc.Text())
			}
			n, err := strconv.ParseUint(fields[1], 10, 32)
			if err != nil {
				return st, fmt.Errorf("malformed %s line %q", key, sc.Text())
			}
			if key == "Uid" {
				st.euid, haveUID = uint32(n), true
			} else {
				st.egid, haveGID = uint32(n), true
			}
		case "Groups":
			st.groups = st.groups[:0]
			for _, f := range fields {
				n, err := strconv.ParseUint(f, 10, 32)
				if err != nil {
					return st, fmt.Errorf("malformed Groups line %q", sc.Text())
				}
				st.groups = append(st.groups, uint32(n))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return st, err
	}
	if !haveUID || !haveGID {
		return st, fmt.Errorf("no Uid/Gid lines")
	}
	return st, nil
}
