//go:build e2e && bench

package bench

// The wireguard-go comparator: one wireguard-go process per host, configured
// with wg (wireguard-tools), tun MTU 1420.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

const (
	// wgPort is wireguard-go's listen port on both hosts.
	wgPort = 51820
	// tunMTU is the tunnels' MTU, the same for every tunnel measured.
	tunMTU = 1420
)

// wgOverlay are the two hosts' addresses inside the wireguard-go tunnel.
var wgOverlay = [2]netip.Prefix{
	netip.MustParsePrefix("10.201.0.1/24"),
	netip.MustParsePrefix("10.201.0.2/24"),
}

// wgUAPIDir is where wireguard-go puts its control sockets. It is a path in
// the shared file system, not per namespace, so each interface needs a name
// no other wireguard-go on the machine uses.
const wgUAPIDir = "/var/run/wireguard"

// setupWireguard starts wireguard-go on the column's two hosts, configures
// a tunnel between them (over the hosts' own addresses: IPv6 between
// IPv6-only hosts) and waits until it carries a ping. tag tells the two
// interface names apart from other columns' ('a' gives ...a and ...b). It
// returns the destination's tunnel address.
func setupWireguard(bin string, c *column, tag byte) (netip.Addr, error) {
	hosts := [2]*lab.Host{c.src, c.dst}
	var ifs [2]string
	var keys, pubs [2]string
	for i, h := range hosts {
		// The pid keeps two bench runs on one machine apart.
		ifs[i] = fmt.Sprintf("wgb%d%c", os.Getpid()%1000000, tag+byte(i))
		sock := filepath.Join(wgUAPIDir, ifs[i]+".sock")
		_ = os.Remove(sock) // a stale socket of a killed run with our pid
		c.cleanup = append(c.cleanup, func() { _ = os.Remove(sock) })
		p, err := h.StartWith(lab.ProcOptions{Label: "wireguard-go", Env: []string{"LOG_LEVEL=error"}}, bin, "-f", ifs[i])
		if err != nil {
			return netip.Addr{}, err
		}
		if !testutil.Eventually(10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil || p.Exited() }) || p.Exited() {
			return netip.Addr{}, fmt.Errorf("wireguard-go on %s made no UAPI socket %s: %s", h.Name(), sock, lastLine(p.Stderr()+p.Stdout()))
		}
		if keys[i], err = wgTool("", "genkey"); err != nil {
			return netip.Addr{}, err
		}
		if pubs[i], err = wgTool(keys[i], "pubkey"); err != nil {
			return netip.Addr{}, err
		}
	}
	for i, h := range hosts {
		peer := hosts[1-i]
		dir, err := h.StateDir()
		if err != nil {
			return netip.Addr{}, err
		}
		keyFile := filepath.Join(dir, "wg.key")
		if err := os.WriteFile(keyFile, []byte(keys[i]+"\n"), 0o600); err != nil {
			return netip.Addr{}, err
		}
		cmds := [][]string{
			{"wg", "set", ifs[i], "private-key", keyFile, "listen-port", fmt.Sprint(wgPort),
				"peer", pubs[1-i], "endpoint", netip.AddrPortFrom(peer.IP(), wgPort).String(),
				"allowed-ips", netip.PrefixFrom(wgOverlay[1-i].Addr(), 32).String()},
			{"ip", "addr", "add", wgOverlay[i].String(), "dev", ifs[i]},
			{"ip", "link", "set", ifs[i], "mtu", fmt.Sprint(tunMTU), "up"},
		}
		for _, argv := range cmds {
			if err := runIn(h.Namespace, argv...); err != nil {
				return netip.Addr{}, err
			}
		}
	}
	dst := wgOverlay[1].Addr()
	return dst, waitPing(c.src.Namespace, dst, 15*time.Second)
}

// wgTool runs wg in the root namespace (key generation is local arithmetic)
// with stdin and returns its trimmed output.
func wgTool(stdin string, args ...string) (string, error) {
	cmd := exec.Command("wg", args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("wg %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// runIn runs argv in ns with a 30 s bound.
func runIn(ns *lab.Namespace, argv ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := ns.Run(ctx, argv[0], argv[1:]...)
	return err
}

// waitPing waits until one echo from ns to dst is answered.
func waitPing(ns *lab.Namespace, dst netip.Addr, timeout time.Duration) error {
	var last string
	ok := testutil.Eventually(timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := ns.Run(ctx, "ping", "-c", "1", "-W", "0.5", dst.String())
		last = out
		return err == nil
	})
	if !ok {
		return fmt.Errorf("no ping reply from %v within %v: %s", dst, timeout, lastLine(last))
	}
	return nil
}
