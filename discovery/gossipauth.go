package discovery

import (
	"fmt"
	"time"

	"github.com/meshd/meshd/pki"
)

// gossipauth.go: coordinators replicate only with coordinators.
//
// memberlist authenticates gossip with the shared gossip key (AES-GCM), which
// says nothing about who holds it. So each coordinator proves its
// certificate to every other member it sees: a Hello sent reliably when the
// member appears (and again every helloRetry until the member has answered
// with its own), carrying the sender's certificate and its signature over
// the cluster label, both names and the time. The receiver applies the pki
// policy with Expect.Coordinator (the coordinator role), requires the
// certificate's name to be the member's name, the signature to verify and
// the time to be within MaxVersionSkew. Until a member has proven the role
// this way it is untrusted, and the coordinator
//
//   - forwards no signal to it and delivers none it forwarded,
//   - asks it no duplicate-identity question and answers none of its own
//     (its claim to hold a node's session blocks nobody),
//   - sends it no reliable fan-out of registry changes,
//
// and logs once, per member and reason, why it refuses it. Registry records
// that arrive by broadcast or push/pull are signed by their nodes and
// verified whoever relayed them; memberlist cannot attribute those to a
// member, so they stay protected by the gossip key and the records'
// signatures alone (docs/protocol.md, "Coordinator gossip").

const (
	gossipHello uint8 = 10 // a coordinator's certificate and its proof of the key

	helloContext = "meshd coordinator hello v1\x00"
)

// helloRetry paces Hellos to members that have not proven their role yet.
const helloRetry = 2 * time.Second

// helloSigned is what a Hello's signature covers.
func helloSigned(label, from, to string, at int64) []byte {
	return signedPrefix(helloContext, label, from, to, at).b
}

// signedPrefix starts what a coordinator signs for a member: the message's
// context, the cluster label, both names and the time.
func signedPrefix(context, label, from, to string, at int64) wbuf {
	w := wbuf{}
	w.b = append(w.b, context...)
	w.str8(label)
	w.str8(from)
	w.str8(to)
	w.i64(at)
	return w
}

func encodeGossipHello(from, to string, at int64, reply bool, cert, sig []byte) []byte {
	w := wbuf{}
	gossipHeader(&w, gossipHello)
	w.i64(at)
	w.str8(from)
	w.str8(to)
	w.bool(reply)
	w.bytes16(cert)
	w.bytes16(sig)
	return w.b
}

// hello builds this coordinator's Hello to member to; reply asks for theirs.
func (c *Coordinator) hello(to string, reply bool) []byte {
	at := time.Now().UnixNano()
	sig, err := pki.SignMessage(c.opts.Credentials.Key, helloSigned(c.label, c.name, to, at))
	if err != nil {
		c.log.Error("cannot sign a coordinator hello", "error", err)
		return nil
	}
	return encodeGossipHello(c.name, to, at, reply, c.opts.Credentials.Cert.Cert.Raw, sig)
}

// sendHello queues a Hello to member name (asking for theirs while name is
// untrusted).
func (c *Coordinator) sendHello(name string, p *peerSender, now time.Time) {
	if msg := c.hello(name, c.trusted[name] == nil); msg != nil {
		p.enqueue(outMsg{msg: msg})
		c.helloSent[name] = now
		if msg := c.relays(name); msg != nil {
			p.enqueue(outMsg{msg: msg}) // gossiprelays.go
		}
	}
}

// verifyHello checks a Hello addressed to this coordinator.
func (c *Coordinator) verifyHello(m gossipMsg, now time.Time) (*pki.NodeCert, error) {
	if m.to != c.name {
		return nil, fmt.Errorf("hello addressed to %q", m.to)
	}
	if d := now.Sub(time.Unix(0, m.at)); d > MaxVersionSkew || d < -MaxVersionSkew {
		return nil, fmt.Errorf("hello signed %v away from this coordinator's clock (more than %v)", d.Round(time.Second), MaxVersionSkew)
	}
	nc, err := verifyCoordinatorCert(c.opts.Verifier, m.cert, now, nil)
	if err != nil {
		return nil, err
	}
	if nc.Identity.Name != m.from {
		return nil, fmt.Errorf("certificate of %q presented by member %q", nc.Identity.Name, m.from)
	}
	if err := pki.VerifyMessage(nc.Cert, helloSigned(c.label, m.from, m.to, m.at), m.sig); err != nil {
		return nil, err
	}
	return nc, nil
}

// handleHello runs on the run goroutine.
func (c *Coordinator) handleHello(m gossipMsg) {
	now := time.Now()
	nc, err := c.verifyHello(m, now)
	if err != nil {
		c.gossipRefused.Add(1)
		why := err.Error()
		if c.refusedMembers[m.from] != why {
			c.refusedMembers[m.from] = why
			c.log.Warn("refusing gossip from coordinator: not a proven coordinator", "member", m.from, "reason", err)
		}
		return
	}
	if c.trusted[m.from] == nil {
		c.log.Info("coordinator authenticated", "member", m.from, "serial", nc.Cert.SerialNumber.String())
	}
	c.trusted[m.from] = nc
	delete(c.refusedMembers, m.from)
	if pm, ok := c.pendingRelays[m.from]; ok {
		delete(c.pendingRelays, m.from)
		c.acceptRelays(pm, now)
	}
	if p := c.peers[m.from]; p != nil && m.reply {
		c.sendHello(m.from, p, now)
	}
}

// retryHellos re-sends Hellos to live members that have not proven their
// role (theirs or ours may have been lost, or they started later).
func (c *Coordinator) retryHellos(now time.Time) {
	for name, p := range c.peers {
		if c.trusted[name] == nil && now.Sub(c.helloSent[name]) >= helloRetry {
			c.sendHello(name, p, now)
		}
	}
}

// trustedPeer is the sender to member name if it proved the coordinator
// role, else nil.
func (c *Coordinator) trustedPeer(name string) *peerSender {
	if c.trusted[name] == nil {
		return nil
	}
	return c.peers[name]
}

// untrust forgets what member name proved (it left, or its certificate was
// revoked).
func (c *Coordinator) untrust(name string) {
	delete(c.trusted, name)
	delete(c.helloSent, name)
	c.forgetRelays(name)
}
