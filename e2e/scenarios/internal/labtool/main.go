// Command labtool is the scenarios' traffic tool, run inside lab namespaces
// with `ip netns exec`: a TCP sink that reports progress and checksums, a
// sender that checks the sink got every byte, a generator of malformed
// datagrams and TCP streams, and an HTTP getter (for metrics).
//
//	labtool sink -listen A:P                 prints "ready", then one JSON line per progress tick and per finished stream
//	labtool send -to A:P -bytes N [-rate B/s] [-timeout D]
//	labtool garbage -udp A:P,... -tcp A:P,... -unix PATH,... -duration D -max N [-seed S]
//	labtool get -url URL [-timeout D]
//	labtool vpn -dev NAME -listen A:P -to A:P
//
// send prints one JSON result and exits 0 when the sink confirmed the byte
// count and SHA-256 of what was sent, 1 otherwise. garbage prints one JSON
// summary. Nothing here knows meshd; it only moves bytes.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "labtool:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: labtool sink|send|garbage|get|vpn [flags]")
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	listen := fs.String("listen", "", "sink: TCP listen address")
	to := fs.String("to", "", "send: TCP address of the sink")
	n := fs.Int64("bytes", 1<<20, "send: how many bytes")
	rate := fs.Int64("rate", 0, "send: bytes per second; 0 = as fast as TCP goes")
	timeout := fs.Duration("timeout", 60*time.Second, "send, get: give up after this long")
	udp := fs.String("udp", "", "garbage: comma-separated UDP targets")
	tcp := fs.String("tcp", "", "garbage: comma-separated TCP targets")
	unix := fs.String("unix", "", "garbage: comma-separated unix stream socket paths")
	dur := fs.Duration("duration", 5*time.Second, "garbage: how long to send")
	maxN := fs.Int("max", 20000, "garbage: at most this many datagrams and streams in all")
	seed := fs.Uint64("seed", 1, "garbage: random seed")
	url := fs.String("url", "", "get: URL")
	dev := fs.String("dev", "", "vpn: TUN device to create")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "sink":
		return sink(*listen)
	case "send":
		return send(*to, *n, *rate, *timeout)
	case "garbage":
		return garbage(split(*udp), split(*tcp), split(*unix), *dur, *maxN, *seed)
	case "get":
		return get(*url, *timeout)
	case "vpn":
		return vpn(*dev, *listen, *to)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// sinkLine is one line of the sink's output. Progress lines have Bytes so
// far and no Done; the last line of a stream has Done and the checksum.
type sinkLine struct {
	Conn   int    `json:"conn"`
	From   string `json:"from"`
	Time   int64  `json:"t"` // unix nanoseconds
	Bytes  int64  `json:"bytes"`
	Done   bool   `json:"done,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
	Error  string `json:"error,omitempty"`
}

// sink accepts TCP streams, reads each to EOF, answers with the byte count
// and SHA-256, and prints progress every 50ms while bytes arrive, so a
// scenario can see when traffic stalled and when it resumed.
func sink(listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() { <-ctx.Done(); ln.Close() }()
	var outMu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(l sinkLine) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(l)
	}
	fmt.Println("ready")
	var id int
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		id++
		go serveSink(c, id, emit)
	}
}

func serveSink(c net.Conn, id int, emit func(sinkLine)) {
	defer c.Close()
	from := c.RemoteAddr().String()
	var total atomic.Int64
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		last := int64(-1)
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				if b := total.Load(); b != last {
					last = b
					emit(sinkLine{Conn: id, From: from, Time: now.UnixNano(), Bytes: b})
				}
			}
		}
	}()
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var err error
	for {
		var n int
		n, err = c.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			total.Add(int64(n))
		}
		if err != nil {
			break
		}
	}
	close(done)
	sum := h.Sum(nil)
	l := sinkLine{Conn: id, From: from, Time: time.Now().UnixNano(), Bytes: total.Load(), Done: true, SHA256: hex.EncodeToString(sum)}
	if !errors.Is(err, io.EOF) {
		l.Error = err.Error()
		emit(l)
		return
	}
	var ack [8 + sha256.Size]byte
	binary.BigEndian.PutUint64(ack[:8], uint64(total.Load()))
	copy(ack[8:], sum)
	_, _ = c.Write(ack[:])
	emit(l)
}

// sendResult is send's output.
type sendResult struct {
	Bytes    int64  `json:"bytes"`
	Acked    int64  `json:"acked"`
	Duration int64  `json:"duration_ns"`
	OK       bool   `json:"ok"`
	Error    string `json:"error,omitempty"`
}

// send streams n pseudo-random bytes to the sink, optionally paced, and
// checks the sink's count and checksum.
func send(to string, n, rate int64, timeout time.Duration) error {
	start := time.Now()
	res := sendResult{Bytes: n}
	err := sendOnce(to, n, rate, timeout, &res)
	res.Duration = int64(time.Since(start))
	if err != nil {
		res.Error = err.Error()
	}
	res.OK = err == nil
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return err
}

func sendOnce(to string, n, rate int64, timeout time.Duration, res *sendResult) error {
	deadline := time.Now().Add(timeout)
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial("tcp", to)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	h := sha256.New()
	buf := make([]byte, 16<<10)
	start := time.Now()
	var sent int64
	for sent < n {
		chunk := min(int64(len(buf)), n-sent)
		for i := range buf[:chunk] {
			buf[i] = byte(r.Uint32())
		}
		if rate > 0 {
			// Pace: the chunk may leave once the average stays under rate.
			due := start.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			}
		}
		if _, err := c.Write(buf[:chunk]); err != nil {
			return fmt.Errorf("write after %d bytes: %w", sent, err)
		}
		h.Write(buf[:chunk])
		sent += chunk
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	var ack [8 + sha256.Size]byte
	if _, err := io.ReadFull(bufio.NewReader(c), ack[:]); err != nil {
		return fmt.Errorf("no acknowledgement from the sink: %w", err)
	}
	res.Acked = int64(binary.BigEndian.Uint64(ack[:8]))
	if res.Acked != n {
		return fmt.Errorf("sink got %d bytes, sent %d", res.Acked, n)
	}
	if string(ack[8:]) != string(h.Sum(nil)) {
		return errors.New("sink's SHA-256 differs from what was sent")
	}
	return nil
}

// garbageResult is garbage's output.
type garbageResult struct {
	Datagrams int `json:"datagrams"`
	Streams   int `json:"streams"`
	Refused   int `json:"refused"` // TCP connects that failed
	Bytes     int `json:"bytes"`
}

// garbage sends malformed traffic: random datagrams of random sizes, and
// datagrams that start like the protocols a meshd port speaks (STUN, DTLS
// records, TURN ChannelData) with corrupt bodies; and TCP streams of random
// bytes, of a TLS ClientHello prefix followed by junk, and of a length
// prefix promising far more than follows.
func garbage(udp, tcp, unix []string, dur time.Duration, maxN int, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var res garbageResult
	var conns []net.Conn
	for _, a := range udp {
		c, err := net.Dial("udp", a)
		if err != nil {
			return err
		}
		defer c.Close()
		conns = append(conns, c)
	}
	// Each round: one datagram to every UDP target; every tenth round one
	// stream to every stream target; then a millisecond's pause, so the
	// rate is bounded (about 1000 datagrams per second per target): the
	// point is malformed input, not a flood.
	end := time.Now().Add(dur)
	count := 0
	for round := 0; time.Now().Before(end) && count < maxN; round++ {
		for _, c := range conns {
			b := badDatagram(r)
			// ECONNREFUSED from an earlier ICMP is expected; keep going.
			_, _ = c.Write(b)
			res.Datagrams++
			res.Bytes += len(b)
			count++
		}
		if round%10 == 0 {
			for _, t := range append(tagged("tcp", tcp), tagged("unix", unix)...) {
				n, err := badStream(r, t[0], t[1])
				if err != nil {
					res.Refused++
				}
				res.Streams++
				res.Bytes += n
				count++
			}
		}
		time.Sleep(time.Millisecond)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func tagged(network string, addrs []string) [][2]string {
	out := make([][2]string, len(addrs))
	for i, a := range addrs {
		out[i] = [2]string{network, a}
	}
	return out
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func badDatagram(r *rand.Rand) []byte {
	switch r.IntN(6) {
	case 0: // pure noise, any size up to a jumbo-ish datagram
		return randBytes(r, r.IntN(1500))
	case 1: // STUN header with the magic cookie, lying length, random attributes
		b := randBytes(r, 20+r.IntN(200))
		b[0], b[1] = 0x00, 0x01
		binary.BigEndian.PutUint16(b[2:], uint16(r.IntN(4096)))
		binary.BigEndian.PutUint32(b[4:], 0x2112A442)
		return b
	case 2: // DTLS record header (handshake or application data), junk body
		b := randBytes(r, 13+r.IntN(1400))
		b[0] = []byte{20, 21, 22, 23}[r.IntN(4)]
		b[1], b[2] = 0xfe, 0xfd
		binary.BigEndian.PutUint16(b[11:], uint16(r.IntN(65536)))
		return b
	case 3: // TURN ChannelData with a bogus channel and length
		b := randBytes(r, 4+r.IntN(600))
		binary.BigEndian.PutUint16(b[0:], uint16(0x4000+r.IntN(0x4000)))
		binary.BigEndian.PutUint16(b[2:], uint16(r.IntN(65536)))
		return b
	case 4: // empty and one-byte datagrams
		return randBytes(r, r.IntN(2))
	default: // a valid-looking STUN Binding request with a random transaction
		b := make([]byte, 20)
		b[0], b[1] = 0x00, 0x01
		binary.BigEndian.PutUint32(b[4:], 0x2112A442)
		copy(b[8:], randBytes(r, 12))
		return b
	}
}

func badStream(r *rand.Rand, network, addr string) (int, error) {
	c, err := net.DialTimeout(network, addr, 500*time.Millisecond)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	var b []byte
	switch r.IntN(5) {
	case 0:
		b = randBytes(r, r.IntN(8192))
	case 4: // an HTTP request that lies about its body, then junk
		b = append([]byte("POST /v1/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{\"peer\":"), randBytes(r, r.IntN(300))...)
	case 1: // TLS handshake record header, then junk
		b = append([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}, randBytes(r, r.IntN(600))...)
	case 2: // a length prefix promising 4 GB, then a trickle
		b = append([]byte{0xff, 0xff, 0xff, 0xff}, randBytes(r, 16)...)
	default: // connect and close at once
	}
	n, _ := c.Write(b)
	return n, nil
}

// get prints the body of an HTTP GET.
func get(url string, timeout time.Duration) error {
	cl := http.Client{Timeout: timeout}
	resp, err := cl.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}
