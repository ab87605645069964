package discovery

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/meshd/meshd/pki"
)

// gossiprelays.go: each coordinator tells the others which TURN URLs of its
// embedded server it hands out, so a session's TURN frame lists every live
// coordinator's relay and a relayed link already holds pairs through a
// second relay when its own dies (docs/protocol.md, "Relays of other coordinators").
//
// The Relays message is signed like a Hello, by the key whose certificate
// the sender proved in its Hello, and is sent with every Hello. A Relays
// message from a member that has not proven its role yet is kept (one per
// live member) until it does; what a member announced is forgotten when it
// leaves, is declared dead or is untrusted.

const (
	gossipRelays uint8 = 11 // a coordinator's own TURN URLs, signed

	relaysContext = "meshd coordinator relays v1\x00"

	// maxRelayURLs bounds one Relays message: a dual-stack server announces
	// at most 8 URLs of its own (turn.go).
	maxRelayURLs = 8
	// maxRelayURLLen bounds one URL, as in the session's TURN frame.
	maxRelayURLLen = 255
)

// relaysSigned is what a Relays message's signature covers.
func relaysSigned(label, from, to string, at int64, urls []string) []byte {
	w := signedPrefix(relaysContext, label, from, to, at)
	putURLs(&w, urls)
	return w.b
}

func encodeGossipRelays(from, to string, at int64, urls []string, sig []byte) []byte {
	w := wbuf{}
	gossipHeader(&w, gossipRelays)
	w.i64(at)
	w.str8(from)
	w.str8(to)
	putURLs(&w, urls)
	w.bytes16(sig)
	return w.b
}

// putURLs writes a u8 count and each URL as str8; callers hold at most
// maxRelayURLs of at most maxRelayURLLen bytes.
func putURLs(w *wbuf, urls []string) {
	w.u8(uint8(len(urls)))
	for _, u := range urls {
		w.str8(u)
	}
}

// decodeGossipRelays reads a Relays body into m.
func decodeGossipRelays(r *rbuf, m *gossipMsg) {
	m.at = r.i64("time")
	m.from = r.str8("from", maxNameLen)
	m.to = r.str8("to", maxNameLen)
	n := int(r.u8("relay url count"))
	if r.err == nil && n > maxRelayURLs {
		r.failLimit("relay url count", uint64(n), maxRelayURLs)
	}
	for i := 0; i < n && r.err == nil; i++ {
		m.urls = append(m.urls, r.str8("relay url", maxRelayURLLen))
	}
	m.sig = r.bytes16("signature", maxSigLen)
}

// relays builds this coordinator's Relays message to member to, or nil when
// its embedded server hands out no TURN URL.
func (c *Coordinator) relays(to string) []byte {
	urls := c.turn.relayURLs()
	if len(urls) == 0 {
		return nil
	}
	at := time.Now().UnixNano()
	sig, err := pki.SignMessage(c.opts.Credentials.Key, relaysSigned(c.label, c.name, to, at, urls))
	if err != nil {
		c.log.Error("cannot sign a coordinator relays message", "error", err)
		return nil
	}
	return encodeGossipRelays(c.name, to, at, urls, sig)
}

// handleRelays runs on the run goroutine.
func (c *Coordinator) handleRelays(m gossipMsg) {
	if m.to != c.name || c.peers[m.from] == nil {
		c.gossipRefused.Add(1)
		return
	}
	if c.trusted[m.from] == nil {
		c.pendingRelays[m.from] = m // verified once the member proves its role
		return
	}
	c.acceptRelays(m, time.Now())
}

// acceptRelays verifies m against its sender's proven certificate and, when
// it holds, installs the sender's URLs.
func (c *Coordinator) acceptRelays(m gossipMsg, now time.Time) {
	nc := c.trusted[m.from]
	if d := now.Sub(time.Unix(0, m.at)); d > MaxVersionSkew || d < -MaxVersionSkew {
		c.gossipRefused.Add(1)
		return
	}
	if err := pki.VerifyMessage(nc.Cert, relaysSigned(c.label, m.from, m.to, m.at, m.urls), m.sig); err != nil {
		c.gossipRefused.Add(1)
		c.log.Warn("refusing a coordinator's relays: bad signature", "member", m.from, "error", err)
		return
	}
	if slices.Equal(c.memberRelays[m.from], m.urls) {
		return
	}
	c.memberRelays[m.from] = slices.Clone(m.urls)
	c.log.Info("coordinator relays learned", "member", m.from, "urls", strings.Join(m.urls, " "))
	c.relaysChanged()
}

// forgetRelays drops what member name announced (it left, died or was
// untrusted).
func (c *Coordinator) forgetRelays(name string) {
	delete(c.pendingRelays, name)
	if _, ok := c.memberRelays[name]; ok {
		delete(c.memberRelays, name)
		c.log.Info("coordinator relays forgotten", "member", name)
		c.relaysChanged()
	}
}

// otherRelayURLs are the live trusted members' URLs in member-name order.
func (c *Coordinator) otherRelayURLs() []string {
	names := make([]string, 0, len(c.memberRelays))
	for n := range c.memberRelays {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		out = append(out, c.memberRelays[n]...)
	}
	return out
}

// relaysChanged re-issues TURN credentials to every live session that has
// some, so nodes learn a new relay or stop using a dead one.
func (c *Coordinator) relaysChanged() {
	now := time.Now()
	others := c.otherRelayURLs()
	for _, s := range c.sessions {
		if !s.live || s.turnExpires.IsZero() {
			continue
		}
		if creds, ok := c.turn.credentials(s.name, now, others); ok {
			s.send(turnFrame(creds))
			s.turnExpires = creds.Expires
		}
	}
}

// mergeURLs lists own first, then the others not already listed, at most
// maxTURNURLs in all.
func mergeURLs(own, others []string) []string {
	out := append(make([]string, 0, min(len(own)+len(others), maxTURNURLs)), own...)
	for _, u := range others {
		if len(out) >= maxTURNURLs {
			break
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}
