package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"syscall"
	"time"
)

// Client limits.
const (
	// maxResponse bounds a non-streaming response (a few thousand peers fit).
	maxResponse = 16 << 20
	// maxStreamLine bounds one line of a stream.
	maxStreamLine = 1 << 20
	// dialTimeout bounds connecting to the socket.
	dialTimeout = 5 * time.Second
)

// Client is the typed client of the control API, what meshctl uses. It is
// safe for concurrent use. Every request opens its own connection (the
// socket is local and cheap), so a Client holds nothing that needs closing.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the daemon listening on socketPath; empty
// means DefaultSocket. It does not connect until a request is made.
func NewClient(socketPath string) *Client {
	if socketPath == "" {
		socketPath = DefaultSocket
	}
	c := &Client{socket: socketPath}
	c.hc = &http.Client{Transport: &http.Transport{
		DialContext:            c.dial,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}}
	return c
}

// Socket returns the socket path the client connects to.
func (c *Client) Socket() string { return c.socket }

// Status returns the node's summary, including the peer list.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.getJSON(ctx, PathStatus, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Peers returns every peer the node knows.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var pl PeerList
	if err := c.getJSON(ctx, PathPeers, &pl); err != nil {
		return nil, err
	}
	return pl.Peers, nil
}

// PeerWhy explains the path to the named peer. An unknown name gives an error
// matching ErrPeerNotFound.
func (c *Client) PeerWhy(ctx context.Context, name string) (*PeerWhy, error) {
	var why PeerWhy
	if err := c.getJSON(ctx, PathPeerWhy+"?peer="+url.QueryEscape(name), &why); err != nil {
		return nil, err
	}
	return &why, nil
}

// Netcheck asks the daemon to probe the network and returns its report.
func (c *Client) Netcheck(ctx context.Context) (*Netcheck, error) {
	var nc Netcheck
	if err := c.getJSON(ctx, PathNetcheck, &nc); err != nil {
		return nil, err
	}
	return &nc, nil
}

// Reload asks the daemon to re-read its configuration. A configuration the
// daemon refused returns the result and an error matching ErrReloadFailed.
func (c *Client) Reload(ctx context.Context) (*ReloadResult, error) {
	resp, err := c.do(ctx, http.MethodPost, PathReload, nil)
	if err != nil {
		return nil, err
	}
	var res ReloadResult
	if err := readDoc(resp, &res); err != nil {
		return nil, err
	}
	if res.Error != "" {
		return &res, &ReloadError{Message: res.Error}
	}
	return &res, nil
}

// Ping pings req.Peer through the overlay, calling fn for each reply (in
// order) as it arrives. Zero Count and Interval mean DefaultPingCount and
// DefaultPingInterval; SchemaVersion is set by Ping. It returns nil when the
// daemon ended the stream (all pings sent, or a direct reply with
// UntilDirect), ctx.Err() when ctx ended it, and fn's error if fn returns
// one (which stops the stream).
func (c *Client) Ping(ctx context.Context, req PingRequest, fn func(PingReply) error) error {
	req.SchemaVersion = SchemaVersion
	body, err := json.Marshal(&req)
	if err != nil {
		return fmt.Errorf("control: encode ping request: %w", err)
	}
	resp, err := c.do(ctx, http.MethodPost, PathPing, bytes.NewReader(body))
	if err != nil {
		return err
	}
	return readStream(ctx, resp, func(line []byte) error {
		var rep PingReply
		if err := json.Unmarshal(line, &rep); err != nil {
			return fmt.Errorf("%w: ping reply: %v", ErrProtocol, err)
		}
		return fn(rep)
	})
}

// Events calls fn for each daemon event until ctx is done, then returns nil.
// It returns fn's error if fn returns one, ErrStreamClosed if the daemon
// ended the stream (it is shutting down), or the error that broke it.
func (c *Client) Events(ctx context.Context, fn func(Event) error) error {
	resp, err := c.do(ctx, http.MethodGet, PathEvents, nil)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	err = readStream(ctx, resp, func(line []byte) error {
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("%w: event: %v", ErrProtocol, err)
		}
		return fn(e)
	})
	switch {
	case ctx.Err() != nil && (err == nil || errors.Is(err, ctx.Err())):
		return nil
	case err == nil:
		return fmt.Errorf("%w: events from %s ended (is meshd shutting down?)", ErrStreamClosed, c.socket)
	}
	return err
}

// Decode parses one control API document (a response body, a stream line, or
// meshctl's --json output) into v, rejecting documents whose schema_version is
// not SchemaVersion.
func Decode(data []byte, v any) error {
	var probe struct {
		SchemaVersion int `json:"schema_version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if probe.SchemaVersion != SchemaVersion {
		return &SchemaError{Got: probe.SchemaVersion}
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return nil
}

func (c *Client) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	return readDoc(resp, v)
}

// do sends a request and returns the response if it is a 200; any other
// status becomes the error the body describes.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://meshd"+path, body)
	if err != nil {
		return nil, fmt.Errorf("control: build request %s: %w", path, err)
	}
	req.Header.Set("User-Agent", "meshd-control-client/1")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.requestError(ctx, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, c.responseError(resp)
}

// requestError turns a transport error into one a person can act on.
func (c *Client) requestError(ctx context.Context, err error) error {
	var nr *NotRunningError
	var pe *PermissionError
	switch {
	case errors.As(err, &nr):
		return nr
	case errors.As(err, &pe):
		return pe
	case errors.Is(ctx.Err(), context.Canceled):
		return ctx.Err()
	case ctx.Err() != nil:
		return fmt.Errorf("control: no answer from meshd on %s in time: %w", c.socket, ctx.Err())
	}
	return fmt.Errorf("control: talk to meshd on %s: %w", c.socket, err)
}

// responseError decodes the ErrorResponse of a non-200 answer.
func (c *Client) responseError(resp *http.Response) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("control: read error response (HTTP %d): %w", resp.StatusCode, err)
	}
	var er ErrorResponse
	if err := Decode(b, &er); err != nil {
		return fmt.Errorf("HTTP %d from %s: %w", resp.StatusCode, c.socket, err)
	}
	if er.Code == codePermission {
		return &PermissionError{Group: socketGroup(c.socket)}
	}
	return &APIError{Status: resp.StatusCode, Code: er.Code, Message: er.Error}
}

// dial connects to the socket, turning the common failures into
// NotRunningError and PermissionError.
func (c *Client) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "unix", c.socket)
	switch {
	case err == nil:
		return conn, nil
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
		return nil, &NotRunningError{Socket: c.socket}
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, &NotRunningError{Socket: c.socket, Refused: true}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return nil, &PermissionError{Group: socketGroup(c.socket)}
	}
	return nil, fmt.Errorf("control: connect to %s: %w", c.socket, err)
}

// socketGroup names the group that owns the socket (the one to join), or
// DefaultGroup if it cannot be read.
func socketGroup(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return DefaultGroup
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return DefaultGroup
	}
	gid := strconv.FormatUint(uint64(st.Gid), 10)
	if g, err := user.LookupGroupId(gid); err == nil {
		return g.Name
	}
	return gid
}

// readDoc reads a whole (bounded) response body into v.
func readDoc(resp *http.Response, v any) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("control: read response: %w", err)
	}
	if len(b) > maxResponse {
		return fmt.Errorf("%w: response larger than %d bytes", ErrProtocol, maxResponse)
	}
	return Decode(b, v)
}

// readStream calls fn with each line of an NDJSON stream until it ends, and
// turns a stream error line into an APIError.
func readStream(ctx context.Context, resp *http.Response, fn func([]byte) error) error {
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxStreamLine)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var probe struct {
			StreamError string `json:"stream_error"`
			Code        string `json:"code"`
		}
		if err := Decode(line, &probe); err != nil {
			return err
		}
		if probe.StreamError != "" || probe.Code != "" {
			return &APIError{Status: resp.StatusCode, Code: probe.Code, Message: probe.StreamError}
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%w: stream line longer than %d bytes", ErrProtocol, maxStreamLine)
		}
		return fmt.Errorf("control: stream from meshd broke: %w", err)
	}
	return nil
}
