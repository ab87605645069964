package record

import "errors"

// Drop reasons returned by Opener.OpenInPlace. The hot path returns these
// sentinels unwrapped (wrapping would allocate), so callers may compare with
// == as well as errors.Is.
var (
	// ErrTruncated means the input is shorter than a record header plus tag,
	// or shorter than its header's length field says.
	ErrTruncated = errors.New("record: truncated record")
	// ErrMalformed means the input is not a meshd data record: wrong content
	// type or version, an epoch outside the data range, a length field that
	// does not match the datagram, or a body larger than MaxPlaintext allows.
	ErrMalformed = errors.New("record: malformed record")
	// ErrAuth means the record failed authentication: it was altered, or it
	// was sealed under another key (another peer, another handshake).
	ErrAuth = errors.New("record: authentication failed")
	// ErrReplay means the sequence number was already accepted under this
	// key, lies too far behind the newest one (outside the replay window),
	// or is beyond RecordLimit, which no sender uses.
	ErrReplay = errors.New("record: replayed or outside the replay window")
	// ErrOldEpoch means the record belongs to an epoch whose keys were
	// retired: the previous epoch after its overlap ended, or an older one.
	ErrOldEpoch = errors.New("record: epoch retired")
	// ErrUnknownEpoch means the record's epoch is in the data range but
	// ahead of the keys installed here (the peer rekeyed and this side has
	// not installed the new keys yet, or the epoch is made up).
	ErrUnknownEpoch = errors.New("record: unknown epoch")
)

// Errors returned when sealing.
var (
	// ErrRecordLimit means the send key has sealed RecordLimit records; no
	// more records can be sealed under it without repeating a nonce. Rekey.
	ErrRecordLimit = errors.New("record: record limit of the send key reached, rekey needed")
	// ErrShortBuffer means the buffer passed to SealInPlace has no room for
	// the header in front of the plaintext (offset < HeaderLen) or for the
	// tag behind it (capacity), or the plaintext lies outside the buffer.
	ErrShortBuffer = errors.New("record: buffer lacks room for the record header, plaintext or tag")
	// ErrTooLarge means the plaintext is longer than MaxPlaintext.
	ErrTooLarge = errors.New("record: plaintext longer than MaxPlaintext")
)

// Errors of both directions and of key management.
var (
	// ErrClosed means the Session was closed; its keys are gone.
	ErrClosed = errors.New("record: session closed")
	// ErrCipher means a cipher is unknown or unusable here: Derive needs a
	// concrete cipher that both peers agreed on (CipherAuto is a local
	// preference, not an agreement), and CipherForSuite knows only the
	// AES-GCM and ChaCha20-Poly1305 DTLS suites.
	ErrCipher = errors.New("record: unsupported cipher")
	// ErrEpoch means an epoch is outside FirstEpoch..LastEpoch, or a Rekey
	// did not move the epoch forward.
	ErrEpoch = errors.New("record: invalid epoch")
	// ErrKeysUsed means Keys were already given to a Session. Keys are
	// single-use: two senders with one key would repeat nonces.
	ErrKeysUsed = errors.New("record: keys already installed in a session")
	// ErrExporter means the keying-material exporter failed or returned the
	// wrong amount of material.
	ErrExporter = errors.New("record: exporting keying material failed")
)
