//go:build e2e

package lab

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TURNOptions configures a coturn server in the lab.
type TURNOptions struct {
	// Secret is coturn's static-auth-secret (the time-limited credential
	// scheme meshd's coordinators use too); empty means "labsecret".
	Secret string
	// Realm; empty means "meshd.test".
	Realm string
	// Port is the listening port for UDP and TCP; zero means 3478.
	Port int
	// MinPort and MaxPort bound the relay ports; zero means 49160-49200.
	MinPort, MaxPort int
	// Addr fixes the server's backbone address; zero means the next free.
	Addr netip.Addr
	// ExtraConfig lines are appended to the generated turnserver.conf.
	ExtraConfig []string
}

// TURN is a coturn server running on its own public host.
type TURN struct {
	// Host is the public host coturn runs on.
	Host *Host
	// Addr is where it listens, over UDP and TCP.
	Addr netip.AddrPort
	// Secret is the static-auth-secret.
	Secret string
	// Realm is the TURN realm.
	Realm string
	// ConfigPath is the generated turnserver.conf (in the artifact dir).
	ConfigPath string
	// LogPath is coturn's log file (in the artifact dir).
	LogPath string
	// Proc is the turnserver process.
	Proc *Proc
}

// AddTURN adds a public host called name running coturn with the config of
// LAB.md "coturn in the lab" (no TLS, static-auth-secret), and waits until
// it listens on UDP and TCP. It must be called from the test goroutine and
// fails t on error.
func (l *Lab) AddTURN(t testing.TB, name string, opts TURNOptions) *TURN {
	t.Helper()
	if _, err := exec.LookPath("turnserver"); err != nil {
		t.Fatalf("lab: turnserver not installed: run scripts/lab-deps.sh as root")
	}
	if opts.Secret == "" {
		opts.Secret = "labsecret"
	}
	if opts.Realm == "" {
		opts.Realm = "meshd.test"
	}
	if opts.Port == 0 {
		opts.Port = 3478
	}
	if opts.MinPort == 0 && opts.MaxPort == 0 {
		opts.MinPort, opts.MaxPort = 49160, 49200
	}
	if opts.MinPort < 1024 || opts.MaxPort < opts.MinPort || opts.MaxPort > 65535 {
		t.Fatalf("%v: TURN relay ports %d-%d", ErrBadOption, opts.MinPort, opts.MaxPort)
	}
	h := l.AddHost(t, name, HostOptions{Addr: opts.Addr})
	ip := h.IP()
	conf := filepath.Join(l.dir, name+".turnserver.conf")
	logPath := filepath.Join(l.dir, name+".turnserver.log")
	lines := []string{
		"listening-ip=" + ip.String(),
		"relay-ip=" + ip.String(),
		"external-ip=" + ip.String(),
		"listening-port=" + strconv.Itoa(opts.Port),
		"min-port=" + strconv.Itoa(opts.MinPort),
		"max-port=" + strconv.Itoa(opts.MaxPort),
		"use-auth-secret",
		"static-auth-secret=" + opts.Secret,
		"realm=" + opts.Realm,
		"fingerprint",
		"no-tls",
		"no-dtls",
		"no-cli",
		// A log file, not stdout: coturn buffers stdout when it is not a
		// terminal, so session lines would show up only at exit.
		"log-file=" + logPath,
		"simple-log",
		"verbose",
		// Each instance gets its own pid file; the default is shared.
		"pidfile=" + filepath.Join(l.dir, name+".turnserver.pid"),
	}
	lines = append(lines, opts.ExtraConfig...)
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatalf("lab: %v", err)
	}
	p, err := h.StartWith(ProcOptions{Label: "turnserver"}, "turnserver", "-c", conf)
	if err != nil {
		t.Fatal(err)
	}
	WaitListening(t, 10*time.Second, h.Namespace, "udp", opts.Port)
	WaitListening(t, 10*time.Second, h.Namespace, "tcp", opts.Port)
	l.log.Info("turn server up", "host", name, "addr", netip.AddrPortFrom(ip, uint16(opts.Port)))
	return &TURN{
		Host: h, Addr: netip.AddrPortFrom(ip, uint16(opts.Port)),
		Secret: opts.Secret, Realm: opts.Realm, ConfigPath: conf, LogPath: logPath, Proc: p,
	}
}

// Log returns what coturn has logged so far.
func (s *TURN) Log() string { return readFile(s.LogPath) }

// Credentials returns a TURN username and password for user valid for ttl.
func (s *TURN) Credentials(user string, ttl time.Duration) (username, password string) {
	return TURNCredentials(s.Secret, user, time.Now().Add(ttl))
}

// TURNCredentials returns the time-limited credentials of coturn's
// static-auth-secret scheme (the TURN REST API draft): the username is
// "<unix expiry>:<user>" and the password base64(HMAC-SHA1(secret,
// username)).
func TURNCredentials(secret, user string, expiry time.Time) (username, password string) {
	username = fmt.Sprintf("%d:%s", expiry.Unix(), user)
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
