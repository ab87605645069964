package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestRecordLayerLimits pins the record-layer numbers config repeats (it may
// not import tunnel/record) to the arithmetic documented in docs/mtu.md and
// docs/protocol.md, which describe what tunnel/record implements. If this
// fails, the record layer changed: update the constants in config.go, the
// ranges in docs/configuration.md and packaging/meshd.toml.
func TestRecordLayerLimits(t *testing.T) {
	mtuDoc := readDoc(t, "../docs/mtu.md")
	protoDoc := readDoc(t, "../docs/protocol.md")

	// docs/mtu.md "What each packet carries": | layer | bytes | notes |
	overhead := func(layer string) int {
		t.Helper()
		for _, line := range strings.Split(mtuDoc, "\n") {
			cells := strings.Split(line, "|")
			if len(cells) > 3 && strings.TrimSpace(cells[1]) == layer {
				n, err := strconv.Atoi(strings.TrimSpace(cells[2]))
				if err != nil {
					t.Fatalf("docs/mtu.md: %s: %v", layer, err)
				}
				return n
			}
		}
		t.Fatalf("docs/mtu.md has no row for %q", layer)
		return 0
	}
	power := func(doc, name, pattern string) int64 {
		t.Helper()
		m := regexp.MustCompile(pattern).FindStringSubmatch(doc)
		if m == nil {
			t.Fatalf("%s does not match %q any more", name, pattern)
		}
		e, _ := strconv.Atoi(m[1])
		return int64(1) << e
	}

	header, tag := overhead("DTLS 1.2 record header"), overhead("AEAD tag")
	channelData := overhead("TURN ChannelData header")
	ipv4, udp := overhead("outer IPv4 header"), overhead("UDP header")
	docMaxPlaintext := power(protoDoc, "docs/protocol.md", `the plaintext is at most 2\^(\d+) bytes`)
	docRecordLimit := power(protoDoc, "docs/protocol.md", `hard limit of 2\^(\d+) records per send key`)

	tests := []struct {
		name      string
		got, want int64
	}{
		{"recordOverhead = record header + AEAD tag", recordOverhead, int64(header + tag)},
		{"turnChannelData", turnChannelData, int64(channelData)},
		{"maxUDPPayload = 65535 - IPv4 - UDP", maxUDPPayload, int64(65535 - ipv4 - udp)},
		{"recordMaxPlaintext", recordMaxPlaintext, docMaxPlaintext},
		{"MaxTunMTU = the largest packet one record carries in one datagram", MaxTunMTU,
			min(docMaxPlaintext, int64(65535-ipv4-udp-header-tag-channelData))},
		{"MaxTunMTU = 2^14 today", MaxTunMTU, 16384},
		{"MinTunMTU = IPv6's minimum", MinTunMTU, 1280},
		{"recordLimit", recordLimit, docRecordLimit},
		{"MaxRekeyRecords = one send key's record limit", MaxRekeyRecords, docRecordLimit},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: config has %d, the documented arithmetic gives %d", tt.name, tt.got, tt.want)
		}
	}
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMTUAndRekeyRecordsRanges checks the edges of both ranges: the largest
// MTU a data record carries and the record limit of one key pass, one more
// does not.
func TestMTUAndRekeyRecordsRanges(t *testing.T) {
	tests := []struct {
		src string
		ok  bool
	}{
		{"[tun]\nmtu = 0\n", true},
		{"[tun]\nmtu = 1279\n", false},
		{"[tun]\nmtu = 1280\n", true},
		{"[tun]\nmtu = 9000\n", true},
		{"[tun]\nmtu = 16384\n", true},
		{"[tun]\nmtu = 16385\n", false},
		{"[tun]\nmtu = 65535\n", false},
		{"[tun]\nmtu = -1\n", false},
		{"[data]\nrekey_records = 1023\n", false},
		{"[data]\nrekey_records = 1024\n", true},
		{"[data]\nrekey_records = 4294967296\n", true},
		{"[data]\nrekey_records = 4294967297\n", false},
		{"[data]\nrekey_records = 1099511627776\n", false}, // 2^40, accepted before
		{"[data]\nrekey_records = -1\n", false},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.src, "\n", " "), func(t *testing.T) {
			_, err := Parse("meshd.toml", []byte(minimal+tt.src))
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok {
				wantErrorKind(t, err, ErrInvalid)
			}
		})
	}
}

// wantErrorKind checks that err holds exactly one problem, of kind kind.
func wantErrorKind(t *testing.T, err error, kind error) {
	t.Helper()
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.List) != 1 || errs.List[0].Kind != kind || errs.List[0].Line == 0 {
		t.Fatalf("error %v, want one positioned %v", err, kind)
	}
}

// TestDocsStateTheLimits checks that docs/configuration.md gives the same
// ranges as the validation.
func TestDocsStateTheLimits(t *testing.T) {
	rows := docRows(t)
	tests := []struct{ key, want string }{
		{"tun.mtu", fmt.Sprintf("%d-%d", MinTunMTU, MaxTunMTU)},
		{"data.rekey_records", fmt.Sprintf("%d to 2^32 (%d)", MinRekeyRecords, MaxRekeyRecords)},
	}
	for _, tt := range tests {
		if m := rows[tt.key].meaning; !strings.Contains(m, tt.want) {
			t.Errorf("docs/configuration.md %s does not state the range %q: %q", tt.key, tt.want, m)
		}
	}
}
