package dns

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/meshd/meshd/internal/testutil"
)

// The D-Bus path runs against a private dbus-daemon (no systemd-resolved
// can run in a test) on which resolvedDouble owns org.freedesktop.resolve1
// and records every call it gets, as the real resolved would receive them.

// privateBus starts a dbus-daemon of its own and returns its address.
func privateBus(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("dbus-daemon is not installed (Debian package dbus-daemon)")
	}
	cmd := exec.Command("dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1",
		"--address=unix:path="+t.TempDir()+"/bus")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon printed no address: %v", err)
	}
	return strings.TrimSpace(line)
}

// resolvedDouble stands in for systemd-resolved on the bus.
type resolvedDouble struct {
	conn *dbus.Conn
	mu   sync.Mutex
	log  []string
}

func (d *resolvedDouble) record(s string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log = append(d.log, s)
}

func (d *resolvedDouble) calls() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.log)
}

func (d *resolvedDouble) SetLinkDNS(link int32, servers []linkDNS) *dbus.Error {
	var parts []string
	for _, s := range servers {
		a, _ := netip.AddrFromSlice(s.Addr)
		parts = append(parts, fmt.Sprintf("%d/%v", s.Family, a))
	}
	d.record(fmt.Sprintf("SetLinkDNS %d %s", link, strings.Join(parts, ",")))
	return nil
}

func (d *resolvedDouble) SetLinkDomains(link int32, domains []linkDomain) *dbus.Error {
	var parts []string
	for _, dom := range domains {
		p := dom.Domain
		if dom.RoutingOnly {
			p = "~" + p
		}
		parts = append(parts, p)
	}
	d.record(fmt.Sprintf("SetLinkDomains %d %s", link, strings.Join(parts, ",")))
	return nil
}

func (d *resolvedDouble) SetLinkDefaultRoute(link int32, v bool) *dbus.Error {
	d.record(fmt.Sprintf("SetLinkDefaultRoute %d %v", link, v))
	return nil
}

func (d *resolvedDouble) SetLinkDNSSEC(link int32, v string) *dbus.Error {
	d.record(fmt.Sprintf("SetLinkDNSSEC %d %s", link, v))
	return nil
}

func (d *resolvedDouble) RevertLink(link int32) *dbus.Error {
	d.record(fmt.Sprintf("RevertLink %d", link))
	return nil
}

// startDouble connects a double to the bus and takes resolved's name.
func startDouble(t *testing.T, addr string) *resolvedDouble {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	d := &resolvedDouble{conn: conn}
	if err := conn.Export(d, resolvedPath, resolvedManager); err != nil {
		t.Fatal(err)
	}
	if r, err := conn.RequestName(resolvedName, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v %v", r, err)
	}
	return d
}

func TestResolvedSplitDNS(t *testing.T) {
	testutil.LeakCheck(t)
	addr := privateBus(t)
	first := startDouble(t, addr)
	r, err := NewResolved(ResolvedOptions{
		Link:    7,
		Servers: []netip.Addr{netip.MustParseAddr("100.64.0.7"), netip.MustParseAddr("fd7a:6d65:7368::7")},
		Domain:  "mesh.internal",
		Bus:     func() (*dbus.Conn, error) { return dbus.Connect(addr) },
		Retry:   50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	defer r.Close()
	want := []string{
		"SetLinkDNS 7 2/100.64.0.7,10/fd7a:6d65:7368::7",
		"SetLinkDomains 7 ~mesh.internal",
		"SetLinkDefaultRoute 7 false",
		"SetLinkDNSSEC 7 no",
	}
	testutil.WaitFor(t, 5*time.Second, "resolved configured", func() bool { return r.State().Configured })
	if got := first.calls(); !slices.Equal(got, want) {
		t.Fatalf("calls\n%q\nwant\n%q", got, want)
	}

	// resolved restarts: the new instance gets the link's settings again.
	_ = first.conn.Close()
	testutil.WaitFor(t, 5*time.Second, "state follows resolved stopping", func() bool { return !r.State().Configured })
	second := startDouble(t, addr)
	testutil.WaitFor(t, 5*time.Second, "re-applied after a restart", func() bool { return len(second.calls()) == len(want) })
	if got := second.calls(); !slices.Equal(got, want) {
		t.Fatalf("after a restart: calls\n%q\nwant\n%q", got, want)
	}

	// Stopping reverts the link.
	_ = r.Close()
	if got := second.calls(); len(got) != len(want)+1 || got[len(want)] != "RevertLink 7" {
		t.Fatalf("after Close: %q, want RevertLink 7 last", got)
	}
	_ = second.conn.Close()
}

func TestResolvedNotRunning(t *testing.T) {
	testutil.LeakCheck(t)
	addr := privateBus(t)
	r, err := NewResolved(ResolvedOptions{
		Link: 3, Servers: []netip.Addr{netip.MustParseAddr("100.64.0.7")}, Domain: "mesh.internal",
		Bus: func() (*dbus.Conn, error) { return dbus.Connect(addr) }, Retry: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	testutil.WaitFor(t, 5*time.Second, "state says resolved is not running", func() bool {
		return r.State().Error == errNotRunning.Error()
	})
	// resolved starting later is picked up.
	d := startDouble(t, addr)
	testutil.WaitFor(t, 5*time.Second, "configured once resolved runs", func() bool { return r.State().Configured })
	_ = r.Close()
	if got := d.calls(); got[len(got)-1] != "RevertLink 3" {
		t.Errorf("calls %q", got)
	}
	_ = d.conn.Close()
}
