package main

// Shared formatting for the online commands (status, peers, ping, netcheck,
// wait, events, reload): aligned tables, human units, relative times, and
// JSON output. Output is for a person reading it; --json is for programs.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshd/meshd/control"
)

// newTable returns a tabwriter for aligned columns separated by two spaces.
// Write rows with cells joined by '\t'; call Flush when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes cells as one tab-separated table row.
func row(tw io.Writer, cells ...string) {
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

// printJSONDoc writes v indented, for whole documents.
func printJSONDoc(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// printJSONLine writes v on one line, for streams (NDJSON).
func printJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// humanBytes is n in IEC units: "512 B", "1.5 KiB", "3.2 GiB".
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// humanRTT is a round-trip time in milliseconds, "-" when unknown: "0.85ms",
// "12.3ms", "1.25s".
func humanRTT(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// humanAgo is how long before now t was: "just now", "45s ago", "3m ago",
// "5h ago", "2d ago"; "never" for the zero time.
func humanAgo(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	return humanSpan(d, false) + " ago"
}

// humanSpan is a duration rounded down for people. With detail, the second
// unit is kept: "3h12m", "2d4h"; without: "3h", "2d".
func humanSpan(d time.Duration, detail bool) string {
	const day = 24 * time.Hour
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d < day:
		if detail && d%time.Hour >= time.Minute {
			return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
		}
		return fmt.Sprintf("%dh", d/time.Hour)
	default:
		if detail && d%day >= time.Hour {
			return fmt.Sprintf("%dd%dh", d/day, d%day/time.Hour)
		}
		return fmt.Sprintf("%dd", d/day)
	}
}

// dash stands in for an empty cell.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// addrString is an address, or "" when unknown.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func addrPortString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// natWords says what a NAT behaviour means for direct paths.
func natWords(n control.NATBehavior) string {
	switch n {
	case control.NATNone:
		return "none (public address)"
	case control.NATEndpointIndependent:
		return "endpoint-independent (easy: direct paths work)"
	case control.NATAddressDependent:
		return "address-dependent (hard: direct paths may need the relay)"
	case control.NATAddressPortDependent:
		return "address-and-port-dependent (hard: direct paths to other NATed nodes need the relay)"
	case control.NATUDPBlocked:
		return "UDP blocked (no STUN answers: no direct paths)"
	case "", control.NATUnknown:
		return "unknown (no STUN answer yet)"
	}
	return string(n)
}

// joinNonEmpty joins the non-empty parts with sep.
func joinNonEmpty(sep string, parts ...string) string {
	var keep []string
	for _, p := range parts {
		if p != "" {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, sep)
}
