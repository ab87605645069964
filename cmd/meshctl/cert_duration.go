package main

// Durations on meshctl's command line: Go's time.ParseDuration plus a day
// unit, so that what meshctl prints ("expires in 364d") can be typed back
// ("--duration 364d").

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

const day = 24 * time.Hour

// maxDurationText bounds the input before any parsing: nothing longer is a
// duration a person typed.
const maxDurationText = 64

// parseDuration parses "30d", "1d12h", "1.5d", "-2d" and everything
// time.ParseDuration accepts. A day is 24 hours (certificate validity is
// counted in elapsed time, not calendar days). The day part, if any, comes
// first, as in what formatDuration prints.
func parseDuration(s string) (time.Duration, error) {
	if len(s) > maxDurationText {
		return 0, fmt.Errorf("duration %.20q...: too long", s)
	}
	i := strings.IndexByte(s, 'd')
	if i < 0 {
		return time.ParseDuration(s)
	}
	days, rest := s[:i], s[i+1:]
	neg := false
	if days != "" && (days[0] == '-' || days[0] == '+') {
		neg, days = days[0] == '-', days[1:]
	}
	bad := fmt.Errorf("time: invalid duration %q (want e.g. 30d, 1d12h, 720h, 90m)", s)
	if days == "" || strings.IndexFunc(days, func(r rune) bool { return (r < '0' || r > '9') && r != '.' }) >= 0 {
		return 0, bad
	}
	var d time.Duration
	if strings.Contains(days, ".") {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil {
			return 0, bad
		}
		if n*float64(day) >= math.MaxInt64 {
			return 0, fmt.Errorf("time: duration %q out of range", s)
		}
		d = time.Duration(n * float64(day))
	} else {
		// Whole days are exact (what formatDuration prints reads back).
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n > math.MaxInt64/int64(day) {
			return 0, fmt.Errorf("time: duration %q out of range", s)
		}
		d = time.Duration(n) * day
	}
	if rest != "" {
		if rest[0] == '-' || rest[0] == '+' {
			return 0, bad
		}
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, bad
		}
		if d > math.MaxInt64-r {
			return 0, fmt.Errorf("time: duration %q out of range", s)
		}
		d += r
	}
	if neg {
		d = -d
	}
	return d, nil
}

// formatDuration prints whole days as "365d" and other durations as days
// followed by Go's form of the rest ("1d12h0m0s"); parseDuration reads every
// result back to the same value.
func formatDuration(d time.Duration) string {
	if d == math.MinInt64 || (d > -day && d < day) {
		return d.String()
	}
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	s := fmt.Sprintf("%s%dd", sign, d/day)
	if r := d % day; r != 0 {
		s += r.String()
	}
	return s
}

// durationValue is a pflag.Value for a duration in parseDuration's syntax.
type durationValue time.Duration

var _ pflag.Value = (*durationValue)(nil)

func (v *durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) {
			err = ne.Err
		}
		return err
	}
	*v = durationValue(d)
	return nil
}

func (v *durationValue) String() string { return formatDuration(time.Duration(*v)) }

func (v *durationValue) Type() string { return "duration" }

// durationVar is pflag's DurationVar with days: "30d" as well as "720h".
func durationVar(f *pflag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	f.Var((*durationValue)(p), name, usage)
}
