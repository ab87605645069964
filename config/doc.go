// Package config owns meshd's configuration: the TOML schema (one typed struct,
// [Config], with one sub-struct per table), its documented defaults, and the
// validation that turns a file into either a ready-to-use *Config or every
// problem in it at once, each with file:line:col and the dotted key.
//
// The package is pure: it reads the configuration file (in [Load]) and checks
// that the files the configuration names exist and are readable (pki paths,
// secret files), warning ([Config.Warnings]) about secrets that other users
// can read, and does nothing else — no network, no goroutines, no global
// state. Secret files are read by the daemon, or with accessors such as
// [TURNServer.ReadSecret]. It imports only the TOML library and the standard library; leaf
// packages never import it, the daemon maps [Config] onto their Options.
//
// Decoding runs in two steps. The TOML library parses the text into generic
// maps (syntax errors stop here, with their position). Then a small reflective
// decoder walks the maps against the schema, collecting every unknown key,
// wrong type and bad value instead of stopping at the first, and a validation
// pass checks the relations between keys (overlaps, required-when, address
// collisions). The TOML library does not expose per-key positions, so a
// separate scanner over the source text (positions.go) records where every key
// and array element starts; it only runs on text the library already accepted.
//
// [Diff], [Changes], [Reloadable] and [RestartRequired] tell the reload path
// which sections changed and whether they can be applied without a restart.
// docs/configuration.md is the reference for every key.
package config
