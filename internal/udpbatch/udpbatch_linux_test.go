//go:build linux

package udpbatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"unsafe"

	"golang.org/x/sys/unix"
)

func listen(t testing.TB, network, addr string) (*net.UDPConn, *Conn) {
	t.Helper()
	uc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skip("no loopback for", network, err)
	}
	t.Cleanup(func() { uc.Close() })
	c, err := New(uc)
	if err != nil {
		t.Fatal(err)
	}
	return uc, c
}

func lens(recs [][]byte) []int {
	l := make([]int, len(recs))
	for i, r := range recs {
		l[i] = len(r)
	}
	return l
}

func records(sizes ...int) [][]byte {
	recs := make([][]byte, len(sizes))
	for i, n := range sizes {
		recs[i] = bytes.Repeat([]byte{byte(i + 1)}, n)
	}
	return recs
}

// TestGSORun: which records one UDP_SEGMENT message carries.
func TestGSORun(t *testing.T) {
	many := make([]int, GSOMaxSegments+5)
	for i := range many {
		many[i] = 100
	}
	for _, tc := range []struct {
		name  string
		sizes []int
		max   int
		want  int
	}{
		{"one", []int{100}, maxUDPPayload4, 1},
		{"equal run", []int{100, 100, 100}, maxUDPPayload4, 3},
		{"shorter record ends the run", []int{100, 100, 50, 50}, maxUDPPayload4, 3},
		{"longer record starts another", []int{100, 200, 200}, maxUDPPayload4, 1},
		{"empty record never coalesced", []int{100, 0, 100}, maxUDPPayload4, 1},
		{"segment limit", many, maxUDPPayload4, GSOMaxSegments},
		{"payload limit", []int{1000, 1000, 1000}, 2500, 2},
	} {
		if got := gsoRun(records(tc.sizes...), tc.max); got != tc.want {
			t.Errorf("%s: gsoRun(%v) = %d, want %d", tc.name, tc.sizes, got, tc.want)
		}
	}
}

// TestSegmentControl: the UDP_SEGMENT message written for a run is one the
// kernel's layout reads back.
func TestSegmentControl(t *testing.T) {
	c := make([]byte, gsoControlSize)
	putSegment(c, 1371)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	if h.Level != unix.SOL_UDP || h.Type != unix.UDP_SEGMENT || int(h.Len) != unix.CmsgLen(2) {
		t.Fatalf("header %+v", *h)
	}
	if got := binary.NativeEndian.Uint16(c[unix.CmsgLen(0):]); got != 1371 {
		t.Fatalf("segment %d", got)
	}
}

// TestSendRecv: every record arrives as its own datagram, in order and
// whole, with GSO on and off, on v4 and v6 sockets (v4 destinations on a
// v6 socket go v4-mapped).
func TestSendRecv(t *testing.T) {
	for _, tc := range []struct {
		name, network, lo string
		gso               bool
	}{
		{"v4 gso", "udp4", "127.0.0.1:0", true},
		{"v4 plain", "udp4", "127.0.0.1:0", false},
		{"v6 gso", "udp6", "[::1]:0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, tx := listen(t, tc.network, tc.lo)
			ruc, rx := listen(t, tc.network, tc.lo)
			if tc.gso && !tx.GSO.Load() {
				t.Skip("this kernel lacks UDP_SEGMENT")
			}
			recs := records(1200, 1200, 1200, 700, 1200, 0, 90, 90)
			dst := ruc.LocalAddr().(*net.UDPAddr).AddrPort()
			if err := tx.SendGSO(NewTx(len(recs)), recs, dst, tc.gso); err != nil {
				t.Fatal(err)
			}
			r := NewRx(len(recs), 0)
			bufs := make([][]byte, len(recs))
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			_ = ruc.SetReadDeadline(time.Now().Add(10 * time.Second))
			var got [][]byte
			for len(got) < len(recs) {
				n, err := rx.Recv(r, bufs)
				if err != nil {
					t.Fatalf("after %d datagrams: %v", len(got), err)
				}
				for i := 0; i < n; i++ {
					got = append(got, append([]byte(nil), bufs[i][:r.Size(i)]...))
				}
			}
			if g, w := lens(got), lens(recs); !equalInts(g, w) {
				t.Fatalf("sizes %v, want %v", g, w)
			}
			for i := range recs {
				if !bytes.Equal(got[i], recs[i]) {
					t.Fatalf("datagram %d differs", i)
				}
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRecvTruncatedAndSource: a datagram larger than its buffer is marked
// -1; the source address is the sender's.
func TestRecvTruncatedAndSource(t *testing.T) {
	suc, tx := listen(t, "udp4", "127.0.0.1:0")
	ruc, rx := listen(t, "udp4", "127.0.0.1:0")
	dst := ruc.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := tx.SendGSO(NewTx(2), records(100, 10), dst, false); err != nil {
		t.Fatal(err)
	}
	r := NewRx(2, 0)
	bufs := [][]byte{make([]byte, 50), make([]byte, 50)}
	_ = ruc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var sizes []int
	for len(sizes) < 2 {
		n, err := rx.Recv(r, bufs[:2-len(sizes)])
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			sizes = append(sizes, r.Size(i))
			if src := r.Src(i); src != suc.LocalAddr().(*net.UDPAddr).AddrPort() {
				t.Fatalf("source %v", src)
			}
		}
	}
	if sizes[0] != -1 || sizes[1] != 10 {
		t.Fatalf("sizes %v, want [-1 10]", sizes)
	}
}

func TestSendWrongFamily(t *testing.T) {
	_, tx := listen(t, "udp4", "127.0.0.1:0")
	err := tx.Send(&Tx{}, records(10), netip.MustParseAddrPort("[::1]:9"))
	if !errors.Is(err, ErrFamily) {
		t.Fatalf("v4 socket sending to ::1: %v, want ErrFamily", err)
	}
}

// TestParseControl: UDP_GRO size and SO_RXQ_OVFL read from a control
// buffer; a malformed header stops the walk.
func TestParseControl(t *testing.T) {
	b := make([]byte, 2*unix.CmsgSpace(4))
	put := func(c []byte, level, typ int32, v uint32) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(4))
		binary.NativeEndian.PutUint32(c[unix.CmsgLen(0):], v)
	}
	put(b, unix.SOL_UDP, unix.UDP_GRO, 1300)
	put(b[unix.CmsgSpace(4):], unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 7)
	if got := ParseControl(b); got != (Control{GROSize: 1300, Ovfl: 7, HasOvfl: true}) {
		t.Fatalf("got %+v", got)
	}
	ts := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&ts[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS
	h.SetLen(unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))))
	*(*unix.Timespec)(unsafe.Pointer(&ts[unix.CmsgLen(0)])) = unix.NsecToTimespec(1_700_000_000_123_456_789)
	if got := ParseControl(append(append([]byte(nil), b...), ts...)); got != (Control{GROSize: 1300, Ovfl: 7, HasOvfl: true, RxTime: 1_700_000_000_123_456_789}) {
		t.Fatalf("with a timestamp: got %+v", got)
	}
	bad := append([]byte(nil), b...)
	(*unix.Cmsghdr)(unsafe.Pointer(&bad[0])).Len = 1 << 20
	if got := ParseControl(bad); got != (Control{}) {
		t.Fatalf("overlong header: %+v", got)
	}
}

func FuzzParseControl(f *testing.F) {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	f.Add(b)
	ts := make([]byte, unix.CmsgSpace(16))
	h = (*unix.Cmsghdr)(unsafe.Pointer(&ts[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SCM_TIMESTAMPNS
	h.SetLen(unix.CmsgLen(16))
	f.Add(ts)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		if len(oob) > 0 {
			// Cmsghdr is read in place: keep it aligned as the kernel's is.
			a := make([]uint64, (len(oob)+7)/8)
			buf := unsafe.Slice((*byte)(unsafe.Pointer(&a[0])), len(oob))
			copy(buf, oob)
			oob = buf
		}
		_ = ParseControl(oob)
	})
}

// TestZeroAllocs: a steady Send and Recv allocate nothing per call.
func TestZeroAllocs(t *testing.T) {
	_, tx := listen(t, "udp4", "127.0.0.1:0")
	ruc, rx := listen(t, "udp4", "127.0.0.1:0")
	dst := ruc.LocalAddr().(*net.UDPAddr).AddrPort()
	recs := records(1200, 1200, 1200, 1200)
	bufs := make([][]byte, len(recs))
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	t1, r := NewTx(len(recs)), NewRx(len(recs), 64)
	_ = ruc.SetReadDeadline(time.Now().Add(30 * time.Second))
	allocs := testing.AllocsPerRun(20, func() {
		if err := tx.Send(t1, recs, dst); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(recs); {
			n, err := rx.Recv(r, bufs)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
}
