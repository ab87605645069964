//go:build e2e

// Package lab builds a small internet in Linux network namespaces for meshd's
// end-to-end tests, and tears it down again. It owns the namespaces, veths,
// bridges, NAT rules and processes of a test's lab, and nothing outside them:
// no link ever reaches the root namespace, and every namespace name starts
// with the test binary's prefix ("md<pid%10000>-<lab>-").
//
// A lab is a backbone namespace whose bridge br0 is the internet
// (198.51.100.0/24, gateway .1 that forwards nowhere), public hosts on it
// (AddHost, AddTURN, AddNATProbe), and sites (AddSite): a NAT router
// namespace with wan0 on the backbone and a LAN bridge lan0 (10.0.i.1/24)
// for one or more LAN hosts, optionally behind a carrier NAT (double NAT).
// NATKind lists the recipes (full cone, address- and port-restricted cone,
// MASQUERADE, symmetric, UDP blocked) and what each promises; the package's
// tests measure every promise with the RFC 4787 probe (NATProbe.Measure).
//
// Operations for scenarios: run or start programs in a namespace
// (Namespace.Run, Start; Proc.Stop is SIGTERM then SIGKILL by PID), pause a
// host (SIGSTOP/SIGCONT), cut a link (CutLink, CutUplink), block one path
// (BlockPath), flush NAT state (FlushNAT), renumber (Readdress,
// ReaddressWAN) and shorten conntrack timeouts (SetConntrackTimeouts).
//
// Every test binary that uses the package must call Main from TestMain; it
// makes teardown happen on SIGINT/SIGTERM and before -test.timeout too. See
// e2e/README.md for the layout, the address plan and the recipes.
package lab
