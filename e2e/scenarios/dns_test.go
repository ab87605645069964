//go:build e2e

package scenarios

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/pki"
)

var digStatus = regexp.MustCompile(`status: ([A-Z]+)`)

// dig asks the resolver at server for name (qtype) from ns and returns the
// response code and the answer lines (+short).
func dig(ctx context.Context, ns *lab.Namespace, server netip.Addr, name, qtype string, extra ...string) (rcode string, answers []string, err error) {
	args := append([]string{"+time=1", "+tries=1", "+noall", "+comments", "+answer", "@" + server.String()}, extra...)
	args = append(args, name)
	if qtype != "" {
		args = append(args, qtype)
	}
	out, err := ns.Output(ctx, "dig", args...)
	if err != nil {
		return "", nil, err
	}
	if m := digStatus.FindStringSubmatch(out); m != nil {
		rcode = m[1]
	}
	for _, line := range strings.Split(out, "\n") {
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		f := strings.Fields(line)
		answers = append(answers, f[len(f)-1])
	}
	return rcode, answers, nil
}

// TestDNS: a peer resolves another's name through its own meshd (dig
// against the overlay address, and getent/ping through a resolver
// configured to it), pings it by name, and a revoked node stops resolving
// within a second of the node learning of the revocation. Names outside the
// mesh domain are refused, non-nodes get NXDOMAIN, and port 53 is open on
// the overlay addresses only.
func TestDNS(t *testing.T) {
	testutil.LeakCheck(t)
	l := lab.New(t, lab.Options{})
	m := newMesh(t, l)
	coord := m.addNode(l.AddHost(t, "coord", lab.HostOptions{}), nodeOpts{coordinator: true})
	join := nodeOpts{join: []*node{coord}}
	alice := m.addNode(l.AddNode(t, "alice", lab.NATFullCone, lab.HostOptions{}), join)
	bob := m.addNode(l.AddNode(t, "bob", lab.NATPortRestricted, lab.HostOptions{}), join)
	carol := m.addNode(l.AddNode(t, "carol", lab.NATAddressRestricted, lab.HostOptions{}), join)
	nodes := []*node{coord, alice, bob, carol}
	for _, n := range nodes {
		n.start()
	}
	for _, n := range nodes {
		n.waitSession(t, sessionTimeout)
	}
	mustPeer(t, alice, "bob", isOnline, linkTimeout, "up")
	mustPeer(t, alice, "carol", isOnline, linkTimeout, "up")
	ctx := context.Background()
	ns := alice.host.Namespace
	domain := pki.DefaultMeshDomain

	// dig against alice's own meshd, on her overlay address.
	bobName := "bob." + domain
	var rcode string
	var answers []string
	_, why, ok := waitUntil(linkTimeout, 100*time.Millisecond, func() (bool, string) {
		var err error
		rcode, answers, err = dig(ctx, ns, alice.addr, bobName, "A")
		if err != nil {
			return false, err.Error()
		}
		return rcode == "NOERROR" && len(answers) == 1, rcode + " " + strings.Join(answers, " ")
	})
	if !ok || answers[0] != bob.addr.String() {
		t.Fatalf("dig %s A @%v: %s (want %v)", bobName, alice.addr, why, bob.addr)
	}
	for _, tc := range []struct {
		name, qtype string
		tcp         bool
		rcode, ans  string
	}{
		{"CAROL." + domain, "A", false, "NOERROR", carol.addr.String()},
		{bobName, "A", true, "NOERROR", bob.addr.String()},
		{"printer." + domain, "A", false, "NXDOMAIN", ""},
		{"example.com", "A", false, "REFUSED", ""},
	} {
		var extra []string
		if tc.tcp {
			extra = []string{"+tcp"}
		}
		rc, ans, err := dig(ctx, ns, alice.addr, tc.name, tc.qtype, extra...)
		if err != nil || rc != tc.rcode || (tc.ans != "" && (len(ans) != 1 || ans[0] != tc.ans)) || (tc.ans == "" && len(ans) != 0) {
			t.Errorf("dig %s %s (tcp %v): %s %q %v, want %s %q", tc.name, tc.qtype, tc.tcp, rc, ans, err, tc.rcode, tc.ans)
		}
	}
	if rc, ans, err := dig(ctx, ns, alice.addr, bob.addr.String(), "", "-x"); err != nil || rc != "NOERROR" || len(ans) != 1 || ans[0] != bobName+"." {
		t.Errorf("dig -x %v: %s %q %v, want %s.", bob.addr, rc, ans, err, bobName)
	}

	// Port 53 listens on the overlay addresses only, nowhere public.
	for _, proto := range []string{"-u", "-t"} {
		out, err := ns.Run(ctx, "ss", "-Hln", proto, "sport = :53")
		if err != nil {
			t.Fatalf("ss: %v", err)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			local, err := netip.ParseAddrPort(f[3])
			if err != nil || (local.Addr() != alice.addr && !strings.HasPrefix(local.Addr().String(), "fd")) {
				t.Errorf("port 53 (%s) listens on %s, not an overlay address", proto, f[3])
			}
		}
	}

	// getent and ping through the system resolver pointed at meshd: ip netns
	// exec mounts /etc/netns/NETNS/resolv.conf over /etc/resolv.conf.
	etc := filepath.Join("/etc/netns", ns.Netns())
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+alice.addr.String()+"\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := ns.Run(ctx, "getent", "ahostsv4", bobName)
	if err != nil || !strings.Contains(out, bob.addr.String()) {
		t.Errorf("getent ahostsv4 %s: %v\n%s", bobName, err, out)
	}
	if out, err := ns.Run(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "1", "-4", bobName); err != nil || !strings.Contains(out, bob.addr.String()) {
		t.Errorf("ping %s: %v\n%s", bobName, err, out)
	}
	// A TCP connection by name: labtool (Go's resolver) reads the same
	// resolv.conf.
	bob.startSink(t)
	out, err = ns.Output(ctx, m.tool, "send", "-to", net.JoinHostPort(bobName, strconv.Itoa(sinkPort)), "-bytes", "65536", "-timeout", "20s")
	var sr sendResult
	if jerr := json.Unmarshal([]byte(out), &sr); err != nil || jerr != nil || !sr.OK {
		t.Errorf("labtool send to %s: %v %v %q", bobName, err, jerr, out)
	}
	if out, err := alice.ctl(ctx, "ping", "-c", "2", bobName); err != nil {
		t.Errorf("meshctl ping %s: %v\n%s", bobName, err, out)
	}
	if out, err := alice.ctl(ctx, "dns", "status"); err != nil || !strings.Contains(out, "carol."+domain) {
		t.Errorf("meshctl dns status: %v\n%s", err, out)
	} else {
		t.Logf("meshctl dns status on alice:\n%s", out)
	}

	// Revoke carol: the coordinator gets the new CRL, alice learns of it,
	// and carol's name must be gone within a second of alice's view.
	m.offline("ca", "revoke", "--ca-dir", m.caDir, carol.cert)
	coord.opts.crl = filepath.Join(m.caDir, "crl.pem")
	coord.writeConfig()
	p, _ := coord.process()
	hup := time.Now()
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	carolName := "carol." + domain
	var cutOff, gone time.Time
	_, why, ok = waitUntil(linkTimeout, 20*time.Millisecond, func() (bool, string) {
		if cutOff.IsZero() {
			if pc, found, err := alice.peer(ctx, "carol"); err == nil && (!found || !pc.Online) {
				cutOff = time.Now()
			}
		}
		rc, _, err := dig(ctx, ns, alice.addr, carolName, "A")
		if err == nil && rc == "NXDOMAIN" {
			gone = time.Now()
			return true, ""
		}
		return false, rc
	})
	if !ok {
		t.Fatalf("the revoked carol still resolves on alice: %s", why)
	}
	if cutOff.IsZero() {
		cutOff = gone // the name went first (or in the same poll)
	}
	t.Logf("carol's name stopped resolving %v after the coordinator's SIGHUP, %v after alice cut carol off",
		gone.Sub(hup).Round(time.Millisecond), gone.Sub(cutOff).Round(time.Millisecond))
	if d := gone.Sub(cutOff); d > time.Second {
		t.Errorf("carol's name resolved %v after alice cut carol off (want within 1s)", d.Round(time.Millisecond))
	}
	if rc, ans, err := dig(ctx, ns, alice.addr, bobName, "A"); err != nil || rc != "NOERROR" || len(ans) != 1 {
		t.Errorf("bob after carol's revocation: %s %q %v", rc, ans, err)
	}
	for _, n := range nodes {
		if n != carol {
			n.alive(t)
		}
	}
}
