package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ParseGossipKey decodes a memberlist encryption key written as base64 (in
// coordinator.gossip_key, or the contents of coordinator.gossip_key_file;
// surrounding whitespace is ignored). It must decode to 16, 24 or 32 bytes,
// selecting AES-128, -192 or -256. `meshctl config gossip-key` makes one.
func ParseGossipKey(text string) ([]byte, error) {
	s := strings.TrimSpace(text)
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("gossip key is not base64: %w", err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("gossip key is %d bytes; it must be 16, 24 or 32 bytes (base64 of random bytes, e.g. from `meshctl config gossip-key`)", len(key))
}

// normalizeHostPort checks a "host:port" dial address whose host may be a
// DNS name, adds defPort when the port is missing, and returns the address
// in canonical form.
func normalizeHostPort(s string, defPort int) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty address")
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		// No port: a name, an IPv4 address or a bracketed IPv6 address.
		switch {
		case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
			host = s[1 : len(s)-1]
		case strings.Count(s, ":") > 1:
			if _, perr := netip.ParseAddr(s); perr == nil {
				return "", fmt.Errorf("%q: put IPv6 addresses in brackets, like \"[%s]:%d\"", s, s, defPort)
			}
			return "", fmt.Errorf("%q is not a host:port address", s)
		case strings.Contains(s, ":"):
			return "", fmt.Errorf("%q is not a host:port address", s)
		default:
			host = s
		}
		portStr = strconv.Itoa(defPort)
	}
	if _, err := parsePort(portStr); err != nil {
		return "", fmt.Errorf("%q: port %q is not a port number (1-65535)", s, portStr)
	}
	if !validHost(host) {
		return "", fmt.Errorf("%q: %q is neither an IP address nor a DNS name", s, host)
	}
	return net.JoinHostPort(host, portStr), nil
}

// validHost accepts IP addresses (without zone) and DNS names (letters,
// digits, '-' and '_' in dot-separated labels of 1-63 bytes, 253 in all).
func validHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// iceURL is a parsed STUN or TURN URI (RFC 7064, RFC 7065).
type iceURL struct {
	scheme    string // stun, stuns, turn, turns
	host      string
	port      int
	transport string // "udp" or "tcp" for turn(s); "" for stun(s)
}

// parseICEURL parses raw as a STUN/TURN URI whose scheme is one of schemes.
// It accepts what pion's stun.ParseURI accepts, minus the combinations pion
// cannot use (turns over UDP).
func parseICEURL(raw string, schemes ...string) (iceURL, error) {
	want := strings.Join(schemes, ":, ") + ":"
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return iceURL{}, fmt.Errorf("%q is not a URL; want %s", raw, want)
	}
	u := iceURL{scheme: strings.ToLower(scheme)}
	known := false
	for _, s := range schemes {
		known = known || s == u.scheme
	}
	if !known {
		return iceURL{}, fmt.Errorf("%q has scheme %q; want %s", raw, scheme, want)
	}
	if strings.HasPrefix(rest, "//") {
		return iceURL{}, fmt.Errorf("%q: write %s:host:port, without \"//\"", raw, u.scheme)
	}
	hostport, query, hasQuery := strings.Cut(rest, "?")
	secure := strings.HasSuffix(u.scheme, "s")
	switch u.scheme {
	case "stun", "stuns":
		if hasQuery {
			return iceURL{}, fmt.Errorf("%q: %s: URLs take no query", raw, u.scheme)
		}
	default:
		u.transport = "udp"
		if secure {
			u.transport = "tcp"
		}
		if hasQuery {
			k, v, _ := strings.Cut(query, "=")
			if k != "transport" || (v != "udp" && v != "tcp") {
				return iceURL{}, fmt.Errorf("%q: the only query is ?transport=udp or ?transport=tcp", raw)
			}
			u.transport = v
		}
		if secure && u.transport == "udp" {
			return iceURL{}, fmt.Errorf("%q: turns: runs over TLS; transport=udp is not supported", raw)
		}
	}
	defPort := DefaultSTUNPort
	if secure {
		defPort = 5349
	}
	hp, err := normalizeHostPort(hostport, defPort)
	if err != nil {
		return iceURL{}, fmt.Errorf("%q: %w", raw, err)
	}
	host, portStr, _ := net.SplitHostPort(hp)
	u.host = host
	u.port, _ = strconv.Atoi(portStr)
	return u, nil
}
