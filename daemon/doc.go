// Package daemon is meshd's composition root and the node's control plane.
// It owns the wiring of the leaf packages into one working node and nothing
// else: leaves never import it (internal/deptest enforces that), and nothing
// but cmd/meshd and tests should.
//
// New maps the configuration onto each leaf's Options (config never reaches
// a leaf): overlay (the TUN, routes, firewall), tunnel (one UDP port, a link
// per peer), discovery (the coordinator session, and on coordinator nodes the
// coordinator with its STUN/TURN server), control (the local API, which the
// Daemon serves as control.Backend) and the Prometheus endpoint.
//
// One control-loop goroutine owns the desired state. Registry changes, link
// events, lazy-link requests and reloads only kick it; it coalesces the kicks,
// computes the complete desired state from the registry and the configuration
// (desired.go: the peer set, each peer's anti-spoofing prefixes and routes —
// its overlay addresses plus the subnets it advertises that its certificate
// allows and routes.accept accepts — and the firewall) and applies it with one
// pass over tunnel's links and one overlay.Reconfig.
//
// Reload (SIGHUP, meshctl reload) parses and validates the whole file, builds
// the new reloadable settings, and swaps them in on the control loop; a bad
// file, CRL or firewall leaves the running state untouched.
//
// meshctl ping uses link probes (probe.go): ICMP echoes written into the
// peer's link and answered by the peer's daemon, not kernel ICMP.
//
// Known gaps, by leaf API: the [data] section (cipher, rekey) and
// ice.include_interfaces / ice.exclude_interfaces have no tunnel option yet
// and are not applied; lazy links are made on demand but never closed when
// idle.
package daemon
