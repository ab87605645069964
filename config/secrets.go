package config

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Secrets stay readable by root (meshd's user) only. Each inline secret key
// has a file variant, so the configuration file itself may stay readable by
// a group (the packages install it 0640) without exposing them:
//
//	coordinator.gossip_key        coordinator.gossip_key_file
//	coordinator.turn.auth_secret  coordinator.turn.auth_secret_file
//	ice.turn_servers[].secret     ice.turn_servers[].secret_file
//
// ice.turn_servers[].credential, a static TURN password, has no file
// variant (the TURN server's operator chose it, and it only buys relaying),
// but it is still a secret and warned about like the others.
//
// The daemon reads the secret files (Load only checks that they are
// readable), so a file can be replaced without touching the configuration.

// exposed reports whether a file with permission bits mode can be read by
// users other than its owner.
func exposed(mode fs.FileMode) bool { return mode&0o044 != 0 }

// warnInlineSecrets adds a warning for every secret written into a
// configuration file that group or others can read.
func warnInlineSecrets(p *problems, cfg *Config, mode fs.FileMode) {
	if !exposed(mode) {
		return
	}
	why := fmt.Sprintf("a secret in a file other users can read (mode %04o)", mode)
	move := func(key, fileKey string) {
		p.warnf(key, ErrSecretExposed, "%s; move it to %s (a file of mode 0600) or make this file readable by its owner only (chmod 600)", why, fileKey)
	}
	c := &cfg.Coordinator
	if c.GossipKey != "" {
		move("coordinator.gossip_key", "coordinator.gossip_key_file")
	}
	if c.TURN.AuthSecret != "" {
		move("coordinator.turn.auth_secret", "coordinator.turn.auth_secret_file")
	}
	for i, s := range cfg.ICE.TURNServers {
		key := indexKey("ice.turn_servers", i)
		if s.Secret != "" {
			move(key+".secret", key+".secret_file")
		}
		if s.Credential != "" {
			p.warnf(key+".credential", ErrSecretExposed, "%s; make this file readable by its owner only (chmod 600)", why)
		}
	}
}

// ReadSecret returns the entry's coturn static-auth-secret: Secret, or the
// contents of SecretFile without surrounding whitespace (so a trailing
// newline does not count), or "" for an entry with static credentials.
// Errors match [ErrFile] (the file cannot be read) or [ErrInvalid] (it is
// empty). The daemon calls it whenever it builds its TURN server list from a
// configuration: at start and on every reload, not per use.
func (s TURNServer) ReadSecret() (string, error) {
	if s.SecretFile == "" {
		return s.Secret, nil
	}
	return readSecretFile(s.SecretFile)
}

// readSecretFile reads a secret file the way the daemon reads
// coordinator.turn.auth_secret_file: whitespace around the secret is not
// part of it, and an empty secret is an error rather than a weak key.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: cannot read secret file: %w", ErrFile, err)
	}
	secret := strings.TrimSpace(string(b))
	if secret == "" {
		return "", fmt.Errorf("%w: secret file %s is empty", ErrInvalid, path)
	}
	return secret, nil
}
