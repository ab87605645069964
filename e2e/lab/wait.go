//go:build e2e

package lab

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pollInterval is how often the Wait helpers re-check. Commands in a
// namespace cost a few milliseconds of CPU each, so they are polled less
// eagerly than testutil.WaitFor polls in-process conditions.
const pollInterval = 50 * time.Millisecond

// WaitOutput runs name with args in ns every 50ms until match returns true
// for its combined output (whatever the exit status), and returns that
// output. It fails t with the last output if timeout passes first. Use it to
// wait on `meshctl status --json`, `ss -lun`, `conntrack -L` and the like
// instead of sleeping.
func WaitOutput(t testing.TB, timeout time.Duration, ns *Namespace, match func(out string) bool, name string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), min(cmdTimeout, max(time.Until(deadline), time.Second)))
		last, lastErr = ns.Run(ctx, name, args...)
		cancel()
		if match(last) {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("lab: timed out after %v waiting on `%s %s` in %s; last output (err %v):\n%s",
				timeout, name, strings.Join(args, " "), ns.name, lastErr, tail(last))
		}
		time.Sleep(pollInterval)
	}
}

// WaitListening waits until something in ns listens on port (proto "udp"
// or "tcp"), as ss shows it.
func WaitListening(t testing.TB, timeout time.Duration, ns *Namespace, proto string, port int) {
	t.Helper()
	flag := "-Hlnu"
	if proto == "tcp" {
		flag = "-Hlnt"
	}
	want := ":" + strconv.Itoa(port)
	WaitOutput(t, timeout, ns, func(out string) bool {
		// ss -H columns: State Recv-Q Send-Q Local:Port Peer:Port
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 4 && strings.HasSuffix(f[3], want) {
				return true
			}
		}
		return false
	}, "ss", flag)
}
