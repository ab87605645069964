package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// DefaultSocket is where meshd listens and meshctl connects unless told
// otherwise. systemd's RuntimeDirectory=meshd creates its directory.
const DefaultSocket = "/run/meshd/meshd.sock"

// DefaultGroup is the group the packages create for operators allowed to use
// meshctl without root.
const DefaultGroup = "meshd"

// Limits on requests.
const (
	// DefaultRequestTimeout bounds reading a request and answering a
	// non-streaming one.
	DefaultRequestTimeout = 30 * time.Second
	// maxRequestBody bounds request bodies (only ping has one).
	maxRequestBody = 64 << 10
	// streamWriteTimeout bounds each write of a stream, so a client that
	// stops reading cannot hold a handler (and a Backend call) forever.
	streamWriteTimeout = 10 * time.Second
	// shutdownGrace is how long Close waits for handlers before cutting
	// connections.
	shutdownGrace = 2 * time.Second
	// eventBuffer is how many events a slow subscriber may lag behind.
	eventBuffer = 256
)

// ServerOptions configures a Server.
type ServerOptions struct {
	// Socket is the unix socket path. Empty means DefaultSocket. Its
	// directory is created (mode 0755) if missing.
	Socket string
	// Group is the group, by name or numeric gid, whose members may use the
	// API; the socket is chowned to it. Empty means only root and the
	// daemon's own user. A name that does not resolve is an error
	// (ErrUnknownGroup) rather than a silent fallback to root-only.
	Group string
	// Backend answers the requests. Must not be nil.
	Backend Backend
	// Logger, or nil to discard.
	Logger *slog.Logger
	// RequestTimeout bounds reading a request and answering a
	// non-streaming one. Zero means DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// Server serves the control API on a unix socket.
//
// Lifecycle: NewServer validates; Start creates the socket and serves until
// its ctx is done or Close is called; Close stops serving, ends streams,
// waits for handlers and removes the socket; Done is closed after that and
// Wait returns the error that stopped the server (nil for Close).
type Server struct {
	// Immutable after NewServer (the test hooks are set before Start).
	opts      ServerOptions
	log       *slog.Logger
	policy    policy
	groupName string // for error messages; "" when no group
	procRoot  string
	credFn    func(net.Conn) (peerCred, error)
	done      chan struct{}
	wg        sync.WaitGroup

	// mu guards the following.
	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc // cancels the base context of every request
	ln      *net.UnixListener
	hs      *http.Server
	sockID  fileID // the socket file we created, so Close removes only ours
	err     error  // why serving stopped, if not Close
}

// fileID identifies a file across renames and replacements.
type fileID struct{ dev, ino uint64 }

// NewServer validates opts and resolves the group. It starts nothing.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Backend == nil {
		return nil, fmt.Errorf("%w: ServerOptions.Backend must not be nil", ErrInvalidRequest)
	}
	if opts.Socket == "" {
		opts.Socket = DefaultSocket
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		opts:     opts,
		log:      log,
		policy:   policy{selfUID: uint32(os.Geteuid())},
		procRoot: "/proc",
		done:     make(chan struct{}),
	}
	s.credFn = func(c net.Conn) (peerCred, error) { return connCred(c, s.procRoot) }
	if opts.Group != "" {
		gid, name, err := resolveGroup(opts.Group)
		if err != nil {
			return nil, err
		}
		s.policy.gid, s.policy.hasGroup, s.groupName = gid, true, name
	}
	return s, nil
}

// Socket returns the socket path the server listens on.
func (s *Server) Socket() string { return s.opts.Socket }

// Start creates the socket and starts serving. A socket left by a crashed
// daemon (nothing accepts on it) is replaced; a live one is left alone and
// Start returns ErrSocketInUse. Serving stops when ctx is done or Close is
// called.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return ErrServerClosed
	}
	ln, id, err := s.listen()
	if err != nil {
		return err
	}
	s.started = true
	s.ln, s.sockID = ln, id
	base, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.hs = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       s.opts.RequestTimeout,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return base },
		ConnContext:       s.connContext,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	serveDone := make(chan struct{})
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		defer close(serveDone)
		err := s.hs.Serve(ln)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("control socket stopped serving", "socket", s.opts.Socket, "error", err)
			s.mu.Lock()
			s.err = fmt.Errorf("control: serve %s: %w", s.opts.Socket, err)
			s.mu.Unlock()
			cancel()
		}
	}()
	go func() {
		defer s.wg.Done()
		<-base.Done()
		s.shutdown()
		<-serveDone
		s.removeSocket()
		close(s.done)
	}()
	s.log.Info("control socket listening", "socket", s.opts.Socket, "group", s.groupName)
	return nil
}

// shutdown stops the HTTP server. The base context is already canceled, so
// streaming handlers are returning; the grace period covers the rest.
func (s *Server) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := s.hs.Shutdown(ctx); err != nil {
		s.log.Debug("control server shutdown cut connections", "error", err)
		_ = s.hs.Close()
	}
}

// Close stops the server and removes the socket. It is idempotent and safe
// to call before Start.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.started {
		if !s.closed {
			s.closed = true
			close(s.done)
		}
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cancel := s.cancel
	s.mu.Unlock()
	cancel()
	<-s.done
	s.wg.Wait()
	return nil
}

// Done is closed when the server has stopped and removed its socket.
func (s *Server) Done() <-chan struct{} { return s.done }

// Wait blocks until the server stops and returns why: nil after Close or the
// end of Start's ctx, or the error that broke the listener.
func (s *Server) Wait() error {
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// listen prepares the socket path and listens on it. Must hold s.mu.
func (s *Server) listen() (*net.UnixListener, fileID, error) {
	path := s.opts.Socket
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fileID{}, fmt.Errorf("control: create socket directory: %w", err)
	}
	if err := s.removeStale(path); err != nil {
		return nil, fileID{}, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fileID{}, fmt.Errorf("%w: %s was created by another process while starting", ErrSocketInUse, path)
		}
		return nil, fileID{}, fmt.Errorf("control: listen on %s: %w", path, err)
	}
	// Close removes the file itself, and only if it is still ours.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, fileID, error) {
		ln.Close()
		os.Remove(path)
		return nil, fileID{}, err
	}
	// Until the chmod the file has the umask's mode (normally 0755, which
	// lets only the owner connect); the per-request check covers the gap.
	if err := os.Chmod(path, 0o660); err != nil {
		return fail(fmt.Errorf("control: chmod %s: %w", path, err))
	}
	if s.policy.hasGroup {
		if err := os.Chown(path, -1, int(s.policy.gid)); err != nil {
			return fail(fmt.Errorf("control: chown %s to group %s: %w", path, s.groupName, err))
		}
	}
	id, err := statID(path)
	if err != nil {
		return fail(fmt.Errorf("control: stat %s: %w", path, err))
	}
	return ln, id, nil
}

// removeStale removes a socket file nothing accepts on. A live socket and any
// file that is not a socket are left alone.
func (s *Server) removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: stat %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%w: %s exists and is not a socket; not removing it", ErrSocketInUse, path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("%w: another meshd is serving %s", ErrSocketInUse, path)
	case errors.Is(err, syscall.ECONNREFUSED):
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("control: remove stale socket %s: %w", path, err)
		}
		s.log.Info("removed stale control socket", "socket", path)
		return nil
	case errors.Is(err, syscall.ENOENT):
		return nil
	default:
		return fmt.Errorf("control: probe existing socket %s: %w", path, err)
	}
}

// removeSocket removes the socket file if it is still the one Start created
// (a newer daemon may have replaced it).
func (s *Server) removeSocket() {
	s.mu.Lock()
	want := s.sockID
	s.mu.Unlock()
	path := s.opts.Socket
	if id, err := statID(path); err != nil || id != want {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("could not remove control socket", "socket", path, "error", err)
	}
}

func statID(path string) (fileID, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("no inode for %s", path)
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}

// connInfo is what the server knows about a connection's caller.
type connInfo struct {
	cred   peerCred
	access access
	err    error // credentials could not be read: no access
}

type connInfoKey struct{}

// connContext reads the caller's credentials once per connection.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	ci := &connInfo{}
	ci.cred, ci.err = s.credFn(c)
	if ci.err == nil {
		ci.access = s.policy.decide(ci.cred)
	}
	return context.WithValue(ctx, connInfoKey{}, ci)
}

// discardBody drains what is left of a request body so the HTTP server starts
// watching the connection for the client going away.
func discardBody(r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
}
