// Package dns is meshd's resolver for the mesh's names: it answers A and
// AAAA queries for <node>.<mesh domain> and PTR queries for overlay
// addresses from a [Table] the daemon rebuilds from the registry's verified
// node records, on the node's overlay addresses only (UDP and TCP, port 53).
//
// A name in the mesh domain that is no node's gets NXDOMAIN and is never
// forwarded; names outside the domain are REFUSED unless upstream
// resolvers are configured. [Resolved] registers the resolver with
// systemd-resolved as split DNS for the mesh domain on the TUN link, over
// D-Bus; nothing here writes resolv.conf.
//
// Files: table.go (the names), answer.go (the query handler, pure),
// server.go (listeners and forwarding), resolved.go (systemd-resolved).
package dns
