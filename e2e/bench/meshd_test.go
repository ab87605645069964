//go:build e2e && bench

package bench

// The meshd columns: a CA made with `meshctl ca init`, certificates with
// `meshctl cert sign`, one coordinator on its own host, and node pairs
// joining it: direct ones (over IPv4 and over IPv6), one whose direct path
// is blocked in the backbone bridge so that its link goes through the
// coordinator's TURN server over UDP, and one whose UDP is blocked
// altogether so that it goes through TURN over TCP. Configs follow packaging/meshd.toml and docs/configuration.md.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

const (
	// meshdTun is every node's TUN name (one per namespace).
	meshdTun = "meshd0"
	// sessionPort is the coordinator's session port (docs/configuration.md).
	sessionPort = 7443
	// turnPort is the coordinator's TURN port, UDP (its default) and TCP.
	turnPort = 3478
	// linkTimeout bounds a pair's start: daemons up, link up, first reply.
	linkTimeout = 40 * time.Second
	// meshdStop is how long a daemon gets to shut down on SIGTERM.
	meshdStop = 10 * time.Second
)

// meshdMesh is the meshd side of the bench: binaries, CA and coordinator.
type meshdMesh struct {
	meshd, meshctl string
	caDir          string
	coord          *lab.Host
	gossipKey      string
	nextAddr       int // host part of the next overlay address
}

// meshdNode is one node's files.
type meshdNode struct {
	host   *lab.Host
	name   string
	addr   netip.Addr
	config string
	socket string
}

// newMeshdMesh makes the CA in dir and starts the coordinator on coord.
func newMeshdMesh(meshd, meshctl, dir string, coord *lab.Host) (*meshdMesh, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	m := &meshdMesh{
		meshd: meshd, meshctl: meshctl, caDir: filepath.Join(dir, "ca"), coord: coord,
		gossipKey: base64.StdEncoding.EncodeToString(key), nextAddr: 1,
	}
	if err := offline(meshctl, "ca", "init", "--name", "meshd-bench", "--dir", m.caDir); err != nil {
		return nil, err
	}
	n, err := m.node(coord, true)
	if err != nil {
		return nil, err
	}
	p, err := coord.StartWith(lab.ProcOptions{Label: "meshd", StopTimeout: meshdStop}, meshd, "-config", n.config)
	if err != nil {
		return nil, err
	}
	// A coordinator node holds a session with its own coordinator role
	// once it serves; `meshctl wait` without --peer waits for that.
	if out, err := m.ctl(coord.Namespace, n.socket, "wait", "--timeout", "30s"); err != nil {
		return nil, daemonFailure(p, "coordinator not up", out, err)
	}
	return m, nil
}

// node signs a certificate for h and writes its config into h's state dir.
func (m *meshdMesh) node(h *lab.Host, coordinator bool) (meshdNode, error) {
	dir, err := h.StateDir()
	if err != nil {
		return meshdNode{}, err
	}
	n := meshdNode{
		host: h, name: h.Name(),
		addr:   netip.AddrFrom4([4]byte{100, 64, 0, byte(m.nextAddr)}),
		config: filepath.Join(dir, "meshd.toml"),
		socket: filepath.Join(dir, "meshd.sock"),
	}
	m.nextAddr++
	args := []string{"cert", "sign", "--ca-dir", m.caDir, "--name", n.name,
		"--ip", netip.PrefixFrom(n.addr, 10).String(), "--out", dir}
	if coordinator {
		args = append(args, "--coordinator")
	}
	if err := offline(m.meshctl, args...); err != nil {
		return n, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[node]\nname = %q\nstate_dir = %q\n\n", n.name, filepath.Join(dir, "state"))
	fmt.Fprintf(&b, "[pki]\nca = %q\ncert = %q\nkey = %q\n\n",
		filepath.Join(m.caDir, "ca.crt"), filepath.Join(dir, n.name+".crt"), filepath.Join(dir, n.name+".key"))
	fmt.Fprintf(&b, "[tun]\nname = %q\nmtu = %d\n\n", meshdTun, tunMTU)
	session := netip.AddrPortFrom(m.coord.IP(), sessionPort).String()
	switch {
	case coordinator && m.coord.IP6().IsValid():
		// Dual-stack: both families on [::], the relay naming its public
		// address of each.
		fmt.Fprintf(&b, "[coordinator]\nenabled = true\nsession_listen = %q\ngossip_key = %q\n\n", netip.AddrPortFrom(netip.IPv6Unspecified(), sessionPort), m.gossipKey)
		fmt.Fprintf(&b, "[coordinator.turn]\nrelay_address = %q\nrelay_address6 = %q\ntcp_listen = %q\n\n", m.coord.IP(), m.coord.IP6(), turnTCP(m.coord))
	case coordinator:
		fmt.Fprintf(&b, "[coordinator]\nenabled = true\nsession_listen = %q\ngossip_key = %q\n\n", session, m.gossipKey)
		fmt.Fprintf(&b, "[coordinator.turn]\ntcp_listen = %q\n\n", turnTCP(m.coord))
	default:
		if !h.HasIPv4() {
			session = netip.AddrPortFrom(m.coord.IP6(), sessionPort).String()
		}
		fmt.Fprintf(&b, "[join]\ncoordinators = [%q]\n\n", session)
	}
	fmt.Fprintf(&b, "[ice]\nport = %d\n\n", h.Port())
	fmt.Fprintf(&b, "[control]\nsocket = %q\ngroup = \"\"\n\n", n.socket)
	b.WriteString("[[firewall.inbound]]\nproto = \"any\"\npeer = \"any\"\n\n")
	b.WriteString("[log]\nlevel = \"info\"\n")
	if err := os.WriteFile(n.config, []byte(b.String()), 0o600); err != nil {
		return n, err
	}
	return n, nil
}

// turnTCP is the coordinator's TURN-over-TCP address, for the UDP-blocked
// pair: IPv4 only, as that pair is, so that the IPv6 paths get no URL they
// cannot use.
func turnTCP(coord *lab.Host) netip.AddrPort {
	return netip.AddrPortFrom(coord.IP(), turnPort)
}

// startPair starts meshd on the column's two hosts at once and measures the
// link setup time: from the start to the first echo reply from the
// destination's overlay address. It then checks with `meshctl wait` that
// the link is up over the path wanted, and returns the destination's
// overlay address.
func (m *meshdMesh) startPair(c *column, want control.Path) (netip.Addr, error) {
	src, err := m.node(c.src, false)
	if err != nil {
		return netip.Addr{}, err
	}
	dst, err := m.node(c.dst, false)
	if err != nil {
		return netip.Addr{}, err
	}
	t0 := time.Now()
	var procs [2]*lab.Proc
	for i, n := range []meshdNode{src, dst} {
		if procs[i], err = n.host.StartWith(lab.ProcOptions{Label: "meshd", StopTimeout: meshdStop}, m.meshd, "-config", n.config); err != nil {
			return netip.Addr{}, err
		}
	}
	// ping picks its source address once, at start: wait until the TUN
	// has the overlay address so that the echoes leave from it.
	var addrOut string
	up := testutil.Eventually(linkTimeout, func() bool {
		if procs[0].Exited() || procs[1].Exited() {
			return true
		}
		out, _ := exec.Command("ip", "-n", c.src.Netns(), "-o", "-4", "addr", "show", "dev", meshdTun).CombinedOutput()
		addrOut = string(out)
		return strings.Contains(addrOut, " "+src.addr.String()+"/")
	})
	for _, p := range procs {
		if p.Exited() {
			return netip.Addr{}, daemonFailure(p, "meshd exited", "", nil)
		}
	}
	if !up {
		return netip.Addr{}, fmt.Errorf("%s has no %v on %s after %v: %s", src.name, src.addr, meshdTun, linkTimeout, lastLine(addrOut))
	}
	// ping -D stamps each reply with the wall clock time.Now uses too.
	// Neither -c nor -w: with either, ping ends at the first ICMP error,
	// which meshd sends while the link is not up yet. Stop ends it.
	ping, err := c.src.StartWith(lab.ProcOptions{Label: "setup-ping"}, "ping", "-D", "-n", "-i", "0.02", dst.addr.String())
	if err != nil {
		return netip.Addr{}, err
	}
	// ping flushes every line, so its output file shows the first reply
	// at once.
	testutil.Eventually(linkTimeout, func() bool {
		_, err := firstReply(ping.Stdout())
		return err == nil || ping.Exited()
	})
	_ = ping.Stop()
	at, perr := firstReply(ping.Stdout())
	// A link may come up relayed and move to a direct pair once one
	// answers (as Tailscale's do via DERP); the direct column waits for that.
	args := []string{"wait", "--peer", dst.name, "--timeout", "30s", "--json"}
	if want == control.PathDirect {
		args = append(args, "--direct")
	}
	out, werr := m.ctl(c.src.Namespace, src.socket, args...)
	waited := time.Since(t0)
	var res struct {
		Ready  bool          `json:"ready"`
		Reason string        `json:"reason"`
		Peer   *control.Peer `json:"peer"`
	}
	jerr := json.Unmarshal([]byte(out), &res)
	switch {
	case perr != nil && werr != nil:
		if jerr == nil && res.Reason != "" {
			return netip.Addr{}, fmt.Errorf("no link %s → %s: %s", src.name, dst.name, res.Reason)
		}
		return netip.Addr{}, daemonFailure(procs[0], "no link "+src.name+" → "+dst.name, out, werr)
	case perr != nil:
		return netip.Addr{}, fmt.Errorf("link %s → %s is up but no overlay ping got through in %v", src.name, dst.name, linkTimeout)
	case werr != nil || jerr != nil || res.Peer == nil:
		return netip.Addr{}, fmt.Errorf("meshctl wait --peer %s: %v %v: %s", dst.name, werr, jerr, short(out))
	case res.Peer.Path != want:
		return netip.Addr{}, fmt.Errorf("link %s → %s is %q, not %q as this column needs", src.name, dst.name, res.Peer.Path, want)
	case res.Peer.Endpoint.Addr().Unmap().Is4() == c.six:
		return netip.Addr{}, fmt.Errorf("link %s → %s runs to %v, not over the underlay family this column measures", src.name, dst.name, res.Peer.Endpoint)
	}
	c.setup = at.Sub(t0)
	if want == control.PathDirect {
		c.direct = waited
	}
	if res.Peer.Relay != "" {
		c.via = res.Peer.Relay
	}
	return dst.addr, nil
}

// ctl runs meshctl against the daemon at socket in ns and returns its
// stdout.
func (m *meshdMesh) ctl(ns *lab.Namespace, socket string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), linkTimeout)
	defer cancel()
	return ns.Output(ctx, m.meshctl, append([]string{"--socket", socket}, args...)...)
}

// daemonFailure explains why a meshd did not come up: its exit and the
// last line it logged, or what meshctl said.
func daemonFailure(p *lab.Proc, what, ctlOut string, ctlErr error) error {
	if p.Exited() {
		return fmt.Errorf("%s: meshd exited (%v): %s", what, p.Wait(), lastLine(p.Stderr()+p.Stdout()))
	}
	if ctlErr != nil {
		return fmt.Errorf("%s: %v %s", what, ctlErr, lastLine(ctlOut))
	}
	return fmt.Errorf("%s", what)
}
