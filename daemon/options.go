package daemon

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/tunnel"
)

// Options configure a Daemon beyond what the configuration file says: the
// process-level things cmd/meshd owns, and tuning for tests.
type Options struct {
	// Logger receives every component's logs; nil discards them.
	Logger *slog.Logger
	// LogLevel, if not nil, is the level variable of Logger's handler. The
	// daemon sets it from log.level at New and on every Reload, so the level
	// is reloadable. nil: log.level changes are reported as applied but have
	// no effect.
	LogLevel *slog.LevelVar
	// Version is the software version shown in status, metrics and the
	// node's registry record; "" means "dev".
	Version string
	// ConfigPath is the file Reload reads; "" means the file cfg was loaded
	// from (config.Config.File). A daemon built from a Config without a file
	// cannot reload.
	ConfigPath string
	// Tuning, if not nil, overrides timers and listen addresses; tests use
	// it to run nodes on loopback quickly. nil is production.
	Tuning *Tuning
}

// Tuning overrides what production derives from the configuration. Zero
// fields keep the production value.
type Tuning struct {
	// ICEListenAddr is the local address of the shared ICE socket; zero
	// means what ice.ipv6 says (:: for both families, or 0.0.0.0). Tests
	// use 127.0.0.1 so that the host candidate is loopback (tunnel never
	// offers loopback otherwise).
	ICEListenAddr netip.Addr
	// TunnelTimers, if not nil, replace the timers derived from [ice].
	TunnelTimers *tunnel.Timers
	// Client timers of the coordinator session (discovery.ClientOptions).
	ClientDialTimeout, ClientBackoffMin, ClientBackoffMax time.Duration
	ClientCacheDelay, ClientCRLCheckInterval              time.Duration
	// Coordinator timers (discovery.CoordinatorOptions).
	GossipTimers                              discovery.GossipTimers
	CoordinatorSweep, CoordinatorKeepalive    time.Duration
	CoordinatorRejoin, CoordinatorSignalAfter time.Duration
	// Coalesce is how long the control loop gathers registry and link
	// changes before recomputing the desired state; zero means 50ms.
	Coalesce time.Duration
	// StatusInterval paces polling the coordinator session for failovers
	// and readiness; zero means 250ms.
	StatusInterval time.Duration
	// Now is the clock for certificate checks; nil means time.Now.
	Now func() time.Time
	// RelayAllowLoopback lets the member relay reach loopback addresses
	// (relay.Options.AllowLoopback): tests, where every node is on
	// 127.0.0.1.
	RelayAllowLoopback bool
}

func (t *Tuning) coalesce() time.Duration {
	if t == nil || t.Coalesce <= 0 {
		return 50 * time.Millisecond
	}
	return t.Coalesce
}

func (t *Tuning) statusInterval() time.Duration {
	if t == nil || t.StatusInterval <= 0 {
		return 250 * time.Millisecond
	}
	return t.StatusInterval
}

func (t *Tuning) now() func() time.Time {
	if t == nil || t.Now == nil {
		return time.Now
	}
	return t.Now
}
