package tunnel

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"github.com/pion/stun/v4"

	"github.com/meshd/meshd/internal/testutil"
)

// BenchmarkRelayStreamSend measures the client's relayed send path over a
// TURN stream alone: 1400-byte records framed as ChannelData (padded) and
// written in batches of 32, one write per batch (writev on TCP, one
// tls.Conn.Write on TLS), to a loopback sink that discards them. One op is
// one packet; allocs/op is the send path's (0).
func BenchmarkRelayStreamSend(b *testing.B) {
	for _, secure := range []bool{false, true} {
		name := "tcp"
		if secure {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			cert, roots := selfSignedLoopbackCert(b)
			done := make(chan struct{})
			go func() {
				defer close(done)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				if secure {
					c = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				}
				buf := make([]byte, 1<<16)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			if secure {
				tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
				if err := tc.Handshake(); err != nil {
					b.Fatal(err)
				}
				c = tc
			}
			s := newTurnStream(c, nil, nil)
			s.fast.tab.Store(&relayTable{chans: []relayChan{{num: fixtureChan, peer: fixturePeer, ready: true}}})
			const size, batch = 1400, 32
			recs := make([][]byte, batch)
			for i := range recs {
				recs[i] = make([]byte, chanHdrLen+size+29)
			}
			b.ReportAllocs()
			b.SetBytes(size)
			b.ResetTimer()
			for sent := 0; sent < b.N; sent += batch {
				n := min(batch, b.N-sent)
				if ok, err := s.sendRecords(nil, recs[:n], fixturePeer); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
			_ = s.Close()
			<-done
		})
	}
}

// BenchmarkRelayStreamReceive measures the stream reader alone: chunks of
// 1024 ChannelData frames of 1400-byte records (sealed outside the timer)
// read off the stream, parsed, opened and delivered in batches. One op is
// one packet; allocs/op is the receive path's (0).
func BenchmarkRelayStreamReceive(b *testing.B) {
	f := newStreamFixture(b)
	f.l.SetReceiver(func([][]byte, int) {})
	const size, chunk = 1400, 1024
	end := stunMessage(b, stun.NewType(stun.MethodRefresh, stun.ClassSuccessResponse))
	payload := fmt.Sprintf("%*d", size, 0)
	var stream []byte
	p := make([]byte, 1<<16)
	b.ReportAllocs()
	b.SetBytes(size)
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		b.StopTimer()
		stream = stream[:0]
		for range min(chunk, b.N-done) {
			stream = append(stream, tcpChannelData(fixtureChan, f.record(b, payload))...)
		}
		stream = append(stream, end...)
		f.conn.chunks = append(f.conn.chunks[:0], stream)
		b.StartTimer()
		if _, err := f.s.Read(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkRelayStreamLink is BenchmarkRelayLink with the TURN server
// reached over TCP (pion's plain server, in this process: its allocations
// count here too): 1400-byte packets in batches of 32 from alpha to bravo,
// at most 4096 in flight. One op is one packet.
func BenchmarkRelayStreamLink(b *testing.B) {
	testutil.LeakCheck(b)
	srv := startLoopbackTURN(b)
	ab, ba, _, _ := relayedPairVia(b, srv, "turn:"+srv.tcpAddr+"?transport=tcp", fastStreamReady)
	var got atomic.Uint64
	ba.SetReceiver(func(bufs [][]byte, _ int) { got.Add(uint64(len(bufs))) })
	measureLink(b, ab, &got, 4096)
}
