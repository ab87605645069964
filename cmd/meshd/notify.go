package main

import (
	"log/slog"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// notifier speaks systemd's sd_notify protocol (Type=notify). Without
// NOTIFY_SOCKET every call is a no-op.
type notifier struct {
	log *slog.Logger
}

func newNotifier(log *slog.Logger) *notifier { return &notifier{log: log} }

func (n *notifier) send(lines ...string) {
	if _, err := sd.SdNotify(false, strings.Join(lines, "\n")); err != nil {
		n.log.Debug("sd_notify failed", "error", err)
	}
}

// statusLine keeps STATUS= to one line.
func statusLine(s string) string { return "STATUS=" + strings.ReplaceAll(s, "\n", " ") }

func (n *notifier) status(s string) { n.send(statusLine(s)) }

// ready is sent once the daemon is usable, and after each reload.
func (n *notifier) ready(status string) { n.send(sd.SdNotifyReady, statusLine(status)) }

// reloading is sent before a reload; MONOTONIC_USEC lets systemd (253+,
// Type=notify-reload) match it to the reload it asked for.
func (n *notifier) reloading() {
	lines := []string{sd.SdNotifyReloading, statusLine("reloading configuration")}
	if mono := strings.TrimSpace(sd.SdNotifyMonotonicUsec()); mono != "" {
		lines = append(lines, mono)
	}
	n.send(lines...)
}

func (n *notifier) stopping() { n.send(sd.SdNotifyStopping, statusLine("stopping")) }

func (n *notifier) watchdog(status string) { n.send(sd.SdNotifyWatchdog, statusLine(status)) }

// watchdogInterval is WATCHDOG_USEC (0 when the watchdog is off); meshd
// pings at half of it.
func (n *notifier) watchdogInterval() time.Duration {
	iv, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("ignoring the systemd watchdog settings", "error", err)
		return 0
	}
	return iv
}
