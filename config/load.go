package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// Option changes how [Load] and [Parse] work.
type Option func(*options)

type options struct {
	checkFiles bool
	// fileMode is the configuration file's permission bits, known
	// (haveMode) only when Load read the file.
	fileMode fs.FileMode
	haveMode bool
}

// WithFileChecks turns the checks that referenced files (pki paths, secret
// and TLS files) exist and are readable on or off. [Load] checks by default,
// [Parse] does not.
func WithFileChecks(on bool) Option { return func(o *options) { o.checkFiles = on } }

// Load reads, parses and validates the configuration file at path. On any
// problem it returns a nil *Config and an [*Errors] listing all of them. On
// success, [Config.Warnings] lists what works but should be fixed, such as
// secrets other users can read.
func Load(path string, opts ...Option) (*Config, error) {
	o := options{checkFiles: true}
	for _, opt := range opts {
		opt(&o)
	}
	data, mode, err := readConfigFile(path)
	if err != nil {
		var pe *fs.PathError
		msg := err.Error()
		if errors.As(err, &pe) {
			msg = "cannot read configuration: " + pe.Err.Error()
		}
		return nil, &Errors{List: []*Error{{File: path, Msg: msg, Kind: ErrFile}}}
	}
	o.fileMode, o.haveMode = mode, true
	return parse(path, data, o)
}

// readConfigFile reads the file at path and returns its permission bits.
// The mode comes from the open descriptor, so it is the mode of the very
// file read, even if the name is replaced in between.
func readConfigFile(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, err
	}
	return data, st.Mode().Perm(), nil
}

// Parse parses and validates configuration text. name is used in error
// messages and as the base for relative paths (its directory). Files are not
// checked unless [WithFileChecks](true) is given. On any problem it returns a
// nil *Config and an [*Errors] listing all of them.
func Parse(name string, data []byte, opts ...Option) (*Config, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return parse(name, data, o)
}

func parse(name string, data []byte, o options) (*Config, error) {
	// The TOML library drops a UTF-8 byte order mark before counting
	// positions; drop it here too so the scanner counts the same way.
	text := strings.TrimPrefix(string(data), "\ufeff")
	p := &problems{file: name}

	raw, err := decodeTOML(text)
	if err != nil {
		p.list = append(p.list, syntaxError(name, text, err))
		return nil, p.err()
	}
	p.pos = scanPositions(text)

	cfg := Default()
	cfg.File = name
	(&decoder{p: p}).table("", raw, reflect.ValueOf(cfg).Elem())
	if c, ok := raw["control"].(map[string]any); ok {
		_, cfg.Control.GroupSet = c["group"]
	}
	(&validator{p: p, cfg: cfg, dir: filepath.Dir(name)}).run()
	if o.checkFiles {
		checkFiles(p, cfg)
	}
	if o.haveMode {
		warnInlineSecrets(p, cfg, o.fileMode)
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	cfg.Warnings = p.sortedWarnings()
	return cfg, nil
}

// decodeTOML parses text into generic maps. The library reports syntax
// errors as toml.ParseError; a panic inside it (a library bug) becomes an
// error too, because a configuration file must never crash the daemon.
func decodeTOML(text string) (raw map[string]any, err error) {
	defer func() {
		if r := recover(); r != nil {
			raw, err = nil, fmt.Errorf("TOML parser failed: %v", r)
		}
	}()
	raw = map[string]any{}
	if _, err := toml.Decode(text, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// syntaxError turns a TOML library error into an *Error. The position comes
// from the error's byte offset: the library's own line is one too far for
// errors at a line's final newline, and its column is off at line starts.
func syntaxError(name, text string, err error) *Error {
	e := &Error{File: name, Msg: err.Error(), Kind: ErrSyntax}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		e.Msg = "TOML syntax: " + pe.Message
		e.Line, e.Col = lineCol(text, pe.Position.Start)
		if pe.Position.Start == 0 && pe.Position.Line > 1 {
			// An error made without an offset; the line is all there is.
			e.Line, e.Col = pe.Position.Line, 1
		}
	}
	return e
}

// lineCol converts a byte offset of text to a 1-based line and byte column.
func lineCol(text string, off int) (line, col int) {
	off = max(0, min(off, len(text)))
	line = 1 + strings.Count(text[:off], "\n")
	return line, off - (strings.LastIndexByte(text[:off], '\n') + 1) + 1
}

// checkFiles reports referenced files that are missing or unreadable, at the
// position of the key naming them, and warns about secret files (keys and
// shared secrets) that other users can read. Only files the configuration
// will use are checked (a secret file of a disabled coordinator is not).
func checkFiles(p *problems, cfg *Config) {
	type ref struct {
		key, path string
		secret    bool
	}
	refs := []ref{{"pki.ca", cfg.PKI.CA, false}, {"pki.cert", cfg.PKI.Cert, false}, {"pki.key", cfg.PKI.Key, true}, {"pki.crl", cfg.PKI.CRL, false}}
	c := &cfg.Coordinator
	if c.Enabled {
		refs = append(refs, ref{"coordinator.gossip_key_file", c.GossipKeyFile, true})
		if c.TURN.Enabled {
			refs = append(refs, ref{"coordinator.turn.auth_secret_file", c.TURN.AuthSecretFile, true})
			if c.TURN.TLSListen.IsValid() {
				// Defaults copied from pki were checked there already.
				if c.TURN.TLSCert != cfg.PKI.Cert {
					refs = append(refs, ref{"coordinator.turn.tls_cert", c.TURN.TLSCert, false})
				}
				if c.TURN.TLSKey != cfg.PKI.Key {
					refs = append(refs, ref{"coordinator.turn.tls_key", c.TURN.TLSKey, true})
				}
			}
		}
	}
	for i, s := range cfg.ICE.TURNServers {
		refs = append(refs, ref{indexKey("ice.turn_servers", i) + ".secret_file", s.SecretFile, true})
	}
	for _, r := range refs {
		if r.path == "" {
			continue
		}
		mode, msg := readable(r.path)
		if msg != "" {
			p.add(r.key, ErrFile, msg)
			continue
		}
		if r.secret && exposed(mode) {
			p.warnf(r.key, ErrSecretExposed, "%s is readable by other users (mode %04o); make it readable by its owner only (chmod 600)", r.path, mode)
		}
	}
}

// readable returns the permission bits and "" if path is a regular file this
// process can open for reading, or what is wrong with it.
func readable(path string) (fs.FileMode, string) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return 0, fmt.Sprintf("cannot read %s: %v", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Sprintf("cannot read %s: %v", path, err)
	}
	if st.IsDir() {
		return 0, fmt.Sprintf("%s is a directory, not a file", path)
	}
	return st.Mode().Perm(), ""
}
