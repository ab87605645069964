//go:build !linux

package dns

import "net"

// listenConfig returns the ListenConfig of the listeners; freeBind needs
// Linux and is ignored elsewhere.
func listenConfig(bool) *net.ListenConfig { return &net.ListenConfig{} }
