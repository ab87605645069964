package overlay

import "errors"

// ErrLinkDown is returned (wrapped) by a PeerConn that cannot carry traffic now:
// it is still connecting, reconnecting, or closed. The overlay counts the
// packets as dropped with reason "link down".
var ErrLinkDown = errors.New("overlay: link down")

// ErrNoChanges is returned by Reconfig when the new configuration equals the
// running one.
var ErrNoChanges = errors.New("overlay: no changes")
