package programs

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := "# comment\n\nping iputils-ping test # trailing\nwg wireguard-tools bench\ngo - test\n"
	l, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 3 || l["ping"] != (Entry{Name: "ping", Package: "iputils-ping", Target: TargetTest, Line: 3}) || l["go"].Package != Prerequisite {
		t.Fatalf("Parse = %+v", l)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"two fields", "ping iputils-ping\n", "line 1"},
		{"four fields", "ping iputils-ping test extra\n", "4 fields"},
		{"a path", "/bin/ping iputils-ping test\n", "not path"},
		{"unknown target", "ping iputils-ping demo\n", `target "demo"`},
		{"listed twice", "ping a test\nping b test\n", "first on line 1"},
	} {
		_, err := Parse([]byte(tc.in))
		if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse = %v, want ErrSyntax mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestCheck(t *testing.T) {
	l, err := Parse([]byte("ping iputils-ping test\nwg wireguard-tools bench\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, target string
		ok           bool
	}{
		{"ping", TargetTest, true},
		{"ping", TargetBench, true},
		{"wg", TargetBench, true},
		{"wg", TargetTest, false}, // make test does not install it
		{"tcpdump", TargetTest, false},
		{"/tmp/lab/meshd-0", TargetTest, true}, // built by the project
	} {
		if err := l.Check(tc.name, tc.target); (err == nil) != tc.ok {
			t.Errorf("Check(%q, %q) = %v, want ok=%v", tc.name, tc.target, err, tc.ok)
		}
	}
}

// The project's own list parses.
func TestLoadModuleList(t *testing.T) {
	if _, err := Load(moduleRoot(t)); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("ping iputils-ping test\n"))
	f.Add([]byte("# x\n go - test \nwg wireguard-tools bench"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := Parse(data)
		if err != nil {
			return
		}
		for name, e := range l {
			if name != e.Name || strings.ContainsRune(name, '/') || (e.Target != TargetTest && e.Target != TargetBench) {
				t.Fatalf("accepted a bad entry %+v", e)
			}
		}
	})
}
