//go:build e2e

package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
)

// say prints a step of the demo to the terminal (stdout: the demo is for
// a person, not a test log).
func say(format string, args ...any) {
	fmt.Printf("\n\033[1m== "+format+"\033[0m\n", args...)
}

// show prints a command line and its output.
func show(cmd, out string) {
	fmt.Printf("$ %s\n%s", cmd, out)
	if !strings.HasSuffix(out, "\n") {
		fmt.Println()
	}
}

// demoNode is one meshd of the demo.
type demoNode struct {
	host *lab.Host
	name string
	addr netip.Addr
	dir  string
	sock string
	cfg  string
}

// TestDemo is the walk-through `make demo` runs.
func TestDemo(t *testing.T) {
	start := time.Now()
	l := lab.New(t, lab.Options{})
	t.Cleanup(func() {
		say("tearing down: stopping meshd, deleting the namespaces (%s*)", l.Prefix())
	})
	say("building meshd and meshctl")
	meshd := lab.Build(t, "github.com/meshd/meshd/cmd/meshd")
	meshctl := lab.Build(t, "github.com/meshd/meshd/cmd/meshctl")

	say("building the lab: a backbone \"internet\", a coordinator on it, two sites behind NATs")
	coordHost := l.AddHost(t, "coord", lab.HostOptions{})
	aliceHost := l.AddNode(t, "alice", lab.NATPortRestricted, lab.HostOptions{})
	bobHost := l.AddNode(t, "bob", lab.NATSymmetric, lab.HostOptions{})
	fmt.Print(l.Describe())

	say("creating the mesh CA and one certificate per node (offline, with meshctl)")
	caDir := filepath.Join(t.TempDir(), "ca")
	offline := func(args ...string) {
		t.Helper()
		out, err := exec.Command(meshctl, args...).CombinedOutput()
		show("meshctl "+strings.Join(args, " "), string(out))
		if err != nil {
			t.Fatalf("meshctl %s: %v", strings.Join(args, " "), err)
		}
	}
	offline("ca", "init", "--name", "demo-mesh", "--dir", caDir)
	gossipKey, err := exec.Command(meshctl, "config", "gossip-key").Output()
	if err != nil {
		t.Fatalf("meshctl config gossip-key: %v", err)
	}
	var nodes []*demoNode
	for i, h := range []*lab.Host{coordHost, aliceHost, bobHost} {
		dir, err := h.StateDir()
		if err != nil {
			t.Fatal(err)
		}
		n := &demoNode{host: h, name: h.Name(), addr: netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}), dir: dir,
			sock: filepath.Join(dir, "meshd.sock"), cfg: filepath.Join(dir, "meshd.toml")}
		args := []string{"cert", "sign", "--ca-dir", caDir, "--name", n.name, "--ip", n.addr.String() + "/10", "--out", dir}
		if h == coordHost {
			args = append(args, "--coordinator") // nodes accept coordinator sessions only from this role
		}
		offline(args...)
		nodes = append(nodes, n)
	}
	coord := nodes[0]
	session := netip.AddrPortFrom(coordHost.IP(), 7443).String()
	for _, n := range nodes {
		var b strings.Builder
		fmt.Fprintf(&b, "[node]\nstate_dir = %q\n\n", filepath.Join(n.dir, "state"))
		fmt.Fprintf(&b, "[pki]\nca = %q\ncert = %q\nkey = %q\n\n", filepath.Join(caDir, "ca.crt"),
			filepath.Join(n.dir, n.name+".crt"), filepath.Join(n.dir, n.name+".key"))
		fmt.Fprintf(&b, "[join]\ncoordinators = [%q]\n\n", session)
		if n == coord {
			fmt.Fprintf(&b, "[coordinator]\nenabled = true\nsession_listen = %q\ngossip_key = %q\n\n", session, strings.TrimSpace(string(gossipKey)))
		}
		fmt.Fprintf(&b, "[ice]\nport = %d\n\n", n.host.Port())
		fmt.Fprintf(&b, "[control]\nsocket = %q\ngroup = \"\"\n\n", n.sock)
		b.WriteString("# Every peer may reach this node (the demo pings it).\n[[firewall.inbound]]\npeer = \"any\"\n")
		if err := os.WriteFile(n.cfg, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	say("alice's configuration (%s)", nodes[1].cfg)
	cfgText, _ := os.ReadFile(nodes[1].cfg)
	fmt.Print(strings.ReplaceAll(string(cfgText), strings.TrimSpace(string(gossipKey)), "…"))

	say("starting meshd on coord, alice and bob (each in its own namespace)")
	for _, n := range nodes {
		if _, err := n.host.StartWith(lab.ProcOptions{Label: "meshd"}, meshd, "--config", n.cfg); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("meshd --config %s   (in netns %s; log: %s)\n", n.cfg, n.host.Netns(), filepath.Join(l.ArtifactDir(), n.name+".meshd.stderr"))
	}
	// meshctl wait runs for up to 60 s (generous for a loaded machine); the
	// context must outlast it.
	ctl := func(n *demoNode, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		return n.host.Output(ctx, meshctl, append([]string{"--socket", n.sock}, args...)...)
	}
	for _, n := range nodes[1:] {
		out, err := ctl(n, "wait", "--timeout", "60s")
		show("meshctl wait   # on "+n.name, out)
		if err != nil {
			t.Fatalf("%s: meshd did not come up: %v", n.name, err)
		}
	}
	alice, bob := nodes[1], nodes[2]
	out, err := ctl(alice, "wait", "--peer", "bob", "--timeout", "60s")
	show("meshctl wait --peer bob   # on alice", out)
	if err != nil {
		t.Fatalf("alice ↔ bob did not come up: %v", err)
	}

	for _, n := range nodes {
		say("%s: meshctl status", n.name)
		out, err := ctl(n, "status")
		show("meshctl status", out)
		if err != nil {
			t.Errorf("%s: meshctl status: %v", n.name, err)
		}
		say("%s: meshctl peers", n.name)
		out, err = ctl(n, "peers")
		show("meshctl peers", out)
		if err != nil {
			t.Errorf("%s: meshctl peers: %v", n.name, err)
		}
	}

	say("alice pings bob's overlay address with the kernel's ping (through the TUN and the mesh)")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	out, err = alice.host.Run(ctx, "ping", "-c", "4", "-i", "0.3", "-W", "2", bob.addr.String())
	cancel()
	show("ping -c 4 "+bob.addr.String()+"   # in alice's namespace", out)
	if err != nil {
		t.Errorf("kernel ping alice → bob: %v", err)
	}
	say("bob pings alice with meshctl (which also says which path each reply took)")
	out, err = ctl(bob, "ping", "alice", "-c", "4", "--until-direct=false")
	show("meshctl ping alice -c 4 --until-direct=false   # on bob", out)
	if err != nil {
		t.Errorf("meshctl ping bob → alice: %v", err)
	}
	var why control.PeerWhy
	if out, err := ctl(alice, "peers", "--why", "bob", "--json"); err == nil && json.Unmarshal([]byte(out), &why) == nil {
		say("why that path? (meshctl peers --why bob, on alice)")
		fmt.Println(why.Explanation)
	}
	say("done in %v; process logs are in %s", time.Since(start).Round(100*time.Millisecond), l.ArtifactDir())
}
