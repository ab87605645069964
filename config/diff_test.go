package config

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestChangesAndDiff(t *testing.T) {
	base := func() *Config {
		cfg, err := Parse("/etc/meshd/meshd.toml", []byte(minimal))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	tests := []struct {
		name        string
		edit        func(*Config)
		changes     []string
		sections    []string
		needRestart []string
	}{
		{"nothing", func(*Config) {}, nil, nil, nil},
		{"file name only", func(c *Config) { c.File = "other.toml" }, nil, nil, nil},
		{"nil versus empty list", func(c *Config) { c.Routes.Accept = []netip.Prefix{} }, nil, nil, nil},
		{"log level", func(c *Config) { c.Log.Level = LogDebug },
			[]string{"log.level"}, []string{"log"}, nil},
		{"log format", func(c *Config) { c.Log.Format = LogJSON },
			[]string{"log.format"}, []string{"log"}, []string{"log.format"}},
		{"firewall rule and conntrack", func(c *Config) {
			c.Firewall.Inbound = append(c.Firewall.Inbound, Rule{Proto: ProtoICMP, Port: AnyPort, Peer: AnyPeer})
			c.Firewall.Conntrack.UDPTimeout = Duration(1)
		}, []string{"firewall.inbound", "firewall.conntrack.udp_timeout"}, []string{"firewall"}, nil},
		{"firewall rule edited in place", func(c *Config) { c.Firewall.Outbound[0].Peer = "x" },
			[]string{"firewall.outbound"}, []string{"firewall"}, nil},
		{"coordinators, crl, stun and turn servers", func(c *Config) {
			c.Join.Coordinators = append(c.Join.Coordinators, "b:7443")
			c.PKI.CRL = "/etc/meshd/crl.pem"
			c.ICE.STUNServers = []string{"stun:s"}
			c.ICE.TURNServers = []TURNServer{{URL: "turn:t", Secret: "s"}}
		}, []string{"pki.crl", "join.coordinators", "ice.stun_servers", "ice.turn_servers"},
			[]string{"pki", "join", "ice"}, nil},
		{"restart-only keys", func(c *Config) {
			c.PKI.Cert = "/other.crt"
			c.Tun.MTU = 1400
			c.ICE.Port = 1
			c.Coordinator.TURN.Realm = "r"
			c.Metrics.Listen = netip.MustParseAddrPort("127.0.0.1:1")
		}, []string{"pki.cert", "tun.mtu", "coordinator.turn.realm", "ice.port", "metrics.listen"},
			[]string{"pki", "tun", "coordinator", "ice", "metrics"},
			[]string{"pki.cert", "tun.mtu", "coordinator.turn.realm", "ice.port", "metrics.listen"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, cur := base(), base()
			tt.edit(cur)
			if got := Changes(old, cur); !reflect.DeepEqual(got, tt.changes) {
				t.Errorf("Changes = %q, want %q", got, tt.changes)
			}
			if got := Diff(old, cur); !reflect.DeepEqual(got, tt.sections) {
				t.Errorf("Diff = %q, want %q", got, tt.sections)
			}
			if got := RestartRequired(old, cur); !reflect.DeepEqual(got, tt.needRestart) {
				t.Errorf("RestartRequired = %q, want %q", got, tt.needRestart)
			}
		})
	}
}

func TestReloadable(t *testing.T) {
	for key, want := range map[string]bool{
		"log.level":                      true,
		"log.format":                     false,
		"log":                            false,
		"firewall":                       true,
		"firewall.inbound":               true,
		"firewall.conntrack.tcp_timeout": true,
		"join":                           false,
		"join.coordinators":              true,
		"pki.crl":                        true,
		"pki.cert":                       false,
		"ice.stun_servers":               true,
		"ice.turn_servers":               true,
		"ice.turn_servers[0].url":        true,
		"ice.stun_servers_extra":         false,
		"ice":                            false,
		"coordinator":                    false,
	} {
		if got := Reloadable(key); got != want {
			t.Errorf("Reloadable(%q) = %v, want %v", key, got, want)
		}
	}
}

// TestChangesCoversEverySchemaKey makes sure a change to any key is seen.
func TestChangesCoversEverySchemaKey(t *testing.T) {
	var keys []string
	walkSchema(reflect.TypeFor[Config](), "", func(key, _ string) { keys = append(keys, key) })
	for _, key := range keys {
		old, cur := Default(), Default()
		v := reflect.ValueOf(cur).Elem()
		t2 := reflect.TypeFor[Config]()
		// Follow the key down to its field.
		var f reflect.Value
		path := ""
		for _, seg := range splitKey(key) {
			path = joinKey(path, seg)
			for _, sf := range schemaFields(t2) {
				if sf.name == seg {
					f = v.Field(sf.index)
					break
				}
			}
			v, t2 = f, f.Type()
		}
		if f.Kind() == reflect.Struct && !isLeafStruct(f.Type()) {
			continue // a table; its keys are checked one by one
		}
		mutate(t, key, f)
		got := Changes(old, cur)
		if len(got) != 1 || got[0] != key {
			t.Errorf("changing %s: Changes = %q", key, got)
		}
	}
}

func splitKey(key string) []string {
	var out []string
	for key != "" {
		p := parentKey(key)
		seg := key
		if p != "" {
			seg = key[len(p)+1:]
		}
		out = append([]string{seg}, out...)
		key = p
	}
	return out
}

// mutate changes a leaf value to something different from what it was.
func mutate(t *testing.T, key string, f reflect.Value) {
	switch f.Type() {
	case durationType:
		f.SetInt(f.Int() + 1)
		return
	case portRangeType:
		f.Set(reflect.ValueOf(PortRange{1, 2}))
		return
	case prefixType:
		f.Set(reflect.ValueOf(netip.MustParsePrefix("10.9.0.0/16")))
		return
	case addrPortType:
		f.Set(reflect.ValueOf(netip.MustParseAddrPort("192.0.2.1:1")))
		return
	case addrType:
		f.Set(reflect.ValueOf(netip.MustParseAddr("192.0.2.1")))
		return
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(f.String() + "x")
	case reflect.Bool:
		f.SetBool(!f.Bool())
	case reflect.Int, reflect.Int64:
		f.SetInt(f.Int() + 1)
	case reflect.Slice:
		f.Set(reflect.Append(f, reflect.Zero(f.Type().Elem())))
	default:
		t.Fatalf("%s: cannot mutate a %s", key, f.Type())
	}
}
