// Package probe is the e2e lab's NAT probe. It owns the probe wire format
// (versioned JSON in one datagram or one line), a Server that answers with the
// source address it observed, and the clients for the RFC 4787 tests the lab
// uses to prove its NAT recipes:
//
//   - mapping: one socket contacts three destinations (A:p, B:p, A:q); the
//     same observed address for all three is endpoint-independent mapping;
//   - filtering: one socket contacts only A:p, then A:p, A:q and B:p reply;
//     which of them arrive tells EIF / ADF / APDF apart;
//   - TCP echo, for paths where UDP is blocked;
//   - punch: two clients send to each other at once, the simultaneous open
//     that passes two stateful firewalls (IPv6 home routers).
//
// Every socket has the family of its address (udp4/udp6, never a dual-stack
// socket), so a probe of an IPv6 path cannot fall back to IPv4.
//
// The lab runs it inside network namespaces through e2e/internal/cmd/labprobe.
package probe
