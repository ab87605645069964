// Package relay is the member relay: a TURN server (UDP, RFC 8656) that a
// mesh node with `[relay] enabled = true` runs for the other members, and
// the credentials both sides derive for it without a shared secret.
//
// A member relay is announced in its node's signed registry record
// (discovery.RelayInfo: address and capacity). A node that wants an
// allocation on it uses the TURN long-term credential mechanism with
//
//	username = "<unix expiry>:<requester node name>"
//	password = base64(HKDF-SHA256(ECDH(requester key, relay key),
//	                  salt = "meshd member relay v1\x00" || relay name,
//	                  info = username))[:32 bytes]
//
// where the keys are the node keys whose certificates sit in the verified
// registry records. The relay computes the same password from its own key
// and the requester's certificate, so only a member whose certificate
// chains to the CA, is unrevoked and is in the registry can allocate; the
// relay refuses usernames that are expired, that expire more than MaxTTL
// ahead, or that name a node it does not know.
//
// pki allows ECDSA P-256 and Ed25519 node keys. P-256 keys agree with
// crypto/ecdh's P-256; Ed25519 keys are converted to X25519 (RFC 7748 §4.1
// birational map for the public key, the SHA-512-expanded scalar for the
// private one, as libsodium's crypto_sign_ed25519_*_to_curve25519 do). Two
// nodes of different key types share no curve: a member relay whose key
// type differs from a node's own is not used by that node (ErrKeyMismatch).
//
// The relay's peer policy keeps it from becoming an open relay into its
// host's networks: it relays only to addresses the mesh vouches for (the
// source addresses of live authenticated allocations on it, the addresses
// its owner supplies — member relays, record endpoints and coordinator TURN
// hosts from the registry and session) that also pass the default check of
// the coordinators' embedded TURN (internal/peerpolicy): never to special or
// reserved addresses, to private ranges only when the relay address is
// itself private, to NAT64 and 6to4 addresses as to the IPv4 address they
// reach, and to the host's own addresses only on its mesh port and its
// relay ports. A member's record is self-signed, so what it vouches for is
// not trusted beyond that.
package relay
