// Package control owns meshd's local API: the JSON wire types, the HTTP
// handlers that serve them on a unix socket over a small Backend interface
// that the daemon satisfies, the permission check made from the caller's
// SO_PEERCRED credentials, and the typed Client that meshctl uses. It imports
// the standard library only.
//
// # Transport
//
// HTTP/1.1 over a unix socket (DefaultSocket, /run/meshd/meshd.sock, mode
// 0660, group DefaultGroup). The Host header is ignored; clients use
// http://meshd/. Try it with
//
//	curl --unix-socket /run/meshd/meshd.sock http://meshd/v1/status
//
// # Endpoints
//
//	GET  /v1/status          Status (with peers and peer counts)      read
//	GET  /v1/peers           PeerList                                 read
//	GET  /v1/peers/why?peer= PeerWhy                                  read
//	POST /v1/ping            body PingRequest; NDJSON of PingReply    read
//	GET  /v1/netcheck        Netcheck                                 read
//	GET  /v1/events          NDJSON of Event until the client leaves  read
//	POST /v1/reload          ReloadResult                             write
//
// Every document, including each streamed line and each error, carries
// "schema_version": 1 (SchemaVersion). New fields may appear without a version
// change; decoders ignore fields they do not know. A removed, renamed or
// re-meant field bumps the version (and the /vN path); decoders reject a
// version they do not speak with ErrSchemaVersion.
//
// Errors are a non-2xx status with ErrorResponse {"schema_version", "error",
// "code"}; codes: permission_denied (403), not_found (404, unknown endpoint),
// peer_not_found (404), bad_request / schema_version (400), too_large (413),
// method_not_allowed (405), unavailable (503), timeout (504), internal (500).
// A stream that fails after it started ends with a line
// {"schema_version":1,"stream_error":"...","code":"..."}.
//
// Units: durations are integer nanoseconds in fields ending "_ns"; times are
// RFC 3339; addresses are in netip text form; unknown values are omitted.
//
// # Permissions
//
// See perm.go: root, the daemon's own uid, and members of the configured group
// (primary or supplementary) may read and reload; everyone else gets 403 (or,
// with the default socket mode, EACCES from connect). Both show in meshctl as
// "permission denied: run as root or join group meshd".
//
// # Limits
//
// Request headers 16 KiB, bodies 64 KiB, reading a request and answering a
// non-streaming one RequestTimeout (30 s); each streamed line must be written
// within 10 s; an events reader that lags by more than 256 events loses the
// excess and is told how many in an "events_dropped" event.
package control
