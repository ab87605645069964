package tunneltest

import (
	"context"
	"errors"
	"testing"
)

func TestRouter(t *testing.T) {
	r := NewRouter()
	var got []string
	r.Register("b", func(from string, p []byte) error {
		got = append(got, from+":"+string(p))
		return errors.New("ignored by the sender")
	})
	a := r.Signaler("a")
	ctx := context.Background()
	for _, p := range []string{"1", "2", "3"} {
		if err := a.SendSignal(ctx, "b", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 3 || got[0] != "a:1" || got[2] != "a:3" || r.Sent() != 3 {
		t.Fatalf("got %v, sent %d", got, r.Sent())
	}
	if err := a.SendSignal(ctx, "nobody", nil); !errors.Is(err, ErrOffline) {
		t.Fatalf("unknown destination: %v", err)
	}
	r.SetOffline("a", true)
	if err := a.SendSignal(ctx, "b", nil); !errors.Is(err, ErrOffline) {
		t.Fatalf("offline sender: %v", err)
	}
	r.SetOffline("a", false)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.SendSignal(cctx, "b", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}
