package config

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string
// ("25s", "1m30s", "200ms").
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("%q is not a duration (write it like \"25s\", \"1m30s\" or \"200ms\")", text)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// PortRange is an inclusive range of TCP/UDP ports. In TOML it is "any", a
// single port ("80" or 80) or a range ("8000-8100").
type PortRange struct {
	First uint16
	Last  uint16
}

// AnyPort matches every port.
var AnyPort = PortRange{First: 0, Last: 65535}

// IsAny reports whether r matches every port.
func (r PortRange) IsAny() bool { return r == AnyPort }

// Contains reports whether port is inside r.
func (r PortRange) Contains(port uint16) bool { return port >= r.First && port <= r.Last }

// String formats r the way it is written in TOML.
func (r PortRange) String() string {
	switch {
	case r.IsAny():
		return "any"
	case r.First == r.Last:
		return strconv.Itoa(int(r.First))
	default:
		return fmt.Sprintf("%d-%d", r.First, r.Last)
	}
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *PortRange) UnmarshalText(text []byte) error {
	s := string(text)
	bad := fmt.Errorf("%q is not a port or range (write \"any\", \"80\" or \"8000-8100\")", s)
	if s == "any" {
		*r = AnyPort
		return nil
	}
	first, last, isRange := strings.Cut(s, "-")
	lo, err := parsePort(first)
	if err != nil {
		return bad
	}
	hi := lo
	if isRange {
		if hi, err = parsePort(last); err != nil {
			return bad
		}
		if hi < lo {
			return fmt.Errorf("%q is an empty range: %d is above %d", s, lo, hi)
		}
	}
	*r = PortRange{First: lo, Last: hi}
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// parsePort accepts 1-65535 in plain decimal (no sign, no leading "+").
func parsePort(s string) (uint16, error) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, fmt.Errorf("not a number")
	}
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("not a port")
	}
	return uint16(v), nil
}

// enum is implemented by the string types whose values come from a fixed
// list; the decoder rejects anything else with the list in the message.
type enum interface {
	values() []string
}

// TunMode selects how the overlay's TUN device is provided.
type TunMode string

// TUN modes.
const (
	// TunKernel uses a kernel TUN device (/dev/net/tun); needs CAP_NET_ADMIN.
	TunKernel TunMode = "kernel"
	// TunUserspace runs a userspace network stack (gVisor netstack) instead
	// of a kernel device; for hosts without TUN or root.
	TunUserspace TunMode = "userspace"
)

func (TunMode) values() []string { return []string{string(TunKernel), string(TunUserspace)} }

// Cipher selects the AEAD of the data records.
type Cipher string

// Ciphers.
const (
	// CipherAuto picks AES-128-GCM when the CPU has AES instructions and
	// ChaCha20-Poly1305 otherwise.
	CipherAuto             Cipher = "auto"
	CipherAES128GCM        Cipher = "aes-128-gcm"
	CipherChaCha20Poly1305 Cipher = "chacha20-poly1305"
)

func (Cipher) values() []string {
	return []string{string(CipherAuto), string(CipherAES128GCM), string(CipherChaCha20Poly1305)}
}

// Proto is the protocol a firewall rule matches.
type Proto string

// Firewall rule protocols.
const (
	ProtoAny  Proto = "any"
	ProtoTCP  Proto = "tcp"
	ProtoUDP  Proto = "udp"
	ProtoICMP Proto = "icmp" // ICMP and ICMPv6
)

func (Proto) values() []string {
	return []string{string(ProtoAny), string(ProtoTCP), string(ProtoUDP), string(ProtoICMP)}
}

// LogLevel is the minimum level of log lines written.
type LogLevel string

// Log levels.
const (
	LogDebug LogLevel = "debug"
	LogInfo  LogLevel = "info"
	LogWarn  LogLevel = "warn"
	LogError LogLevel = "error"
)

func (LogLevel) values() []string {
	return []string{string(LogDebug), string(LogInfo), string(LogWarn), string(LogError)}
}

// Slog returns the slog level for l; unknown values map to Info.
func (l LogLevel) Slog() slog.Level {
	switch l {
	case LogDebug:
		return slog.LevelDebug
	case LogWarn:
		return slog.LevelWarn
	case LogError:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// LogFormat is the encoding of log lines.
type LogFormat string

// Log formats.
const (
	LogText LogFormat = "text" // slog.TextHandler (key=value)
	LogJSON LogFormat = "json" // slog.JSONHandler
)

func (LogFormat) values() []string { return []string{string(LogText), string(LogJSON)} }
