package tunnel

import "github.com/meshd/meshd/pki"

// PeerCert returns the certificate the peer presented in the link's last
// completed handshake (the first one of a session or a rekey), as pki
// verified it against the CA, the CRL and the peer's expected name and
// address; nil before the first. It is the peer's authenticated identity:
// its groups and subnets are what the firewall and anti-spoofing may trust,
// whatever a registry copy of its certificate says. Safe for concurrent use.
func (l *Link) PeerCert() *pki.NodeCert {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snap.peerCert
}
