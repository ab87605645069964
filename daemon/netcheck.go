package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/stun/v4"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/tunnel"
)

// Netcheck limits.
const (
	netcheckTimeout = 4 * time.Second
	stunAttempts    = 3
	stunRetry       = 400 * time.Millisecond
	// netcheckInterval paces the background netcheck. NAT behaviour and the
	// public address rarely change; a failover or new STUN servers re-run it
	// sooner.
	netcheckInterval = 10 * time.Minute
)

// errNetcheckDeadline is the cause of a netcheck's own timeout, told apart
// from the caller giving up.
var errNetcheckDeadline = errors.New("netcheck deadline")

// netSnapshot is the cached result of the newest netcheck.
type netSnapshot struct {
	nc      *control.Netcheck
	seq     uint64 // start order of the runs: a run that started later wins
	servers string // the STUN targets probed (serversKey)
}

// stunTarget is one UDP server a netcheck sends Binding requests to. The
// same host:port often serves STUN and TURN (the coordinators' embedded
// server), so it is probed once and reported in both lists.
type stunTarget struct {
	hostPort string // as in the URL
	stunURL  string // "" unless a stun: URL names it
	relayURL string // "" unless a turn: (UDP) URL names it
	// session marks a coordinator's session address, probed over UDP: the
	// coordinator's second STUN destination (stunalt.go).
	session bool
}

// label names the target in netcheck's STUN list.
func (t stunTarget) label() string {
	if t.session {
		return t.hostPort + "/udp (coordinator session port)"
	}
	return t.stunURL
}

// Netcheck implements control.Backend. From one fresh UDP socket it sends
// STUN Binding requests to every STUN server and UDP TURN server the node
// knows (the coordinators' and ice.stun_servers / ice.turn_servers), and
// times a TCP connect to every coordinator. Different reflexive addresses
// from different servers mean the NAT maps per destination. The socket is
// not the shared ICE socket, so the reflexive port is that socket's; the
// NAT's behaviour is what carries over. The result also refreshes the cache
// Status and PeerWhy read.
func (d *Daemon) Netcheck(ctx context.Context) (*control.Netcheck, error) {
	if !d.isStarted() {
		return nil, control.ErrUnavailable
	}
	res, err := d.netcheck(ctx, true)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// netcheck runs one netcheck, bounded by netcheckTimeout, and caches the
// result unless ctx was canceled first (a cut-short run would read as
// "UDP blocked"). The background run leaves out the coordinator latencies:
// each TCP connect is a refused session the coordinators log, and Status
// does not show them.
func (d *Daemon) netcheck(ctx context.Context, latencies bool) (*control.Netcheck, error) {
	seq := d.netSeq.Add(1)
	ctx, cancel := context.WithTimeoutCause(ctx, netcheckTimeout, errNetcheckDeadline)
	defer cancel()
	targets := d.stunTargets()
	verdicts := d.interfaceVerdicts()
	res := &control.Netcheck{STUN: []control.STUNProbe{}, Latencies: []control.ServerLatency{}, Interfaces: interfaceUses(verdicts)}
	res.IPv6 = d.ipv6Check(verdicts)

	var wg sync.WaitGroup
	var coordLat []control.ServerLatency
	if latencies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			coordLat = d.coordinatorLatencies(ctx)
		}()
	}
	answers := probeSTUN(ctx, targets)
	wg.Wait()
	if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errNetcheckDeadline) {
		return nil, fmt.Errorf("netcheck: %w", context.Cause(ctx))
	}

	d.iceMappings(ctx, answers)
	useICE := slices.ContainsFunc(answers, func(a stunAnswer) bool { return a.ice.IsValid() })
	local := localAddrs()
	var mapped, mapped6 []netip.AddrPort
	for i, t := range targets {
		a := &answers[i]
		if useICE {
			// The public endpoint of meshd's own port, which peers and
			// firewall rules need; the probe socket's says nothing of it.
			a.reflexive = a.ice
			if !a.ice.IsValid() && a.err == nil {
				a.err = errNoICEAnswer
			}
		}
		if t.stunURL != "" || t.session {
			p := control.STUNProbe{Server: t.label(), Reflexive: a.reflexive, Latency: a.rtt}
			if a.err != nil {
				p.Error = a.err.Error()
			}
			res.STUN = append(res.STUN, p)
		}
		if t.relayURL != "" {
			l := control.ServerLatency{Name: t.relayURL, Kind: control.ServerRelay, Address: t.hostPort, Latency: a.rtt}
			if a.err != nil {
				l.Error = a.err.Error()
			}
			res.Latencies = append(res.Latencies, l)
		}
		if a.over6.IsValid() {
			res.IPv6.STUN = true
		}
		if a.err == nil {
			res.UDP = true
			if a.addr.Addr().Is6() {
				res.IPv6.STUN = true
				mapped6 = append(mapped6, a.reflexive)
			} else {
				mapped = append(mapped, a.reflexive)
			}
		}
	}
	res.Latencies = append(res.Latencies, coordLat...)
	// The NAT is an IPv4 matter: IPv6 answers (normally the host's own
	// address) would read as a per-destination mapping next to IPv4 ones.
	// An IPv6-only host is judged by its IPv6 answers.
	if len(mapped) == 0 {
		mapped = mapped6
	}
	res.NAT, res.MappingVariesByDest = classifyNAT(len(targets), mapped, local)
	res.Verdict = verdict(res.NAT, len(targets))
	d.publishNetcheck(&netSnapshot{nc: res, seq: seq, servers: serversKey(targets)})
	return res, nil
}

// interfaceVerdicts is the candidate interface policy applied to the
// host's interfaces now; nil when they cannot be listed.
func (d *Daemon) interfaceVerdicts() []tunnel.InterfaceVerdict {
	vs, err := d.tm.Interfaces()
	if err != nil {
		d.log.Debug("netcheck: cannot list interfaces", "error", err)
		return nil
	}
	return vs
}

// ipv6Check reports the IPv6 underlay but for the STUN answers: whether
// the ICE port is open on IPv6 (or why not), and each IPv6 interface
// address, offered or skipped with why.
func (d *Daemon) ipv6Check(vs []tunnel.InterfaceVerdict) control.IPv6Check {
	c := control.IPv6Check{Addresses: []control.AddressUse{}}
	_, v6, noV6 := d.tm.Families()
	switch {
	case v6:
		c.Enabled = true
	case noV6 != nil:
		c.Reason = "this host has no IPv6 (" + noV6.Error() + ")"
	case !d.run.Load().cfg.ICE.IPv6:
		c.Reason = "ice.ipv6 = false"
	default:
		c.Reason = "the ICE port is bound to an IPv4 address"
	}
	for _, v := range vs {
		for _, a := range v.Addrs {
			if !a.Is6() {
				continue
			}
			u := control.AddressUse{Address: a, Interface: v.Name, Used: v.Use && c.Enabled, Reason: "offered"}
			switch {
			case !v.Use:
				u.Reason = "interface skipped: " + v.Reason
			case !c.Enabled:
				u.Reason = "the ICE port is not open on IPv6"
			}
			c.Addresses = append(c.Addresses, u)
		}
		for _, sk := range v.Skipped {
			if sk.Addr.Is6() {
				c.Addresses = append(c.Addresses, control.AddressUse{Address: sk.Addr, Interface: v.Name, Reason: sk.Reason})
			}
		}
	}
	return c
}

// interfaceUses reports the candidate interface policy applied to the
// host's interfaces.
func interfaceUses(vs []tunnel.InterfaceVerdict) []control.InterfaceUse {
	out := make([]control.InterfaceUse, 0, len(vs))
	for _, v := range vs {
		addrs := v.Addrs
		if addrs == nil {
			addrs = []netip.Addr{}
		}
		out = append(out, control.InterfaceUse{Name: v.Name, Used: v.Use, Reason: v.Reason, Addresses: addrs})
	}
	return out
}

// publishNetcheck caches s unless a run that started later is already
// cached, and logs the verdict when it differs from the cached one (so
// a steady NAT is logged once, not every interval).
func (d *Daemon) publishNetcheck(s *netSnapshot) {
	var old *netSnapshot
	for {
		old = d.lastNet.Load()
		if old != nil && old.seq > s.seq {
			return
		}
		if d.lastNet.CompareAndSwap(old, s) {
			break
		}
	}
	if old == nil || old.nc.Verdict != s.nc.Verdict {
		// The addresses only: the probe socket's ports are not the ICE
		// socket's (Status shows the endpoints).
		var public []netip.Addr
		for _, ap := range reflexives(s.nc) {
			if !slices.Contains(public, ap.Addr()) {
				public = append(public, ap.Addr())
			}
		}
		d.log.Info("netcheck: "+s.nc.Verdict, "nat", string(s.nc.NAT), "udp", s.nc.UDP, "publicAddrs", public)
	}
}

// reflexives are the distinct reflexive addresses in nc, in probe order.
func reflexives(nc *control.Netcheck) []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range nc.STUN {
		if p.Reflexive.IsValid() && !slices.Contains(out, p.Reflexive) {
			out = append(out, p.Reflexive)
		}
	}
	return out
}

// serversKey names a target list, to notice that the servers changed.
func serversKey(targets []stunTarget) string {
	hps := make([]string, len(targets))
	for i, t := range targets {
		hps[i] = t.hostPort
	}
	slices.Sort(hps)
	return strings.Join(hps, ",")
}

// runNetchecks is the background netcheck: once the node is ready, then
// every netcheckInterval, on netKick (a coordinator session came up or
// failed over: the node may have moved) and on netServers when the STUN
// servers differ from the last run's (TURN credentials arrived after the
// first run). Each run is bounded by netcheckTimeout and canceled by Close.
func (d *Daemon) runNetchecks() {
	select {
	case <-d.ctx.Done():
		return
	case <-d.ready:
	}
	t := time.NewTicker(netcheckInterval)
	defer t.Stop()
	for {
		// A kick that came before this run is answered by it.
		select {
		case <-d.netKick:
		default:
		}
		if _, err := d.netcheck(d.ctx, false); err != nil {
			return // only Close cancels d.ctx
		}
		t.Reset(netcheckInterval)
		for again := false; !again; {
			select {
			case <-d.ctx.Done():
				return
			case <-t.C:
				again = true
			case <-d.netKick:
				again = true
			case <-d.netServers:
				last := d.lastNet.Load()
				again = last == nil || last.servers != serversKey(d.stunTargets())
			}
		}
	}
}

// kickNetcheck asks for a background netcheck; it never blocks.
func (d *Daemon) kickNetcheck() {
	select {
	case d.netKick <- struct{}{}:
	default:
	}
}

// serversChanged tells the background netcheck that the STUN servers may
// have changed; it never blocks (it runs on the session's notifier).
func (d *Daemon) serversChanged() {
	select {
	case d.netServers <- struct{}{}:
	default:
	}
}

// stunTargets lists the UDP STUN/TURN servers from the current ICE servers.
func (d *Daemon) stunTargets() []stunTarget {
	var out []stunTarget
	index := map[string]int{}
	for _, s := range d.iceServers() {
		u, err := stun.ParseURI(s.URL)
		if err != nil || u.Proto == stun.ProtoTypeTCP || u.Scheme == stun.SchemeTypeSTUNS || u.Scheme == stun.SchemeTypeTURNS {
			continue
		}
		hp := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
		i, ok := index[hp]
		if !ok {
			i = len(out)
			index[hp] = i
			out = append(out, stunTarget{hostPort: hp})
		}
		if u.Scheme == stun.SchemeTypeSTUN && out[i].stunURL == "" {
			out[i].stunURL = s.URL
		} else if u.Scheme == stun.SchemeTypeTURN && out[i].relayURL == "" {
			out[i].relayURL = s.URL
		}
	}
	// Each coordinator's session port answers STUN too: with one
	// coordinator that makes the second destination that tells the NAT's
	// mapping behaviour. (The join list, not coordinatorList: a coordinator
	// node's own loopback entry says nothing of a NAT.)
	for _, hp := range d.run.Load().cfg.Join.Coordinators {
		if _, _, err := net.SplitHostPort(hp); err != nil {
			continue
		}
		if _, dup := index[hp]; !dup {
			index[hp] = len(out)
			out = append(out, stunTarget{hostPort: hp, session: true})
		}
	}
	return out
}

type stunAnswer struct {
	addr      netip.AddrPort // the target, resolved
	reflexive netip.AddrPort // as seen of the probe's socket
	ice       netip.AddrPort // as seen of the ICE socket (zero: no answer)
	// over6 is what a second probe over IPv6 saw, for a name with both
	// families (probed over IPv4 first); zero: none answered.
	over6 netip.AddrPort
	rtt   time.Duration
	err   error
}

var (
	errNoAnswer    = errors.New("no answer")
	errNoICEAnswer = errors.New("answered a probe socket but not meshd's ICE socket")
)

// iceMappings asks every target that answered the probe what it sees of
// the ICE socket (tunnel.Manager.MappedAddr), concurrently, within ctx.
func (d *Daemon) iceMappings(ctx context.Context, answers []stunAnswer) {
	var wg sync.WaitGroup
	for i := range answers {
		a := &answers[i]
		if a.err != nil || !a.addr.IsValid() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 0; attempt < stunAttempts && ctx.Err() == nil; attempt++ {
				if ap, err := d.tm.MappedAddr(ctx, a.addr, 3*stunRetry); err == nil {
					a.ice = ap
					return
				}
			}
		}()
	}
	wg.Wait()
}

// pending is one Binding request of probeSTUN awaiting its answer.
type pending struct {
	i    int
	to   *net.UDPAddr
	req  *stun.Message
	sent time.Time
	alt  bool // the second, IPv6 probe of a name with both families
}

// answered reports whether p has its answer. Must hold the probe's mu.
func (p *pending) answered(answers []stunAnswer) bool {
	if p.alt {
		return answers[p.i].over6.IsValid()
	}
	return answers[p.i].err == nil
}

// probeSTUN sends Binding requests to every target from one socket and
// collects the answers (same order as targets).
func probeSTUN(ctx context.Context, targets []stunTarget) []stunAnswer {
	answers := make([]stunAnswer, len(targets))
	if len(targets) == 0 {
		return answers
	}
	// One socket per family; a family the host lacks fails its targets.
	pc4, err4 := net.ListenUDP("udp4", &net.UDPAddr{})
	pc6, err6 := net.ListenUDP("udp6", &net.UDPAddr{})
	socks := []*net.UDPConn{}
	for _, pc := range []*net.UDPConn{pc4, pc6} {
		if pc != nil {
			socks = append(socks, pc)
		}
	}
	var mu sync.Mutex // guards answers and byID between sender and reader
	byID := map[[stun.TransactionIDSize]byte]*pending{}
	for i, t := range targets {
		answers[i].err = errNoAnswer
		host, port, _ := net.SplitHostPort(t.hostPort)
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil || len(ips) == 0 {
			answers[i].err = fmt.Errorf("resolve %s: %v", host, err)
			continue
		}
		// A name with both families is probed over IPv4 (the NAT's
		// behaviour; IPv6 on the side, below); an IPv6 literal or
		// AAAA-only name, or any name on a host without IPv4, over IPv6.
		ip := ips[0].Unmap()
		for _, a := range ips {
			if a.Unmap().Is4() && err4 == nil {
				ip = a.Unmap()
				break
			}
		}
		sockErr := err4
		if ip.Is6() {
			sockErr = err6
		}
		if sockErr != nil {
			answers[i].err = sockErr
			continue
		}
		p, _ := strconv.Atoi(port)
		req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		if err != nil {
			answers[i].err = err
			continue
		}
		answers[i].addr = netip.AddrPortFrom(ip, uint16(p))
		byID[req.TransactionID] = &pending{i: i, to: net.UDPAddrFromAddrPort(answers[i].addr), req: req}
		// A name with both families: whether it answers over IPv6 too.
		if i6 := slices.IndexFunc(ips, func(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }); ip.Is4() && i6 >= 0 && err6 == nil {
			if alt, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint); err == nil {
				to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[i6], uint16(p)))
				byID[alt.TransactionID] = &pending{i: i, to: to, req: alt, alt: true}
			}
		}
	}
	readDone := make(chan struct{}, len(socks))
	for _, pc := range socks {
		go func() {
			defer func() { readDone <- struct{}{} }()
			readAnswers(pc, &mu, byID, answers)
		}()
	}
	// The side probes over IPv6 get two rounds: a host without an IPv6
	// route must not wait out every attempt for them.
	done := func(attempt int) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range byID {
			if !p.answered(answers) && (!p.alt || attempt < 2) {
				return false
			}
		}
		return true
	}
	for attempt := 0; attempt < stunAttempts && !done(attempt); attempt++ {
		mu.Lock()
		for _, p := range byID {
			if !p.answered(answers) {
				p.sent = time.Now()
				pc := pc4
				if p.to.IP.To4() == nil {
					pc = pc6
				}
				_, _ = pc.WriteToUDP(p.req.Raw, p.to)
			}
		}
		mu.Unlock()
		t := time.NewTimer(stunRetry)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		if ctx.Err() != nil {
			break
		}
	}
	for _, pc := range socks {
		_ = pc.Close()
	}
	for range socks {
		<-readDone
	}
	return answers
}

// readAnswers reads Binding responses on pc until it closes, filling the
// answer of the pending request each one answers.
func readAnswers(pc *net.UDPConn, mu *sync.Mutex, byID map[[stun.TransactionIDSize]byte]*pending, answers []stunAnswer) {
	buf := make([]byte, 1500)
	for {
		n, _, err := pc.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if m.Decode() != nil {
			continue
		}
		var xor stun.XORMappedAddress
		if xor.GetFrom(m) != nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(xor.IP)
		if !ok {
			continue
		}
		mu.Lock()
		if p := byID[m.TransactionID]; p != nil && !p.answered(answers) {
			a := &answers[p.i]
			if seen := netip.AddrPortFrom(ip.Unmap(), uint16(xor.Port)); p.alt {
				a.over6 = seen
			} else {
				a.reflexive, a.rtt, a.err = seen, time.Since(p.sent), nil
			}
		}
		mu.Unlock()
	}
}

// coordinatorLatencies times a TCP connect to every coordinator in the
// session client's list.
func (d *Daemon) coordinatorLatencies(ctx context.Context) []control.ServerLatency {
	coords := d.coordinatorList(d.run.Load().cfg.Join.Coordinators)
	out := make([]control.ServerLatency, len(coords))
	var wg sync.WaitGroup
	for i, a := range coords {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := control.ServerLatency{Name: a, Kind: control.ServerCoordinator, Address: a}
			start := time.Now()
			var dl net.Dialer
			c, err := dl.DialContext(ctx, "tcp", a)
			if err != nil {
				l.Error = err.Error()
			} else {
				l.Latency = time.Since(start)
				_ = c.Close()
			}
			out[i] = l
		}()
	}
	wg.Wait()
	return out
}

// localAddrs are the host's interface addresses.
func localAddrs() []netip.Addr {
	var out []netip.Addr
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range ifaddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

// classifyNAT reads the mapping behaviour from the reflexive addresses
// that servers at different addresses saw for one socket.
func classifyNAT(targets int, mapped []netip.AddrPort, local []netip.Addr) (control.NATBehavior, bool) {
	switch {
	case targets == 0:
		return control.NATUnknown, false
	case len(mapped) == 0:
		return control.NATUDPBlocked, false
	}
	varies := false
	for _, m := range mapped[1:] {
		varies = varies || m != mapped[0]
	}
	switch {
	case varies:
		return control.NATAddressPortDependent, true
	case slices.Contains(local, mapped[0].Addr()):
		return control.NATNone, false
	case len(mapped) >= 2:
		return control.NATEndpointIndependent, false
	}
	return control.NATUnknown, false
}

func verdict(nat control.NATBehavior, targets int) string {
	switch nat {
	case control.NATNone:
		return "this node has a public address: peers can reach it directly"
	case control.NATEndpointIndependent:
		return "the NAT keeps one mapping for every destination: direct paths should work (hole punching)"
	case control.NATAddressPortDependent, control.NATAddressDependent:
		return "the NAT maps per destination: direct paths to other NATed nodes are unlikely; expect relayed paths"
	case control.NATUDPBlocked:
		return "no STUN server answered over UDP: UDP seems blocked; only relays over TCP/TLS could work"
	}
	if targets == 0 {
		return "no STUN servers known yet (no coordinator session and no ice.stun_servers): cannot tell"
	}
	return "only one STUN server answered: the NAT's mapping behaviour cannot be told"
}
