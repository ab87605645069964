//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/e2e/lab"
	"github.com/meshd/meshd/internal/testutil"
)

// uclientTotals matches turnutils_uclient's final summary line (the progress
// lines carry "msz=" before the counts).
var uclientTotals = regexp.MustCompile(`start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)

// TestReferenceTURNRelay proves the lab's reference TURN server (coturn,
// static-auth-secret) relays for the NAT kinds that need a relay: a
// symmetric-NAT site over UDP and a UDP-blocked site over TCP, with the
// time-limited credentials meshd's coordinators hand out. It is the check to
// run before blaming meshd for a relay failure.
func TestReferenceTURNRelay(t *testing.T) {
	testutil.RequireRoot(t)
	l := lab.New(t, lab.Options{})
	turn := l.AddTURN(t, "turn", lab.TURNOptions{})
	peer := l.AddHost(t, "peer", lab.HostOptions{})
	if _, err := peer.Start("turnutils_peer", "-L", peer.IP().String(), "-p", "3480"); err != nil {
		t.Fatal(err)
	}
	lab.WaitListening(t, 5*time.Second, peer.Namespace, "udp", 3480)
	sym := l.AddNode(t, "sym", lab.NATSymmetric, lab.HostOptions{})
	blocked := l.AddNode(t, "blocked", lab.NATUDPBlocked, lab.HostOptions{})

	uclient := func(ctx context.Context, h *lab.Host, user, pass string, tcp bool) (string, error) {
		args := []string{"-u", user, "-w", pass, "-e", peer.IP().String(), "-r", "3480", "-n", "10", "-c"}
		if tcp {
			args = append(args, "-t")
		}
		return h.Run(ctx, "turnutils_uclient", append(args, turn.Addr.Addr().String())...)
	}

	cases := []struct {
		name     string
		host     *lab.Host
		tcp      bool
		badPass  bool
		wantFail bool
	}{
		{name: "symmetric-udp", host: sym},
		{name: "udp-blocked-tcp", host: blocked, tcp: true},
		{name: "wrong-password", host: sym, badPass: true, wantFail: true},
		{name: "udp-blocked-udp", host: blocked, wantFail: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			user, pass := turn.Credentials(tc.name, time.Hour)
			if tc.badPass {
				pass = "not" + pass
			}
			timeout := 20 * time.Second
			if tc.wantFail {
				// A blocked client retries forever; a refused one fails at
				// once. Either way a few seconds decide it.
				timeout = 3 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			out, err := uclient(ctx, tc.host, user, pass, tc.tcp)
			m := uclientTotals.FindStringSubmatch(out)
			if tc.wantFail {
				if err == nil || (m != nil && m[2] != "0") {
					t.Fatalf("relay worked where it must not: err %v\n%s", err, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("turnutils_uclient: %v", err)
			}
			if m == nil {
				t.Fatalf("no totals in uclient output:\n%s", out)
			}
			sent, _ := strconv.Atoi(m[1])
			recv, _ := strconv.Atoi(m[2])
			if sent == 0 || recv != sent || !strings.Contains(out, "Total lost packets 0 ") {
				t.Fatalf("relay lost data: sent %d, received %d\n%s", sent, recv, out)
			}
			// The server saw this user allocate and bind a channel to the
			// peer: the data went through the relay.
			log := turn.Log()
			for _, want := range []string{
				fmt.Sprintf("user <%s>: incoming packet ALLOCATE processed, success", user),
				fmt.Sprintf("user <%s>: incoming packet CHANNEL_BIND processed, success", user),
			} {
				if !strings.Contains(log, want) {
					t.Errorf("coturn log lacks %q", want)
				}
			}
			if tc.tcp && !strings.Contains(log, "tcp or tls connected to: "+tc.host.PublicIP().String()+":") {
				t.Errorf("coturn log has no TCP connection from the site's address %v", tc.host.PublicIP())
			}
		})
	}
}
