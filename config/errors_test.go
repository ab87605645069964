package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// wantErr describes one expected problem: exact position, key and kind, and
// a part of the message.
type wantErr struct {
	line, col int
	key       string
	kind      error
	msg       string
}

func (w wantErr) String() string {
	return fmt.Sprintf("%d:%d: %s: [%v] ...%s...", w.line, w.col, w.key, w.kind, w.msg)
}

// wantErrors checks that err is an *Errors holding exactly the wanted
// problems, in order.
func wantErrors(t *testing.T, err error, want []wantErr) {
	t.Helper()
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v (%T), want *Errors with %v", err, err, want)
	}
	ok := len(errs.List) == len(want)
	for i := 0; ok && i < len(want); i++ {
		g, w := errs.List[i], want[i]
		ok = g.Line == w.line && g.Col == w.col && g.Key == w.key && g.Kind == w.kind &&
			errors.Is(g, w.kind) && strings.Contains(g.Msg, w.msg)
	}
	if !ok {
		var got []string
		for _, e := range errs.List {
			got = append(got, fmt.Sprintf("%d:%d: %s: [%v] %s", e.Line, e.Col, e.Key, e.Kind, e.Msg))
		}
		t.Errorf("problems:\n  %s\nwant:\n  %v", strings.Join(got, "\n  "), want)
	}
}

// minimalLines is how many lines the minimal file has; snippets appended to it
// give their positions relative to their own first line.
var minimalLines = strings.Count(minimal, "\n")

func TestProblemsArePositioned(t *testing.T) {
	tests := []struct {
		name string
		// src is appended to the minimal file, and the wanted lines are
		// relative to src, unless whole is set.
		src   string
		whole bool
		want  []wantErr
	}{
		{"unknown key with suggestion", "[log]\nlevl = \"debug\"\n", false,
			[]wantErr{{2, 1, "log.levl", ErrUnknownKey, "unknown key; did you mean log.level?"}}},
		{"unknown key, nothing close", "[log]\ncolour = true\n", false,
			[]wantErr{{2, 1, "log.colour", ErrUnknownKey, "unknown key"}}},
		{"unknown table", "[firewal]\nx = 1\n", false,
			[]wantErr{{1, 1, "firewal", ErrUnknownKey, "did you mean firewall?"}}},
		{"key under the wrong table", "[node]\nlevel = \"debug\"\n", false,
			[]wantErr{{2, 1, "node.level", ErrUnknownKey, "did you mean log.level?"}}},
		{"top-level coordinators", "coordinators = [\"c:7443\"]\n[pki]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n", true,
			[]wantErr{
				{1, 1, "coordinators", ErrUnknownKey, "did you mean join.coordinators?"},
				{0, 0, "join", ErrRequired, "at least one coordinator"},
			}},
		{"quoted unknown key", "[log]\n\"lev el\" = 1\n", false,
			[]wantErr{{2, 1, `log."lev el"`, ErrUnknownKey, "unknown key"}}},
		{"case and dash typo", "[ice]\nRelay-Only = true\n", false,
			[]wantErr{{2, 1, "ice.Relay-Only", ErrUnknownKey, "did you mean ice.relay_only?"}}},
		{"unknown key in array of tables", "[[firewall.inbound]]\npeer = \"any\"\nports = \"80\"\n", false,
			[]wantErr{{3, 1, "firewall.inbound[0].ports", ErrUnknownKey, "did you mean firewall.inbound[0].port?"}}},
		{"wrong type", "[tun]\nmtu = \"1400\"\n", false,
			[]wantErr{{2, 1, "tun.mtu", ErrType, `expected an integer, found string "1400"`}}},
		{"wrong type for a table", "log = \"debug\"\n[pki]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[join]\ncoordinators = [\"c\"]\n", true,
			[]wantErr{{1, 1, "log", ErrType, `expected a table, found string "debug"`}}},
		{"wrong type for an array", "[routes]\nadvertise = \"10.0.0.0/8\"\n", false,
			[]wantErr{{2, 1, "routes.advertise", ErrType, "expected an array"}}},
		{"float for integer", "[ice]\nport = 5.5\n", false,
			[]wantErr{{2, 1, "ice.port", ErrType, "expected an integer, found float 5.5"}}},
		{"dotted keys", "[firewall]\nconntrack.tcp_timeout = 5\n", false,
			[]wantErr{{2, 1, "firewall.conntrack.tcp_timeout", ErrType, "expected a string"}}},
		{"port range in the second rule, indented", "[[firewall.inbound]]\npeer = \"any\"\n\n[[firewall.inbound]]\n  peer = \"any\"\n  port = \"80-\"\n", false,
			[]wantErr{{6, 3, "firewall.inbound[1].port", ErrInvalid, `"80-" is not a port or range`}}},
		{"empty port range", "[[firewall.outbound]]\npeer = \"any\"\nport = \"90-80\"\n", false,
			[]wantErr{{3, 1, "firewall.outbound[0].port", ErrInvalid, "empty range"}}},
		{"port out of range", "[[firewall.outbound]]\npeer = \"any\"\nport = 70000\n", false,
			[]wantErr{{3, 1, "firewall.outbound[0].port", ErrInvalid, "70000 is not a port"}}},
		{"ICMP with a port", "[[firewall.inbound]]\nproto = \"icmp\"\nport = 80\npeer = \"any\"\n", false,
			[]wantErr{{3, 1, "firewall.inbound[0].port", ErrInvalid, "ICMP has no ports"}}},
		{"rule without selector", "[[firewall.outbound]]\nproto = \"tcp\"\n", false,
			[]wantErr{{1, 1, "firewall.outbound[0]", ErrInvalid, "rule selects no peers"}}},
		{"bad names in a rule", "[[firewall.inbound]]\npeer = \"bad name\"\ngroups = [\"ok_1\", \"-bad\"]\n[[firewall.inbound]]\ngroups = [\"Admins\"]\n", false,
			[]wantErr{
				{2, 1, "firewall.inbound[0].peer", ErrInvalid, "node names hold lowercase letters"},
				{3, 19, "firewall.inbound[0].groups[1]", ErrInvalid, "must start with a lowercase letter or digit"},
				{5, 11, "firewall.inbound[1].groups[0]", ErrInvalid, "must start with a lowercase letter"},
			}},
		{"inline array of tables", "[firewall]\ninbound = [ { peer = \"any\" }, { peer = \"bad name\" } ]\n", false,
			[]wantErr{{2, 33, "firewall.inbound[1].peer", ErrInvalid, "node names hold lowercase letters"}}},
		{"table instead of an array of tables", "[firewall.inbound]\npeer = \"any\"\n", false,
			[]wantErr{{1, 1, "firewall.inbound", ErrType, "write [[firewall.inbound]] for each entry"}}},
		{"node name syntax", "[node]\nname = \"Web_1\"\n", false,
			[]wantErr{{2, 1, "node.name", ErrInvalid, "must start with a lowercase letter"}}},
		{"bad CIDR on a continuation line", "[routes]\nadvertise = [\"10.0.0.0/8\",\n  \"10.1.0.0/33\"]\n", false,
			[]wantErr{{3, 3, "routes.advertise[1]", ErrInvalid, `"10.1.0.0/33" is not a CIDR prefix`}}},
		{"host bits set", "[routes]\naccept = [\"10.0.0.1/24\"]\n", false,
			[]wantErr{{2, 11, "routes.accept[0]", ErrInvalid, `write "10.0.0.0/24"`}}},
		{"overlapping prefixes", "[routes]\nadvertise = [\"10.0.0.0/8\", \"10.2.0.0/16\", \"fd00::/64\", \"fd00::/64\"]\n", false,
			[]wantErr{
				{2, 28, "routes.advertise[1]", ErrInvalid, "10.2.0.0/16 overlaps routes.advertise[0] (10.0.0.0/8)"},
				{2, 56, "routes.advertise[3]", ErrInvalid, "overlaps routes.advertise[2]"},
			}},
		{"bad duration", "[ice]\nfailed_timeout = \"25\"\n", false,
			[]wantErr{{2, 1, "ice.failed_timeout", ErrInvalid, `"25" is not a duration`}}},
		{"timer relations", "[ice]\ndisconnected_timeout = \"30s\"\nkeepalive_interval = \"0s\"\n", false,
			[]wantErr{
				// No failed_timeout key: the problem is put at the [ice] header.
				{1, 1, "ice.failed_timeout", ErrInvalid, "must be longer than ice.disconnected_timeout (30s)"},
				{3, 1, "ice.keepalive_interval", ErrInvalid, "must be positive"},
			}},
		{"bad STUN URL", "[ice]\nstun_servers = [\"stun://x\", \"turn:x\", \"stun:x?transport=udp\", \"stun:[::1]:99999\"]\n", false,
			[]wantErr{
				{2, 17, "ice.stun_servers[0]", ErrInvalid, `without "//"`},
				{2, 29, "ice.stun_servers[1]", ErrInvalid, `has scheme "turn"; want stun:`},
				{2, 39, "ice.stun_servers[2]", ErrInvalid, "take no query"},
				{2, 63, "ice.stun_servers[3]", ErrInvalid, "is not a port number"},
			}},
		{"TURN servers", "[[ice.turn_servers]]\nurl = \"turns:t.example.net?transport=udp\"\n\n[[ice.turn_servers]]\nurl = \"turn:t.example.net?proto=tcp\"\nusername = \"u\"\n\n[[ice.turn_servers]]\nsecret = \"s\"\ncredential = \"c\"\n", false,
			[]wantErr{
				{1, 1, "ice.turn_servers[0]", ErrRequired, "TURN servers need credentials"},
				{2, 1, "ice.turn_servers[0].url", ErrInvalid, "transport=udp is not supported"},
				{5, 1, "ice.turn_servers[1].url", ErrInvalid, "the only query is ?transport"},
				{6, 1, "ice.turn_servers[1].username", ErrRequired, "credential is not"},
				{8, 1, "ice.turn_servers[2].url", ErrRequired, "required"},
				{9, 1, "ice.turn_servers[2].secret", ErrInvalid, "not both"},
			}},
		{"enum value", "[data]\ncipher = \"aes\"\n", false,
			[]wantErr{{2, 1, "data.cipher", ErrInvalid, `"aes" is not one of auto, aes-128-gcm, chacha20-poly1305`}}},
		{"enum typo", "[log]\nlevel = \"debg\"\nformat = \"JSON\"\n", false,
			[]wantErr{
				{2, 1, "log.level", ErrInvalid, `did you mean "debug"?`},
				{3, 1, "log.format", ErrInvalid, `did you mean "json"?`},
			}},
		{"inline table", "[coordinator]\nturn = { realm = 5 }\n", false,
			[]wantErr{{2, 10, "coordinator.turn.realm", ErrType, "expected a string, found integer 5"}}},
		{"tun", "[tun]\nname = \"much-too-long-name0\"\nmtu = 100\nmode = \"tap\"\n", false,
			[]wantErr{
				{2, 1, "tun.name", ErrInvalid, "at most 15"},
				{3, 1, "tun.mtu", ErrInvalid, "outside 1280-16384"},
				{4, 1, "tun.mode", ErrInvalid, `"tap" is not one of kernel, userspace`},
			}},
		{"tun.mtu above what a data record carries", "[tun]\nname = \"mesh1\"\n  mtu = 16385\n", false,
			[]wantErr{{3, 3, "tun.mtu", ErrInvalid, "16385 is outside 1280-16384 (0 means auto; a data record carries at most 16384 bytes)"}}},
		{"tun.mtu at the IP maximum", "[tun]\nmtu = 65535\n", false,
			[]wantErr{{2, 1, "tun.mtu", ErrInvalid, "outside 1280-16384"}}},
		{"data.rekey_records beyond one key's record limit", "[data]\nrekey_records = 4294967297\n", false,
			[]wantErr{{2, 1, "data.rekey_records", ErrInvalid, "4294967297 is outside 1024-4294967296"}}},
		{"TURN server secret_file", "[[ice.turn_servers]]\nurl = \"turn:t.example.net\"\nsecret = \"s\"\nsecret_file = \"f\"\n\n[[ice.turn_servers]]\nurl = \"turn:t.example.net\"\nusername = \"u\"\ncredential = \"c\"\nsecret_file = \"f\"\n", false,
			[]wantErr{
				{4, 1, "ice.turn_servers[0].secret_file", ErrInvalid, "set either secret or secret_file, not both"},
				{10, 1, "ice.turn_servers[1].secret_file", ErrInvalid, "set either username and credential or secret_file, not both"},
			}},
		{"dns upstream without an address", "[dns]\nforward = [\"0.0.0.0:53\"]\n", false,
			[]wantErr{{2, 1, "dns.forward", ErrInvalid, "not an upstream resolver address"}}},
		{"metrics address with a host name", "[metrics]\nenabled = true\nlisten = \"localhost:9477\"\n", false,
			[]wantErr{{3, 1, "metrics.listen", ErrInvalid, "host names are not resolved"}}},
		{"data limits", "[data]\nrekey_interval = \"1s\"\nrekey_records = 10\n", false,
			[]wantErr{
				{2, 1, "data.rekey_interval", ErrInvalid, "outside 10s-24h0m0s"},
				{3, 1, "data.rekey_records", ErrInvalid, "outside 1024-"},
			}},
		{"control", "[control]\nsocket = \"/" + strings.Repeat("x", 120) + "\"\ngroup = \"a b\"\n", false,
			[]wantErr{
				{2, 1, "control.socket", ErrInvalid, "unix socket paths hold at most 107"},
				{3, 1, "control.group", ErrInvalid, "not a valid group name"},
			}},
		{"interface patterns", "[ice]\nexclude_interfaces = [\"docker*\", \"[a-\"]\n", false,
			[]wantErr{{2, 34, "ice.exclude_interfaces[1]", ErrInvalid, "not a valid pattern"}}},
		{"node name", "[node]\nname = \"any\"\n", false,
			[]wantErr{{2, 1, "node.name", ErrInvalid, "reserved"}}},
		{"multi-line string before the problem", "[ice]\nstun_servers = [\"\"\"\nstun:x\"\"\", '''\n[fake]\nkey = 1''']\nport = \"x\"\n", false,
			[]wantErr{
				{3, 12, "ice.stun_servers[1]", ErrInvalid, "is not a URL"},
				{6, 1, "ice.port", ErrType, "expected an integer"},
			}},
		{"CRLF line endings", "[log]\r\nlevl = 1\r\n", false,
			[]wantErr{{2, 1, "log.levl", ErrUnknownKey, "did you mean log.level?"}}},
		{"byte order mark", "\ufeff[lg]\nx = 1\n" + minimal, true,
			[]wantErr{{1, 1, "lg", ErrUnknownKey, "did you mean log?"}}},
		{"missing pki key", "[pki]\nca = \"a\"\ncert = \"b\"\n[join]\ncoordinators = [\"c\"]\n", true,
			[]wantErr{{1, 1, "pki.key", ErrRequired, "node private key"}}},
		{"no pki at all", "[join]\ncoordinators = [\"c\"]\n", true,
			[]wantErr{
				{0, 0, "pki.ca", ErrRequired, "required"},
				{0, 0, "pki.cert", ErrRequired, "required"},
				{0, 0, "pki.key", ErrRequired, "required"},
			}},
		{"empty join list", "[pki]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[join]\ncoordinators = []\n", true,
			[]wantErr{{6, 1, "join.coordinators", ErrRequired, "at least one coordinator"}}},
		{"bad and duplicate coordinators", "[pki]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[join]\ncoordinators = [\"c:7443\", \"c\", \"fd00::1\", \"c:0\"]\n", true,
			[]wantErr{
				{6, 27, "join.coordinators[1]", ErrInvalid, "c:7443 is already listed as join.coordinators[0]"},
				{6, 32, "join.coordinators[2]", ErrInvalid, "put IPv6 addresses in brackets"},
				{6, 43, "join.coordinators[3]", ErrInvalid, "not a port number"},
			}},
		{"coordinator without addresses", "[coordinator]\nenabled = true\n", false,
			[]wantErr{
				{1, 1, "coordinator.session_listen", ErrRequired, "required when coordinator.enabled = true"},
				{1, 1, "coordinator.gossip_key", ErrRequired, "meshctl config gossip-key"},
			}},
		{"coordinator on a wildcard needs a relay address", "[coordinator]\nenabled = true\nsession_listen = \"0.0.0.0:7443\"\ngossip_key = \"" + testGossipKey + "\"\n", false,
			[]wantErr{{1, 1, "coordinator.turn.relay_address", ErrRequired, "wildcard"}}},
		{"coordinator secrets", "[coordinator]\ngossip_key = \"c2hvcnQ=\"\ngossip_key_file = \"k\"\n[coordinator.turn]\nauth_secret = \"a\"\nauth_secret_file = \"b\"\nrelay_port_min = 6000\nrelay_port_max = 5000\nrelay_address = \"0.0.0.0\"\n", false,
			[]wantErr{
				{2, 1, "coordinator.gossip_key", ErrInvalid, "5 bytes"},
				{3, 1, "coordinator.gossip_key_file", ErrInvalid, "not both"},
				{6, 1, "coordinator.turn.auth_secret_file", ErrInvalid, "not both"},
				{8, 1, "coordinator.turn.relay_port_max", ErrInvalid, "below coordinator.turn.relay_port_min"},
				{9, 1, "coordinator.turn.relay_address", ErrInvalid, "cannot be advertised"},
			}},
		{"listener collisions", "[coordinator]\nenabled = true\nsession_listen = \"198.51.100.7:7443\"\ngossip_key = \"" + testGossipKey + "\"\n[coordinator.turn]\ntcp_listen = \"0.0.0.0:7443\"\n[coordinator.stun]\nlisten = \"198.51.100.7:3479\"\n[ice]\nport = 3479\n[metrics]\nenabled = true\nlisten = \"198.51.100.7:7946\"\n", false,
			[]wantErr{
				{6, 1, "coordinator.turn.tcp_listen", ErrInvalid, "collides with coordinator.session_listen (198.51.100.7:7443)"},
				{10, 1, "ice.port", ErrInvalid, "collides with coordinator.stun.listen"},
				{13, 1, "metrics.listen", ErrInvalid, "collides with coordinator.gossip_bind"},
			}},
		// The coordinator's own listeners open 0.0.0.0 as IPv4 only, so an
		// IPv6 address on the same port is no collision; memberlist opens
		// 0.0.0.0 dual-stack, so metrics on its port collide whatever the
		// family.
		{"listener families", "[coordinator]\nenabled = true\nsession_listen = \"0.0.0.0:7443\"\ngossip_key = \"" + testGossipKey + "\"\ngossip_bind = \"0.0.0.0:7946\"\n[coordinator.turn]\nrelay_address = \"198.51.100.7\"\ntcp_listen = \"[2001:db8::7]:7443\"\n[metrics]\nenabled = true\nlisten = \"[2001:db8::7]:7946\"\n", false,
			[]wantErr{{11, 1, "metrics.listen", ErrInvalid, "collides with coordinator.gossip_bind (0.0.0.0:7946)"}}},
		{"relay on a wildcard needs a public address", "[relay]\nenabled = true\n", false,
			[]wantErr{{1, 1, "relay.public_address", ErrRequired, "unspecified"}}},
		{"relay values", "[relay]\nenabled = true\nlisten = \"198.51.100.7:3479\"\npublic_address = \"0.0.0.0:3479\"\nmax_allocations = 0\n[ice]\nport = 3479\n", false,
			[]wantErr{
				{3, 1, "relay.listen", ErrInvalid, "collides with ice.port"},
				{4, 1, "relay.public_address", ErrInvalid, "not an address members can reach"},
				{5, 1, "relay.max_allocations", ErrInvalid, "want 1-65535"},
			}},
		{"syntax: missing value", "[pki]\nca = \"a\"\ncert = \n", true,
			[]wantErr{{3, 8, "", ErrSyntax, "expected value but found '\\n'"}}},
		{"syntax: unterminated table header", "[pki\n", true,
			[]wantErr{{1, 5, "", ErrSyntax, "to end table name"}}},
		{"syntax: duplicate key", "[log]\nlevel = \"info\"\n  level = \"debug\"\n", false,
			[]wantErr{{3, 3, "", ErrSyntax, "already been defined"}}},
		{"syntax: bad value mid-line", "[log]\nlevel = tru\n", false,
			[]wantErr{{2, 9, "", ErrSyntax, `expected value but found "tru"`}}},
		{"syntax: array", "[routes]\nadvertise = [\"10.0.0.0/8\",,]\n", false,
			[]wantErr{{2, 27, "", ErrSyntax, "unexpected comma"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := tt.src
			want := tt.want
			if !tt.whole {
				src = minimal + tt.src
				want = make([]wantErr, len(tt.want))
				for i, w := range tt.want {
					if w.line > 0 {
						w.line += minimalLines
					}
					want[i] = w
				}
			}
			cfg, err := Parse("meshd.toml", []byte(src))
			if cfg != nil {
				t.Errorf("Parse returned a config along with errors")
			}
			wantErrors(t, err, want)
		})
	}
}

func TestErrorFormat(t *testing.T) {
	src := minimal + "[[firewall.inbound]]\npeer = \"any\"\n[[firewall.inbound]]\n  peer = \"any\"\n  port = \"80-\"\n"
	_, err := Parse("meshd.toml", []byte(src))
	want := `meshd.toml:12:3: firewall.inbound[1].port: "80-" is not a port or range (write "any", "80" or "8000-8100")`
	if err == nil || err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
	e := &Error{File: "f.toml", Msg: "m", Kind: ErrSyntax}
	if got := e.Error(); got != "f.toml: m" {
		t.Errorf("unpositioned error without key = %q", got)
	}
	if !errors.Is(err, ErrInvalid) || errors.Is(err, ErrSyntax) {
		t.Errorf("errors.Is does not see the problem's kind: %v", err)
	}
	var one *Error
	if !errors.As(err, &one) || one.Key != "firewall.inbound[1].port" {
		t.Errorf("errors.As(*Error) = %+v", one)
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	src := `[pki]
ca = "ca.crt"
[tun]
mtu = "auto"
[log]
level = "loud"
[routes]
advertise = ["10.0.0.0/8", "10.1.0.0/16"]
[[firewall.inbound]]
port = "http"
peer = "any"
[ice]
stun_servers = ["http://x"]
[metrics]
listn = "127.0.0.1:1"
`
	_, err := Parse("meshd.toml", []byte(src))
	wantErrors(t, err, []wantErr{
		{1, 1, "pki.cert", ErrRequired, "required"},
		{1, 1, "pki.key", ErrRequired, "required"},
		{4, 1, "tun.mtu", ErrType, "expected an integer"},
		{6, 1, "log.level", ErrInvalid, "not one of"},
		{8, 28, "routes.advertise[1]", ErrInvalid, "overlaps"},
		{10, 1, "firewall.inbound[0].port", ErrInvalid, "not a port or range"},
		{13, 17, "ice.stun_servers[0]", ErrInvalid, "has scheme"},
		{15, 1, "metrics.listn", ErrUnknownKey, "did you mean metrics.listen?"},
		{0, 0, "join", ErrRequired, "at least one coordinator"},
	})
}
