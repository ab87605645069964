package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// API paths. They are versioned: an incompatible change gets /v2 and a new
// SchemaVersion; /v1 keeps working for older meshctl binaries.
const (
	PathStatus   = "/v1/status"
	PathPeers    = "/v1/peers"
	PathPeerWhy  = "/v1/peers/why" // ?peer=NAME
	PathPing     = "/v1/ping"      // POST PingRequest; NDJSON stream of PingReply
	PathNetcheck = "/v1/netcheck"
	PathEvents   = "/v1/events" // NDJSON stream of Event
	PathReload   = "/v1/reload" // POST
)

// Defaults for a PingRequest that leaves Count or Interval zero.
const (
	DefaultPingCount    = 10
	DefaultPingInterval = time.Second
)

// route is one entry of the handler table.
type route struct {
	method string
	need   access
	// stream routes write NDJSON until done and are not bounded by
	// RequestTimeout.
	stream bool
	serve  func(*Server, http.ResponseWriter, *http.Request)
}

// routes is the handler table: every endpoint, its method and the permission
// it needs. serveHTTP checks both before calling the handler.
var routes = map[string]route{
	PathStatus:   {http.MethodGet, accessRead, false, (*Server).serveStatus},
	PathPeers:    {http.MethodGet, accessRead, false, (*Server).servePeers},
	PathPeerWhy:  {http.MethodGet, accessRead, false, (*Server).servePeerWhy},
	PathPing:     {http.MethodPost, accessRead, true, (*Server).servePing},
	PathNetcheck: {http.MethodGet, accessRead, false, (*Server).serveNetcheck},
	PathEvents:   {http.MethodGet, accessRead, true, (*Server).serveEvents},
	PathReload:   {http.MethodPost, accessWrite, false, (*Server).serveReload},
}

// statusWriter remembers the status for the request log. Unwrap lets
// http.ResponseController reach the real writer (Flush, deadlines).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	ci, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	if ci == nil {
		ci = &connInfo{err: errors.New("no connection credentials")}
	}
	defer func() {
		if s.log.Enabled(r.Context(), slog.LevelDebug) {
			s.log.Debug("control request", "method", r.Method, "path", r.URL.Path,
				"uid", ci.cred.UID, "pid", ci.cred.PID, "status", w.status, "duration", time.Since(start))
		}
	}()

	rt, ok := routes[r.URL.Path]
	if !ok {
		msg := "unknown endpoint " + r.URL.Path
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			msg += " (this meshd speaks /v1)"
		}
		writeError(w, http.StatusNotFound, codeNotFound, msg)
		return
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		writeError(w, http.StatusMethodNotAllowed, codeMethod, fmt.Sprintf("%s needs %s, not %s", r.URL.Path, rt.method, r.Method))
		return
	}
	if ci.err != nil || ci.access&rt.need == 0 {
		s.log.Info("control request denied", "path", r.URL.Path, "uid", ci.cred.UID,
			"gid", ci.cred.GID, "pid", ci.cred.PID, "error", ci.err)
		perr := &PermissionError{Group: s.groupName}
		writeError(w, http.StatusForbidden, codePermission, perr.Error())
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
	// Streams outlive ReadTimeout: net/http clears the read deadline once
	// the body is consumed (TestEventsOutliveRequestTimeout holds it to
	// that), and each streamed write sets its own deadline.
	if !rt.stream {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.opts.RequestTimeout + time.Second))
		ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	rt.serve(s, w, r)
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.opts.Backend.Status(r.Context())
	if err != nil {
		s.writeBackendError(w, r, err, "")
		return
	}
	if st == nil {
		writeError(w, http.StatusInternalServerError, codeInternal, "internal error: meshd returned no status")
		return
	}
	peers, err := s.opts.Backend.Peers(r.Context())
	if err != nil {
		s.writeBackendError(w, r, err, "")
		return
	}
	st.SchemaVersion = SchemaVersion
	st.Peers = peers
	st.PeerCounts = CountPeers(peers)
	st.Cert = CertStatus(st.Cert, time.Now())
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) servePeers(w http.ResponseWriter, r *http.Request) {
	peers, err := s.opts.Backend.Peers(r.Context())
	if err != nil {
		s.writeBackendError(w, r, err, "")
		return
	}
	if peers == nil {
		peers = []Peer{}
	}
	writeJSON(w, http.StatusOK, &PeerList{SchemaVersion: SchemaVersion, Peers: peers})
}

func (s *Server) servePeerWhy(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("peer")
	if err := checkPeerName(name); err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	why, err := s.opts.Backend.PeerWhy(r.Context(), name)
	if err != nil {
		s.writeBackendError(w, r, err, name)
		return
	}
	if why == nil {
		writeError(w, http.StatusInternalServerError, codeInternal, "internal error: meshd returned no explanation")
		return
	}
	why.SchemaVersion = SchemaVersion
	if why.Pairs == nil {
		why.Pairs = []CandidatePair{}
	}
	writeJSON(w, http.StatusOK, why)
}

func (s *Server) serveNetcheck(w http.ResponseWriter, r *http.Request) {
	nc, err := s.opts.Backend.Netcheck(r.Context())
	if err != nil {
		s.writeBackendError(w, r, err, "")
		return
	}
	if nc == nil {
		writeError(w, http.StatusInternalServerError, codeInternal, "internal error: meshd returned no report")
		return
	}
	nc.SchemaVersion = SchemaVersion
	if nc.STUN == nil {
		nc.STUN = []STUNProbe{}
	}
	if nc.Latencies == nil {
		nc.Latencies = []ServerLatency{}
	}
	writeJSON(w, http.StatusOK, nc)
}

func (s *Server) serveReload(w http.ResponseWriter, r *http.Request) {
	discardBody(r)
	res, err := s.opts.Backend.Reload(r.Context())
	if err != nil && (errors.Is(err, ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || r.Context().Err() != nil) {
		s.writeBackendError(w, r, err, "")
		return
	}
	if res == nil {
		res = &ReloadResult{}
	}
	if err != nil {
		// A refused configuration is a result, not a failed request: the
		// document says why and that nothing changed.
		res.Error = err.Error()
	}
	res.SchemaVersion = SchemaVersion
	if res.Changed == nil {
		res.Changed = []string{}
	}
	if res.NeedsRestart == nil {
		res.NeedsRestart = []string{}
	}
	writeJSON(w, http.StatusOK, res)
}

// checkPeerName rejects names no certificate could carry, before they reach
// the Backend or a log line.
func checkPeerName(name string) error {
	if name == "" {
		return errors.New("missing peer name (?peer=NAME)")
	}
	if len(name) > 253 {
		return errors.New("peer name longer than 253 bytes")
	}
	for _, c := range name {
		if c < 0x21 || c > 0x7e {
			return fmt.Errorf("peer name %q has a character that is not printable ASCII", name)
		}
	}
	return nil
}

// writeBackendError answers with the status and code classify gives err.
func (s *Server) writeBackendError(w http.ResponseWriter, r *http.Request, err error, peer string) {
	status, code, msg := s.classify(r, err, peer)
	writeError(w, status, code, msg)
}

// classify maps a Backend error to an HTTP status, an error code and a
// message for a person. peer names the peer the request was about, for the
// not-found message.
func (s *Server) classify(r *http.Request, err error, peer string) (int, string, string) {
	switch {
	case errors.Is(err, ErrPeerNotFound):
		msg := "no such peer"
		if peer != "" {
			msg = fmt.Sprintf("no peer named %q in the mesh (meshctl peers lists them)", peer)
		}
		return http.StatusNotFound, codePeerNotFound, msg
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, codeUnavailable, "meshd is not ready: " + err.Error()
	case errors.Is(err, ErrInvalidRequest):
		return http.StatusBadRequest, codeBadRequest, err.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, codeTimeout,
			fmt.Sprintf("meshd did not answer %s within %v", r.URL.Path, s.opts.RequestTimeout)
	case r.Context().Err() != nil:
		// The client went away or the server is closing; nobody reads this.
		return http.StatusServiceUnavailable, codeUnavailable, "request canceled: meshd is shutting down or the client left"
	default:
		s.log.Warn("control backend error", "path", r.URL.Path, "error", err)
		return http.StatusInternalServerError, codeInternal, "internal error: " + err.Error()
	}
}

// writeJSON writes v as the whole response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, codeInternal, "internal error: encode response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(&ErrorResponse{SchemaVersion: SchemaVersion, Error: msg, Code: code})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// readBody reads a whole (bounded) request body. Reading to EOF also lets
// the HTTP server notice when the client goes away during a stream.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("request body larger than %d bytes: %w", mbe.Limit, err)
		}
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return b, nil
}
