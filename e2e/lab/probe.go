//go:build e2e

package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/internal/probe"
)

const probePkg = "github.com/meshd/meshd/e2e/internal/cmd/labprobe"

// FilterResult is the outcome of a filtering test: the address the
// contacted server saw and which server sockets' replies got through.
type FilterResult = probe.FilterResult

// FilterWindow is how long the filtering test waits for the replies of the
// sockets it did not contact, once the contacted one answered. Inside the
// lab replies take well under a millisecond.
const FilterWindow = 300 * time.Millisecond

// probe runs the labprobe client in the namespace and decodes its JSON into
// out. The probe gives up when ctx does (3s if ctx has no deadline).
func (n *Namespace) probe(ctx context.Context, out any, args ...string) error {
	bin, err := build(probePkg)
	if err != nil {
		return err
	}
	timeout := 3 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return fmt.Errorf("%w: %v", ErrNoReply, context.DeadlineExceeded)
	}
	args = append(args, "-timeout", timeout.String())
	// The command's own context gets a grace period so the probe can report
	// its timeout instead of being killed.
	cctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	cmd := n.Command(cctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	n.lab.log.Debug("probe", "netns", n.name, "args", strings.Join(args, " "), "stdout", strings.TrimSpace(stdout.String()), "stderr", strings.TrimSpace(stderr.String()), "error", err)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			return fmt.Errorf("%w: in %s: %s", ErrNoReply, n.name, strings.TrimSpace(stderr.String()))
		}
		return &CmdError{Netns: n.name, Argv: append([]string{"labprobe"}, args...), Output: strings.TrimSpace(stderr.String()), Err: err}
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return fmt.Errorf("lab: probe output %q: %w", stdout.String(), err)
	}
	return nil
}

// ProbeUDP sends a UDP echo request from local port localPort to each
// target in turn, from one socket, and returns the source address each
// target observed (after every NAT on the way). It fails with ErrNoReply if
// a target does not answer before ctx ends. The targets need a probe server
// (StartProbeServer or AddNATProbe).
func (n *Namespace) ProbeUDP(ctx context.Context, localPort int, targets ...netip.AddrPort) ([]netip.AddrPort, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w: ProbeUDP without targets", ErrBadOption)
	}
	for _, t := range targets[1:] {
		if t.Addr().Is4() != targets[0].Addr().Is4() {
			return nil, fmt.Errorf("%w: ProbeUDP targets of both families (one socket has one)", ErrBadOption)
		}
	}
	var res probe.EchoResult
	err := n.probe(ctx, &res, "echo", "-bind", anyAddr(targets[0], localPort).String(), "-to", joinAddrs(targets))
	return res.Observed, err
}

// anyAddr is the wildcard address of target's family with port: a probe
// socket has one family, the target's.
func anyAddr(target netip.AddrPort, port int) netip.AddrPort {
	if target.Addr().Is4() {
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port))
	}
	return netip.AddrPortFrom(netip.IPv6Unspecified(), uint16(port))
}

// ProbePunch runs the simultaneous open from local port localPort to
// target, where another ProbePunch runs at the same time (from target's
// port to this host's address): both send until one hears the other, which
// is how two hosts behind stateful firewalls connect. It returns the source
// of the first datagram heard from target, or ErrNoReply if none arrived
// before ctx ended.
func (n *Namespace) ProbePunch(ctx context.Context, localPort int, target netip.AddrPort) (netip.AddrPort, error) {
	var res probe.PunchResult
	err := n.probe(ctx, &res, "punch", "-bind", anyAddr(target, localPort).String(), "-to", target.String(), "-window", FilterWindow.String())
	return res.Heard, err
}

// ProbeFilter runs the filtering test from local port localPort: it
// contacts only target, whose server then answers from every socket it has,
// and reports which answers came through within FilterWindow.
func (n *Namespace) ProbeFilter(ctx context.Context, localPort int, target netip.AddrPort) (FilterResult, error) {
	var res FilterResult
	err := n.probe(ctx, &res, "filter", "-bind", anyAddr(target, localPort).String(), "-to", target.String(), "-window", FilterWindow.String())
	return res, err
}

// ProbeTCP connects to target and returns the source address it observed.
func (n *Namespace) ProbeTCP(ctx context.Context, target netip.AddrPort) (netip.AddrPort, error) {
	var res probe.TCPResult
	err := n.probe(ctx, &res, "tcp", "-to", target.String())
	return res.Observed, err
}

// StartProbeServer starts a probe server in the namespace on the given UDP
// and TCP addresses (they must be the namespace's own) and waits until it
// is bound. Stop it with Proc.Stop, or leave it to the lab's Close.
func (n *Namespace) StartProbeServer(udp, tcp []netip.AddrPort) (*Proc, error) {
	bin, err := build(probePkg)
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "-udp", joinAddrs(udp)}
	if len(tcp) > 0 {
		args = append(args, "-tcp", joinAddrs(tcp))
	}
	p, err := n.StartWith(ProcOptions{Label: "probe", StopTimeout: time.Second}, bin, args...)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Stdout(), "ready") {
		if p.Exited() || time.Now().After(deadline) {
			_ = p.Stop()
			return nil, fmt.Errorf("lab: probe server in %s did not start: %s", n.name, strings.TrimSpace(p.Stderr()))
		}
		time.Sleep(10 * time.Millisecond) // polling a file written by another process
	}
	return p, nil
}

func joinAddrs(aps []netip.AddrPort) string {
	s := make([]string, len(aps))
	for i, ap := range aps {
		s[i] = ap.String()
	}
	return strings.Join(s, ",")
}

// NATProbe is a public server the RFC 4787 tests of LAB.md §1 run against:
// two addresses A and B, UDP on A:3478, A:3479, A:9999 and B:3478, TCP on
// A:3478.
type NATProbe struct {
	// Host is the public host the server runs on.
	Host *Host
	// Primary (A:3478) is what clients contact first in both tests.
	Primary netip.AddrPort
	// OtherAddr (B:3478) is a second destination IP.
	OtherAddr netip.AddrPort
	// OtherPort (A:3479) is the same IP on another port (mapping test).
	OtherPort netip.AddrPort
	// AltPort (A:9999) is the same IP on a port the client never contacts
	// (filtering test).
	AltPort netip.AddrPort
	// TCP (A:3478) answers TCP connections.
	TCP netip.AddrPort
	// Proc is the server process.
	Proc *Proc
}

// AddNATProbe adds a public host called name with two addresses and starts
// a probe server on it. It must be called from the test goroutine and fails
// t on error.
func (l *Lab) AddNATProbe(t testing.TB, name string) *NATProbe {
	t.Helper()
	h := l.AddHost(t, name, HostOptions{ExtraAddrs: 1})
	ips := h.IPs()
	a, b := ips[0], ips[1]
	p := &NATProbe{
		Host:      h,
		Primary:   netip.AddrPortFrom(a, 3478),
		OtherAddr: netip.AddrPortFrom(b, 3478),
		OtherPort: netip.AddrPortFrom(a, 3479),
		AltPort:   netip.AddrPortFrom(a, 9999),
		TCP:       netip.AddrPortFrom(a, 3478),
	}
	proc, err := h.StartProbeServer([]netip.AddrPort{p.Primary, p.OtherAddr, p.OtherPort, p.AltPort}, []netip.AddrPort{p.TCP})
	if err != nil {
		t.Fatal(err)
	}
	p.Proc = proc
	return p
}

// NATBehavior is what Measure found.
type NATBehavior struct {
	Mapping   Mapping
	Filtering Filtering
	// Mapped is the client's Port as Primary, OtherAddr and OtherPort saw
	// it, in that order.
	Mapped []netip.AddrPort
	// Filter is the filtering test, run from the client's Port+1.
	Filter FilterResult
}

// String renders the classification and the raw observations.
func (b NATBehavior) String() string {
	return fmt.Sprintf("%v/%v mapped=%v filter-passed=%v", b.Mapping, b.Filtering, b.Mapped, b.Filter.From)
}

// Measure runs the mapping test from h's Port and the filtering test from
// its Port+1 against the probe server, and classifies the result. Run it
// on fresh ports: a filtering test after earlier contact with the other
// addresses would see them as contacted.
func (p *NATProbe) Measure(ctx context.Context, h *Host) (NATBehavior, error) {
	var b NATBehavior
	mapped, err := h.ProbeUDP(ctx, h.Port(), p.Primary, p.OtherAddr, p.OtherPort)
	if err != nil {
		return b, fmt.Errorf("mapping test from %v: %w", h, err)
	}
	b.Mapped = mapped
	b.Mapping = MappingEndpointIndependent
	for _, m := range mapped[1:] {
		if m != mapped[0] {
			b.Mapping = MappingEndpointDependent
		}
	}
	f, err := h.ProbeFilter(ctx, h.Port()+1, p.Primary)
	if err != nil {
		return b, fmt.Errorf("filtering test from %v: %w", h, err)
	}
	b.Filter = f
	sameIP, otherIP := f.Passed(p.AltPort), f.Passed(p.OtherAddr)
	switch {
	case sameIP != f.Passed(p.OtherPort):
		return b, fmt.Errorf("%w: same-IP replies disagree: %v", ErrUnclassifiable, b)
	case sameIP && otherIP:
		b.Filtering = FilteringEndpointIndependent
	case sameIP:
		b.Filtering = FilteringAddressDependent
	case !otherIP:
		b.Filtering = FilteringAddressPortDependent
	default:
		return b, fmt.Errorf("%w: %v", ErrUnclassifiable, b)
	}
	return b, nil
}
