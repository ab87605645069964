// Package record owns meshd's data records: the framing, keys and AEAD that
// carry overlay packets between two peers once a DTLS handshake has
// authenticated them. It is pure: no sockets, no goroutines, no logging. The
// tunnel's fast path calls it per packet or per batch; the link's control
// goroutine calls it once per handshake.
//
// # Shape
//
// A data record keeps the DTLS 1.2 record header (RFC 6347 section 4.1):
// content type 23 (application_data), version {254, 253}, a 16-bit epoch, a
// 48-bit sequence number and a 16-bit length, 13 bytes in all, followed by
// the AEAD ciphertext and its 16-byte tag. Data records use epochs
// FirstEpoch..LastEpoch (0x4000..0x7FFF), which pion/dtls never reaches (its
// own records are in epochs 0 and 1), so one UDP port can carry STUN, the
// DTLS handshake and data records, told apart by RFC 7983's first-byte rule
// plus the epoch (IsDataRecord). docs/protocol.md "Data records" is the wire specification.
//
// # Keys
//
// Derive (or DeriveFromState) turns a finished DTLS handshake into Keys with
// the RFC 5705 exporter: one key and one 12-byte IV per direction, the DTLS
// client's half and the server's half, under a label that names the cipher.
// Nonces are the IV XOR epoch||sequence, so they never repeat under one key;
// the sequence is an atomic counter per send key and sealing stops with
// ErrRecordLimit before it could wrap.
//
// # Sessions and rekeying
//
// A Session holds the current send key and the current and previous receive
// keys behind atomic pointers, so Sealers and Openers take no lock. Rekey
// installs the keys of a new handshake (the next epoch): the sender switches
// at once, the receiver still accepts the previous epoch for Options.Overlap
// and then refuses it with ErrOldEpoch. NeedsRekey says when the send key
// has sealed enough records or is old enough that the link should run a new
// handshake.
//
// # Hot path
//
// Sealer.SealInPlace and Opener.OpenInPlace work in the caller's buffer and
// allocate nothing. The nonce needs scratch memory that must not escape
// through the cipher.AEAD interface, so each goroutine that seals or opens
// holds its own Sealer or Opener (Session.NewSealer, Session.NewOpener);
// any number of them may work on one Session at once. Drop reasons are
// sentinel errors (errors.go); counting them is the caller's job.
package record
