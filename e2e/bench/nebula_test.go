//go:build e2e && bench

package bench

// The Nebula comparator: a CA, two certificates, a lighthouse on the source
// host and a node on the destination with a static_host_map entry for the
// lighthouse, firewall any/any, tun MTU 1420.

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/e2e/lab"
)

// nebulaPort is Nebula's listen port on both hosts.
const nebulaPort = 4242

// nebulaOverlay are the two hosts' addresses inside the Nebula network.
var nebulaOverlay = [2]netip.Prefix{
	netip.MustParsePrefix("10.202.0.1/24"),
	netip.MustParsePrefix("10.202.0.2/24"),
}

// nebulaConfig is one host's config; the lighthouse (index 0) lists no
// lighthouses, the node lists the lighthouse. Punching and relays are off:
// both hosts are public.
const nebulaConfig = `pki:
  ca: %[1]s/ca.crt
  cert: %[1]s/%[2]s.crt
  key: %[1]s/%[2]s.key
static_host_map:
  "%[3]s": ["%[4]s"]
lighthouse:
  am_lighthouse: %[5]t
  interval: 60
  hosts: %[6]s
listen:
  host: 0.0.0.0
  port: %[7]d
punchy:
  punch: false
relay:
  am_relay: false
  use_relays: false
tun:
  disabled: false
  dev: nebula1
  mtu: %[8]d
logging:
  level: info
  format: text
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
`

// setupNebula makes the PKI in dir, starts the lighthouse and the node and
// waits until the tunnel carries a ping. It returns the destination's
// overlay address.
func setupNebula(nb nebulaBuild, dir string, c *column) (netip.Addr, error) {
	cert := filepath.Join(nb.dir, "nebula-cert")
	names := [2]string{"lighthouse", "node"}
	if err := offline(cert, "ca", "-name", "meshd-bench", "-duration", "24h",
		"-out-crt", filepath.Join(dir, "ca.crt"), "-out-key", filepath.Join(dir, "ca.key")); err != nil {
		return netip.Addr{}, err
	}
	lighthouse := netip.AddrPortFrom(c.src.IP(), nebulaPort)
	for i, h := range [2]*lab.Host{c.src, c.dst} {
		if err := offline(cert, "sign", "-ca-crt", filepath.Join(dir, "ca.crt"), "-ca-key", filepath.Join(dir, "ca.key"),
			"-name", names[i], "-networks", nebulaOverlay[i].String(),
			"-out-crt", filepath.Join(dir, names[i]+".crt"), "-out-key", filepath.Join(dir, names[i]+".key")); err != nil {
			return netip.Addr{}, err
		}
		hosts := `["` + nebulaOverlay[0].Addr().String() + `"]`
		if i == 0 {
			hosts = "[]"
		}
		conf := fmt.Sprintf(nebulaConfig, dir, names[i], nebulaOverlay[0].Addr(), lighthouse, i == 0, hosts, nebulaPort, tunMTU)
		path := filepath.Join(dir, names[i]+".yml")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			return netip.Addr{}, err
		}
		if _, err := h.StartWith(lab.ProcOptions{Label: "nebula"}, filepath.Join(nb.dir, "nebula"), "-config", path); err != nil {
			return netip.Addr{}, err
		}
	}
	dst := nebulaOverlay[1].Addr()
	return dst, waitPing(c.src.Namespace, dst, 20*time.Second)
}

// offline runs a local tool (certificate making) in the root namespace.
func offline(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", filepath.Base(name), args[0], err, lastLine(string(out)))
	}
	return nil
}
