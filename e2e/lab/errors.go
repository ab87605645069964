//go:build e2e

package lab

import (
	"errors"
	"fmt"
	"strings"

	"github.com/meshd/meshd/e2e/internal/probe"
)

var (
	// ErrNoMain means New was called in a test binary whose TestMain does not
	// run lab.Main, so nothing would tear labs down on a signal or timeout.
	ErrNoMain = errors.New("lab: lab.Main is not running (call it from TestMain)")
	// ErrShuttingDown means New was called after a signal or the -test.timeout
	// watchdog started tearing every lab down.
	ErrShuttingDown = errors.New("lab: test binary is shutting down (signal or -test.timeout near)")
	// ErrClosed means the lab was already torn down.
	ErrClosed = errors.New("lab: closed")
	// ErrBadName means a host or site name is not 1-20 characters of [a-z0-9].
	ErrBadName = errors.New("lab: bad name")
	// ErrNameTaken means a host or site of that name already exists.
	ErrNameTaken = errors.New("lab: name already used")
	// ErrNoAddress means an address pool is exhausted or an address asked for
	// is outside its network or taken.
	ErrNoAddress = errors.New("lab: address not available")
	// ErrPortOverlap means two hosts of one site would share statically
	// mapped ports.
	ErrPortOverlap = errors.New("lab: port ranges overlap")
	// ErrBadOption means an Options field is out of range or does not fit
	// the call (for example a firewall on a LAN host).
	ErrBadOption = errors.New("lab: bad option")
	// ErrNoReply means a probe got no answer: the path is cut, blocked or
	// filtered, or no server listens there.
	ErrNoReply = probe.ErrNoReply
	// ErrUnclassifiable means filtering-test results fit none of EIF, ADF,
	// APDF (for example the new-address reply passed but the same-address
	// one did not), which points at a broken recipe.
	ErrUnclassifiable = errors.New("lab: probe results fit no RFC 4787 class")
	// ErrStillRunning means a process did not exit after SIGKILL.
	ErrStillRunning = errors.New("lab: process still running after SIGKILL")
	// ErrLeftovers means teardown found namespaces or processes it could
	// not remove.
	ErrLeftovers = errors.New("lab: teardown left things behind")
)

// CmdError is a command the lab ran that failed.
type CmdError struct {
	// Netns is the namespace the command ran in; empty for the root one.
	Netns string
	// Argv is the command line as run, without the `ip netns exec` prefix.
	Argv []string
	// Output is its combined stdout and stderr, trimmed.
	Output string
	// Err is the exec error (usually *exec.ExitError).
	Err error
}

// Error says which command failed where, and its output.
func (e *CmdError) Error() string {
	where := "root namespace"
	if e.Netns != "" {
		where = "netns " + e.Netns
	}
	return fmt.Sprintf("lab: %q in %s: %v: %s", strings.Join(e.Argv, " "), where, e.Err, e.Output)
}

// Unwrap returns the exec error.
func (e *CmdError) Unwrap() error { return e.Err }
