package overlay

// SetClock replaces the data path's clock (nanoseconds, monotonic) so tests
// can expire flows without sleeping. Call it before Start and Reconfig.
func SetClock(i *Interface, now func() int64) { i.now = now }
