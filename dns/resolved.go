package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
)

// systemd-resolved's D-Bus API (org.freedesktop.resolve1(5)).
const (
	resolvedName    = "org.freedesktop.resolve1"
	resolvedPath    = dbus.ObjectPath("/org/freedesktop/resolve1")
	resolvedManager = "org.freedesktop.resolve1.Manager"
)

// ResolvedOptions configure a [Resolved].
type ResolvedOptions struct {
	// Logger, or nil for none.
	Logger *slog.Logger
	// Link is the index of the TUN interface; must be positive.
	Link int
	// Servers are the resolver's addresses (it listens on port 53); must
	// not be empty.
	Servers []netip.Addr
	// Domain is the mesh domain; only it is routed to Servers ("~domain").
	// Must not be empty.
	Domain string
	// Bus connects to the bus resolved is on; nil means the system bus.
	// Tests pass a private bus.
	Bus func() (*dbus.Conn, error)
	// Retry paces reconnecting to the bus and retrying a failed
	// registration; zero means 5s.
	Retry time.Duration
}

// ResolvedState says whether systemd-resolved routes the mesh domain to
// meshd.
type ResolvedState struct {
	// Configured is true while resolved holds meshd's link settings.
	Configured bool
	// Error says why not ("systemd-resolved is not running", ...), or "".
	Error string
}

// Resolved registers the resolver with systemd-resolved as split DNS for
// the mesh domain on the TUN link: SetLinkDNS, SetLinkDomains with the
// routing-only "~domain", SetLinkDefaultRoute false (other names keep their
// usual servers) and SetLinkDNSSEC "no" (the private domain has no
// delegation to validate). It applies them again whenever resolved
// (re)starts, and RevertLink undoes them on Close. It never touches
// resolv.conf.
//
// Lifecycle: NewResolved validates; Start launches the one goroutine that
// owns the bus connection; Close reverts and waits for it.
type Resolved struct {
	// ================================================================
	// Immutable after NewResolved.
	opts ResolvedOptions
	log  *slog.Logger

	state atomic.Pointer[ResolvedState]

	cancel    context.CancelFunc
	done      chan struct{}
	startOnce sync.Once
	closeOnce sync.Once
}

// NewResolved validates opts. It starts nothing.
func NewResolved(opts ResolvedOptions) (*Resolved, error) {
	if opts.Link <= 0 || len(opts.Servers) == 0 || opts.Domain == "" {
		return nil, fmt.Errorf("%w: resolved needs a link, servers and a domain", ErrInvalidOptions)
	}
	if opts.Bus == nil {
		opts.Bus = func() (*dbus.Conn, error) { return dbus.ConnectSystemBus() }
	}
	if opts.Retry <= 0 {
		opts.Retry = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Resolved{opts: opts, log: log, done: make(chan struct{})}
	r.state.Store(&ResolvedState{Error: "not started"})
	return r, nil
}

// State returns whether resolved is configured now.
func (r *Resolved) State() ResolvedState { return *r.state.Load() }

func (r *Resolved) setState(configured bool, err error) {
	st := &ResolvedState{Configured: configured}
	if err != nil {
		st.Error = err.Error()
	}
	old := r.state.Swap(st)
	if *old != *st {
		if configured {
			r.log.Info("systemd-resolved routes the mesh domain to meshd", "domain", r.opts.Domain)
		} else {
			r.log.Info("systemd-resolved is not configured for the mesh domain", "error", st.Error)
		}
	}
}

// Start launches the goroutine that keeps resolved configured.
func (r *Resolved) Start(ctx context.Context) {
	r.startOnce.Do(func() {
		ctx, r.cancel = context.WithCancel(ctx)
		go func() {
			defer close(r.done)
			r.run(ctx)
		}()
	})
}

// Close reverts the link's settings and stops. It is idempotent and safe
// before Start.
func (r *Resolved) Close() error {
	r.closeOnce.Do(func() {
		r.startOnce.Do(func() { close(r.done) }) // never started
		if r.cancel != nil {
			r.cancel()
		}
		<-r.done
	})
	return nil
}

// errNotRunning is the state's error while resolved has no owner on the bus.
var errNotRunning = errors.New("systemd-resolved is not running")

// run owns the bus connection: connect, watch resolved's name, apply, and
// on the way out revert. Reconnects after the bus goes away.
func (r *Resolved) run(ctx context.Context) {
	retry := time.NewTicker(r.opts.Retry)
	defer retry.Stop()
	for ctx.Err() == nil {
		conn, err := r.opts.Bus()
		if err != nil {
			r.setState(false, fmt.Errorf("no system bus: %w", err))
			select {
			case <-ctx.Done():
				return
			case <-retry.C:
				continue
			}
		}
		r.session(ctx, conn, retry.C)
		_ = conn.Close()
	}
}

// session serves one bus connection until ctx ends (then reverts) or the
// connection drops.
func (r *Resolved) session(ctx context.Context, conn *dbus.Conn, retry <-chan time.Time) {
	sigs := make(chan *dbus.Signal, 16)
	conn.Signal(sigs)
	defer conn.RemoveSignal(sigs)
	if err := conn.AddMatchSignalContext(ctx,
		dbus.WithMatchSender("org.freedesktop.DBus"),
		dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, resolvedName)); err != nil {
		r.setState(false, fmt.Errorf("watching systemd-resolved: %w", err))
		return
	}
	r.apply(ctx, conn)
	for {
		select {
		case <-ctx.Done():
			r.revert(conn)
			return
		case sig, ok := <-sigs:
			if !ok {
				r.setState(false, errors.New("lost the system bus"))
				return
			}
			if sig.Name != "org.freedesktop.DBus.NameOwnerChanged" || len(sig.Body) != 3 {
				continue
			}
			if owner, _ := sig.Body[2].(string); owner != "" {
				r.log.Debug("systemd-resolved (re)started", "owner", owner)
				r.apply(ctx, conn)
			} else {
				r.setState(false, errNotRunning)
			}
		case <-retry:
			if !r.State().Configured {
				r.apply(ctx, conn)
			}
		}
	}
}

// linkDNS and linkDomain are resolve1's (iay) and (sb) structures.
type linkDNS struct {
	Family int32
	Addr   []byte
}

type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

// apply sets the link's DNS server, routing domain and options.
func (r *Resolved) apply(ctx context.Context, conn *dbus.Conn) {
	var owner string
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, resolvedName).Store(&owner); err != nil {
		r.setState(false, errNotRunning)
		return
	}
	obj := conn.Object(resolvedName, resolvedPath)
	link := int32(r.opts.Link)
	var servers []linkDNS
	for _, a := range r.opts.Servers {
		if a.Is4() {
			b := a.As4()
			servers = append(servers, linkDNS{Family: 2, Addr: b[:]}) // AF_INET
		} else {
			b := a.As16()
			servers = append(servers, linkDNS{Family: 10, Addr: b[:]}) // AF_INET6
		}
	}
	call := func(method string, args ...any) error {
		return obj.CallWithContext(ctx, resolvedManager+"."+method, 0, args...).Err
	}
	if err := call("SetLinkDNS", link, servers); err != nil {
		r.setState(false, fmt.Errorf("systemd-resolved SetLinkDNS: %w", err))
		return
	}
	if err := call("SetLinkDomains", link, []linkDomain{{Domain: r.opts.Domain, RoutingOnly: true}}); err != nil {
		r.setState(false, fmt.Errorf("systemd-resolved SetLinkDomains: %w", err))
		return
	}
	// Older resolved versions lack these; the routing-only domain alone
	// already keeps other names off the link there.
	for _, c := range []struct {
		method string
		arg    any
	}{{"SetLinkDefaultRoute", false}, {"SetLinkDNSSEC", "no"}} {
		if err := call(c.method, link, c.arg); err != nil {
			r.log.Debug("systemd-resolved "+c.method, "error", err)
		}
	}
	r.setState(true, nil)
}

// revert undoes the link's settings (RevertLink), bounded in time: the
// daemon is stopping.
func (r *Resolved) revert(conn *dbus.Conn) {
	if !r.State().Configured {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := conn.Object(resolvedName, resolvedPath).CallWithContext(ctx, resolvedManager+".RevertLink", 0, int32(r.opts.Link)).Err
	if err != nil {
		r.log.Warn("cannot revert systemd-resolved's settings of the TUN link", "error", err)
	}
	r.setState(false, errors.New("stopped"))
}
