package tunnel

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/meshd/meshd/pki"
)

/* Certificate renewal without dropping links
 *
 * SetCredentials swaps the certificate and key that handshakes present. A
 * connected session keeps its keys and carries on; its next rekey handshake
 * (keys.go) presents the new certificate, and each link asks for that rekey
 * at once: the controlling side starts it, the controlled side sends a
 * rekey-request. Records keep flowing under the current epoch throughout,
 * so a renewal loses no packet.
 *
 * Roles come from the two certificates' fingerprints (Peer.controlling), so
 * a renewal may swap them. A live session keeps the roles it started with;
 * the next session uses the new ones. Likewise a registry record that only
 * changes the peer's fingerprint (the peer renewed) does not end a live
 * session: its rekey handshake verifies the new certificate against the same
 * expectation (name, address, subnets).
 */

// localCred is this node's certificate as handshakes present it. gen counts
// swaps, so a session can tell whether its last handshake used the current
// one.
type localCred struct {
	self *pki.NodeCert
	tls  tls.Certificate
	gen  uint64
}

// ErrIdentityChanged: a new certificate names another node or overlay
// address; that needs a restart, not a renewal.
var ErrIdentityChanged = errors.New("tunnel: the new certificate has another node name or overlay address")

func (m *Manager) self() *pki.NodeCert { return m.cred.Load().self }

// SetCredentials makes handshakes present creds from now on and has every
// connected link re-handshake with it, without interrupting traffic (see
// the comment above). creds must keep the node's name and overlay
// addresses (ErrIdentityChanged otherwise); groups, subnets and validity
// may change.
func (m *Manager) SetCredentials(creds *pki.Credentials) error {
	if creds == nil || creds.Cert == nil || creds.Key == nil {
		return fmt.Errorf("%w: Credentials (certificate and key) are required", ErrInvalidOptions)
	}
	cur := m.cred.Load()
	old, id := cur.self.Identity, creds.Cert.Identity
	if old.Name != id.Name || old.Addr != id.Addr || old.Addr6 != id.Addr6 {
		return fmt.Errorf("%w: %s %s → %s %s", ErrIdentityChanged, old.Name, old.Addr, id.Name, id.Addr)
	}
	if creds.Cert.Fingerprint == cur.self.Fingerprint {
		return nil
	}
	m.cred.Store(&localCred{self: creds.Cert, tls: creds.TLSCertificate(), gen: cur.gen + 1})
	m.log.Info("certificate renewed; links re-handshake with it", "fingerprint", creds.Cert.Fingerprint,
		"notAfter", creds.Cert.Cert.NotAfter)
	return nil
}

// sameIdentity reports whether p and q expect the same peer except for the
// certificate fingerprint (the peer renewed its certificate).
func sameIdentity(p, q Peer) bool {
	q.Fingerprint = p.Fingerprint
	return p.equal(q)
}
