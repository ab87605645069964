package tunnel

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/meshd/meshd/pki"
)

// Peer is the node a link connects to, as the registry describes it.
type Peer struct {
	// Name is the peer's node name (its certificate CN).
	Name string
	// Addr is the peer's overlay address; the handshake checks that the
	// certificate carries it.
	Addr netip.Addr
	// Fingerprint is the lowercase hex SHA-256 of the peer's certificate
	// from its registry record. It decides the roles: the node with the
	// smaller fingerprint is ICE-controlling and DTLS client.
	Fingerprint string
	// Subnets are the subnets the registry routes to this peer; the
	// handshake checks that the certificate allows each.
	Subnets []netip.Prefix
}

func (p Peer) validate(self *pki.NodeCert) error {
	switch {
	case !pki.ValidName(p.Name):
		return fmt.Errorf("%w: name %q", ErrInvalidPeer, p.Name)
	case !p.Addr.IsValid():
		return fmt.Errorf("%w: %q has no overlay address", ErrInvalidPeer, p.Name)
	case !validFingerprint(p.Fingerprint):
		return fmt.Errorf("%w: %q fingerprint %q is not 64 lowercase hex digits", ErrInvalidPeer, p.Name, p.Fingerprint)
	case self != nil && (p.Fingerprint == self.Fingerprint || p.Name == self.Identity.Name):
		return fmt.Errorf("%w: %q is this node", ErrInvalidPeer, p.Name)
	}
	for _, s := range p.Subnets {
		if !s.IsValid() {
			return fmt.Errorf("%w: %q has an invalid subnet", ErrInvalidPeer, p.Name)
		}
	}
	return nil
}

func validFingerprint(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// equal reports whether p and q describe the same expected peer.
func (p Peer) equal(q Peer) bool {
	return p.Name == q.Name && p.Addr == q.Addr && p.Fingerprint == q.Fingerprint && slices.Equal(p.Subnets, q.Subnets)
}

func (p Peer) clone() Peer {
	p.Subnets = slices.Clone(p.Subnets)
	return p
}

// controlling reports whether this node (fingerprint self) is the
// ICE-controlling agent and DTLS client towards p. Both sides compute the same
// answer from the registry, so two nodes that start at once never race.
func (p Peer) controlling(self string) bool { return self < p.Fingerprint }

func (p Peer) expect() pki.Expect {
	return pki.Expect{Name: p.Name, Addr: p.Addr, Subnets: slices.Clone(p.Subnets)}
}
