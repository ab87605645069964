package control

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
)

// miniBackend answers everything with empty documents. (controltest cannot be
// used here: it imports this package.)
type miniBackend struct{}

func (miniBackend) Status(context.Context) (*Status, error) { return &Status{Name: "n"}, nil }
func (miniBackend) Peers(context.Context) ([]Peer, error)   { return nil, nil }
func (miniBackend) PeerWhy(_ context.Context, n string) (*PeerWhy, error) {
	return &PeerWhy{Peer: n}, nil
}
func (miniBackend) Ping(_ context.Context, p string, _ int, _ time.Duration, _ bool, fn func(PingReply)) error {
	fn(PingReply{Peer: p, Path: PathDirect})
	return nil
}
func (miniBackend) Netcheck(context.Context) (*Netcheck, error) { return &Netcheck{}, nil }
func (miniBackend) Events(ctx context.Context, _ func(Event)) error {
	<-ctx.Done()
	return nil
}
func (miniBackend) Reload(context.Context) (*ReloadResult, error) { return &ReloadResult{}, nil }

// TestServerPermissionFromCredentials runs the whole request path with the
// caller's credentials replaced, since the test itself runs as root.
func TestServerPermissionFromCredentials(t *testing.T) {
	testutil.LeakCheck(t)
	const group = 4242
	tests := []struct {
		name    string
		cred    peerCred
		credErr error
		allowed bool
	}{
		{"outsider", peerCred{PID: 1, UID: 1000, GID: 1000, Groups: []uint32{1000, 27}}, nil, false},
		{"member by supplementary group", peerCred{PID: 1, UID: 1000, GID: 1000, Groups: []uint32{group}}, nil, true},
		{"member by primary gid", peerCred{PID: 1, UID: 1000, GID: group}, nil, true},
		{"root", peerCred{PID: 1}, nil, true},
		{"credentials unreadable", peerCred{}, errors.New("no SO_PEERCRED"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "p.sock")
			srv, err := NewServer(ServerOptions{Socket: sock, Group: "4242", Backend: miniBackend{}})
			if err != nil {
				t.Fatal(err)
			}
			srv.credFn = func(net.Conn) (peerCred, error) { return tt.cred, tt.credErr }
			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			c := NewClient(sock)
			ctx := context.Background()

			calls := map[string]func() error{
				"status":   func() error { _, err := c.Status(ctx); return err },
				"peers":    func() error { _, err := c.Peers(ctx); return err },
				"why":      func() error { _, err := c.PeerWhy(ctx, "x"); return err },
				"netcheck": func() error { _, err := c.Netcheck(ctx); return err },
				"reload":   func() error { _, err := c.Reload(ctx); return err },
				"ping": func() error {
					return c.Ping(ctx, PingRequest{Peer: "x", Count: 1}, func(PingReply) error { return nil })
				},
				"events": func() error {
					ectx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
					defer cancel()
					return c.Events(ectx, func(Event) error { return nil })
				},
			}
			for name, call := range calls {
				err := call()
				if tt.allowed {
					if err != nil {
						t.Errorf("%s: %v, want allowed", name, err)
					}
					continue
				}
				if !errors.Is(err, ErrPermissionDenied) {
					t.Errorf("%s: %v, want ErrPermissionDenied", name, err)
					continue
				}
				// The group to join comes from the socket's owner group.
				if want := "permission denied: run as root or join group " + srv.groupName; err.Error() != want {
					t.Errorf("%s: message %q, want %q", name, err, want)
				}
			}
		})
	}
}
