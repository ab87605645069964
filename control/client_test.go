package control_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/control"
	"github.com/meshd/meshd/control/controltest"
	"github.com/meshd/meshd/internal/testutil"
)

// rawServer serves handler on a fresh unix socket: a stand-in for a meshd of
// another version.
func rawServer(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	sock := controltest.SocketPath(t)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: handler}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close(); <-done })
	return sock
}

// rawClient talks HTTP to a unix socket without control's client.
func rawClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

func TestClientRejectsUnknownSchemaVersion(t *testing.T) {
	testutil.LeakCheck(t)
	sock := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case control.PathStatus:
			io.WriteString(w, `{"schema_version":2,"name":"future"}`)
		case control.PathPeers:
			io.WriteString(w, `{"peers":[]}`)
		case control.PathPing:
			w.Header().Set("Content-Type", "application/x-ndjson")
			io.WriteString(w, `{"schema_version":1,"seq":1,"peer":"nas"}`+"\n"+`{"schema_version":7,"seq":2}`+"\n")
		case control.PathNetcheck:
			io.WriteString(w, `not json`)
		default:
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, `{"schema_version":3,"error":"x","code":"y"}`)
		}
	})
	c := control.NewClient(sock)
	ctx := context.Background()

	_, err := c.Status(ctx)
	var se *control.SchemaError
	if !errors.As(err, &se) || se.Got != 2 || !errors.Is(err, control.ErrSchemaVersion) {
		t.Fatalf("status with schema_version 2: %v, want SchemaError{Got: 2}", err)
	}
	if want := "control: meshd speaks schema version 2, this client only 1: use matching meshd and meshctl versions"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	if _, err := c.Peers(ctx); !errors.As(err, &se) || se.Got != 0 {
		t.Errorf("peers without schema_version: %v, want SchemaError{Got: 0}", err)
	}
	n := 0
	err = c.Ping(ctx, control.PingRequest{Peer: "nas"}, func(control.PingReply) error { n++; return nil })
	if n != 1 || !errors.Is(err, control.ErrSchemaVersion) {
		t.Errorf("stream with a version-7 line: %d replies, %v; want 1 then ErrSchemaVersion", n, err)
	}
	if _, err := c.Netcheck(ctx); !errors.Is(err, control.ErrProtocol) {
		t.Errorf("non-JSON response: %v, want ErrProtocol", err)
	}
	if _, err := c.PeerWhy(ctx, "x"); !errors.Is(err, control.ErrSchemaVersion) {
		t.Errorf("error document with schema_version 3: %v, want ErrSchemaVersion", err)
	}
}

func TestDecode(t *testing.T) {
	var st control.Status
	if err := control.Decode([]byte(`{"schema_version":1,"name":"a","nat":"none"}`), &st); err != nil || st.Name != "a" {
		t.Errorf("Decode v1: %v, %+v", err, st)
	}
	// Fields added later within version 1 are ignored, not fatal.
	if err := control.Decode([]byte(`{"schema_version":1,"name":"a","future_field":{"x":1}}`), &st); err != nil {
		t.Errorf("Decode with an unknown field: %v, want nil", err)
	}
	for _, in := range []string{`{"schema_version":2}`, `{}`, `{"schema_version":"1"}`, `[1]`, ``} {
		if err := control.Decode([]byte(in), &st); err == nil {
			t.Errorf("Decode(%q) succeeded, want an error", in)
		}
	}
}

// slowBackend blocks Netcheck until its context ends.
type slowBackend struct{ *controltest.Backend }

func (slowBackend) Netcheck(ctx context.Context) (*control.Netcheck, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestServerErrors(t *testing.T) {
	testutil.LeakCheck(t)
	b := controltest.New()
	sock := controltest.SocketPath(t)
	srv, err := control.NewServer(control.ServerOptions{Socket: sock, Backend: slowBackend{b}, RequestTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := control.NewClient(sock)
	raw := rawClient(sock)
	ctx := context.Background()

	t.Run("backend errors", func(t *testing.T) {
		b.SetError(controltest.MethodStatus, control.ErrUnavailable)
		if _, err := c.Status(ctx); !errors.Is(err, control.ErrUnavailable) {
			t.Errorf("status when unavailable: %v, want ErrUnavailable", err)
		}
		b.SetError(controltest.MethodStatus, nil)
		b.SetError(controltest.MethodPeers, errors.New("boom"))
		_, err := c.Peers(ctx)
		var ae *control.APIError
		if !errors.As(err, &ae) || ae.Status != 500 || ae.Message != "internal error: boom" {
			t.Errorf("peers failing: %v, want APIError 500 %q", err, "internal error: boom")
		}
		b.SetError(controltest.MethodPeers, nil)
	})
	t.Run("timeout", func(t *testing.T) {
		_, err := c.Netcheck(ctx)
		var ae *control.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusGatewayTimeout || !strings.Contains(ae.Message, "did not answer") {
			t.Errorf("netcheck past RequestTimeout: %v, want a 504", err)
		}
	})
	t.Run("bad ping requests", func(t *testing.T) {
		for _, req := range []control.PingRequest{
			{Peer: ""},
			{Peer: "nas", Count: -1},
			{Peer: "nas", Count: control.MaxPingCount + 1},
			{Peer: "nas", Interval: time.Millisecond},
			{Peer: "nas", Interval: time.Hour},
			{Peer: "bad name"},
		} {
			err := c.Ping(ctx, req, func(control.PingReply) error { return nil })
			if !errors.Is(err, control.ErrInvalidRequest) {
				t.Errorf("Ping(%+v): %v, want ErrInvalidRequest", req, err)
			}
		}
	})

	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"unknown endpoint", "GET", "/v1/nope", "", 404, "not_found"},
		{"future version path", "GET", "/v2/status", "", 404, "not_found"},
		{"wrong method", "POST", control.PathStatus, "", 405, "method_not_allowed"},
		{"reload by GET", "GET", control.PathReload, "", 405, "method_not_allowed"},
		{"why without a peer", "GET", control.PathPeerWhy, "", 400, "bad_request"},
		{"ping with a future schema", "POST", control.PathPing, `{"schema_version":2,"peer":"nas"}`, 400, "schema_version"},
		{"ping without a schema", "POST", control.PathPing, `{"peer":"nas"}`, 400, "schema_version"},
		{"ping not JSON", "POST", control.PathPing, `ping nas`, 400, "bad_request"},
		{"ping with trailing garbage", "POST", control.PathPing, `{"schema_version":1,"peer":"nas"} x`, 400, "bad_request"},
		{"ping body too large", "POST", control.PathPing, `{"schema_version":1,"peer":"` + strings.Repeat("a", 70000) + `"}`, 413, "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, "http://meshd"+tt.path, strings.NewReader(tt.body))
			resp, err := raw.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			var er control.ErrorResponse
			if err := control.Decode(body, &er); err != nil {
				t.Fatalf("error body %q: %v", body, err)
			}
			if resp.StatusCode != tt.status || er.Code != tt.code || er.Error == "" {
				t.Errorf("%s %s: %d %+v, want %d code %q with a message", tt.method, tt.path, resp.StatusCode, er, tt.status, tt.code)
			}
		})
	}
}

// TestPingRequestJSON pins the wire names of the ping request.
func TestPingRequestJSON(t *testing.T) {
	b, err := json.Marshal(control.PingRequest{SchemaVersion: 1, Peer: "nas", Count: 3, Interval: time.Second, UntilDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"schema_version":1,"peer":"nas","count":3,"interval_ns":1000000000,"until_direct":true}`
	if !bytes.Equal(b, []byte(want)) {
		t.Errorf("PingRequest JSON %s, want %s", b, want)
	}
}
