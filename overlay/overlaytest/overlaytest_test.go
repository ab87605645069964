package overlaytest_test

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/overlay"
	"github.com/meshd/meshd/overlay/overlaytest"
)

func withRoom(p []byte) []byte { return append(make([]byte, overlay.HeaderRoom), p...) }

func TestPipe(t *testing.T) {
	for _, async := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "async"}[async], func(t *testing.T) {
			testutil.LeakCheck(t)
			a, b := overlaytest.Pipe(overlaytest.PipeOptions{Async: async, MaxBatch: 2, BufSize: overlay.HeaderRoom + 100})
			defer a.Close()
			defer b.Close()
			var got atomic.Int64
			var calls atomic.Int64
			var last atomic.Value
			b.SetReceiver(func(bufs [][]byte, offset int) {
				calls.Add(1)
				got.Add(int64(len(bufs)))
				last.Store(append([]byte(nil), bufs[len(bufs)-1][offset:]...))
			})
			pkts := [][]byte{withRoom([]byte("one")), withRoom([]byte("two")), withRoom([]byte("three")), withRoom(make([]byte, 200))}
			n, err := a.WriteBatch(pkts, overlay.HeaderRoom)
			if err != nil || n != 4 {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			testutil.WaitFor(t, 5*time.Second, "delivery", func() bool { return got.Load() == 3 })
			if calls.Load() != 2 {
				t.Fatalf("%d receiver calls for 4 packets with MaxBatch 2 (one oversize)", calls.Load())
			}
			if !bytes.Equal(last.Load().([]byte), []byte("three")) {
				t.Fatalf("last packet %q", last.Load())
			}
			if s := b.Stats(); s.Oversize != 1 || s.Delivered != 3 {
				t.Fatalf("stats %+v", s)
			}
			// The writer's buffers were copied, not lent.
			copy(pkts[0][overlay.HeaderRoom:], "XXX")
			if bytes.Contains(last.Load().([]byte), []byte("XXX")) {
				t.Fatal("receiver sees the writer's buffer")
			}
			a.SetDown(true)
			if _, err := a.WriteBatch(pkts[:1], overlay.HeaderRoom); !errors.Is(err, overlay.ErrLinkDown) {
				t.Fatalf("down link: %v", err)
			}
			a.SetDown(false)
			a.Close()
			if _, err := a.WriteBatch(pkts[:1], overlay.HeaderRoom); !errors.Is(err, overlay.ErrLinkDown) {
				t.Fatalf("closed link: %v", err)
			}
		})
	}
}

func TestPipeAsyncQueueFull(t *testing.T) {
	testutil.LeakCheck(t)
	a, b := overlaytest.Pipe(overlaytest.PipeOptions{Async: true, QueueLen: 2, MaxBatch: 1})
	defer a.Close()
	defer b.Close()
	block := make(chan struct{})
	b.SetReceiver(func([][]byte, int) { <-block })
	p := [][]byte{withRoom([]byte("x"))}
	for range 10 {
		if _, err := a.WriteBatch(p, overlay.HeaderRoom); err != nil {
			t.Fatal(err)
		}
	}
	close(block)
	testutil.WaitFor(t, 5*time.Second, "drops counted", func() bool { return b.Stats().Dropped > 0 })
}

func TestTUN(t *testing.T) {
	testutil.LeakCheck(t)
	tn := overlaytest.NewTUN(overlaytest.TUNOptions{BatchSize: 2})
	if bs := tn.BatchSize(); bs != 2 {
		t.Fatalf("BatchSize %d", bs)
	}
	pkts := [][]byte{[]byte("a"), []byte("bb"), []byte("ccc")}
	done := make(chan error, 1)
	go func() { done <- tn.Inject(pkts...) }()
	bufs := [][]byte{make([]byte, 16), make([]byte, 16)}
	sizes := make([]int, 2)
	n, err := tn.Read(bufs, sizes, 4)
	if err != nil || n != 2 || string(bufs[0][4:4+sizes[0]]) != "a" || string(bufs[1][4:4+sizes[1]]) != "bb" {
		t.Fatalf("first read: %d %v %v", n, err, sizes)
	}
	n, err = tn.Read(bufs, sizes, 4)
	if err != nil || n != 1 || string(bufs[0][4:4+sizes[0]]) != "ccc" {
		t.Fatalf("second read: %d %v", n, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Inject: %v", err)
	}
	if _, err := tn.Write([][]byte{[]byte("xxhello")}, 2); err != nil {
		t.Fatal(err)
	}
	if got := <-tn.Written(); string(got) != "hello" {
		t.Fatalf("written %q", got)
	}
	tn.Close()
	if _, err := tn.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if err := tn.Inject([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("inject after close: %v", err)
	}
	tn.Close() // idempotent
}

func TestPacketChecksums(t *testing.T) {
	for _, p := range []overlaytest.Packet{
		{Src: netip.MustParseAddr("100.64.0.1"), Dst: netip.MustParseAddr("100.64.0.2"), Proto: overlaytest.ProtoUDP, SrcPort: 1, DstPort: 2, Payload: []byte("abc")},
		{Src: netip.MustParseAddr("100.64.0.1"), Dst: netip.MustParseAddr("100.64.0.2"), Proto: overlaytest.ProtoTCP, SrcPort: 1, DstPort: 2, Payload: []byte("abcd")},
		{Src: netip.MustParseAddr("100.64.0.1"), Dst: netip.MustParseAddr("100.64.0.2"), Proto: overlaytest.ProtoICMP, ICMPType: 8},
	} {
		b := p.Marshal()
		if overlaytest.Checksum(b[:20]) != 0 {
			t.Errorf("%+v: bad IPv4 header checksum", p)
		}
		if p.Proto == overlaytest.ProtoICMP && overlaytest.Checksum(b[20:]) != 0 {
			t.Errorf("bad ICMP checksum")
		}
		// TCP/UDP: the sum over pseudo-header and segment is zero.
		if p.Proto != overlaytest.ProtoICMP {
			ph := append(append(append([]byte{}, b[12:20]...), 0, p.Proto), byte((len(b)-20)>>8), byte(len(b)-20))
			if overlaytest.Checksum(append(ph, b[20:]...)) != 0 {
				t.Errorf("%+v: bad transport checksum", p)
			}
		}
	}
}
