package config

import (
	"errors"
	"fmt"
	"strings"
)

// Kinds of configuration problems. Every [*Error] matches exactly one of them
// with errors.Is, so callers branch on the kind without matching strings.
var (
	// ErrSyntax means the file is not valid TOML.
	ErrSyntax = errors.New("config: TOML syntax error")
	// ErrUnknownKey means a key or table is not part of the schema.
	ErrUnknownKey = errors.New("config: unknown key")
	// ErrType means a value has the wrong TOML type (a string where an
	// integer belongs, ...).
	ErrType = errors.New("config: wrong type")
	// ErrInvalid means a value has the right type but is not acceptable
	// (bad CIDR, port, duration, URL, enum value, overlapping prefixes, ...).
	ErrInvalid = errors.New("config: invalid value")
	// ErrRequired means a required key is missing.
	ErrRequired = errors.New("config: missing required key")
	// ErrFile means a file the configuration names is missing or unreadable,
	// or the configuration file itself could not be read.
	ErrFile = errors.New("config: file problem")
)

// Kinds of warnings: problems that do not stop a configuration from loading
// (they are in [Config.Warnings], not in [Errors]).
var (
	// ErrSecretExposed means a secret can be read by users other than the
	// file's owner: an inline secret in a configuration file, or a secret or
	// private key file, that is group- or world-readable.
	ErrSecretExposed = errors.New("config: secret readable by other users")
)

// Error is one problem in a configuration file.
//
// It prints as "file:line:col: key: message"; the position and the key are
// left out when unknown (Line 0, Key ""). Line and Col are 1-based; Col counts
// bytes, like the Go compiler's columns. Key is the dotted path of the
// offending key with 0-based indices for array elements and array-of-tables
// entries, e.g. "firewall.inbound[1].port".
type Error struct {
	File string
	Line int
	Col  int
	Key  string
	Msg  string
	// Kind is one of the Err* sentinels of this package.
	Kind error
}

// Error formats the problem as "file:line:col: key: message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the problem's kind, so errors.Is(err, ErrUnknownKey) works.
func (e *Error) Unwrap() error { return e.Kind }

// Errors is every problem found in one configuration file, in file order
// (problems without a position last). [Load] and [Parse] return it as their
// error; it is never empty.
type Errors struct {
	List []*Error
}

// Error prints one problem per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, err := range e.List {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes every problem to errors.Is and errors.As.
func (e *Errors) Unwrap() []error {
	errs := make([]error, len(e.List))
	for i, err := range e.List {
		errs[i] = err
	}
	return errs
}
