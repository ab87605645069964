package record

import (
	"fmt"
	"testing"
)

// Benchmarks seal and open 1400-byte records (an MTU-sized IP packet) on
// one goroutine. Run: go test -run X -bench . ./tunnel/record/
func BenchmarkSeal(b *testing.B) {
	for _, c := range ciphers {
		b.Run(fmt.Sprintf("%v/1400", c), func(b *testing.B) {
			client, _ := newPair(b, "bench", c, Options{})
			buf := make([]byte, headroom+1400, headroom+1400+TagLen)
			b.SetBytes(1400)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.w.SealInPlace(buf, headroom, 1400); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
		})
	}
}

func BenchmarkSealBatch(b *testing.B) {
	for _, c := range ciphers {
		b.Run(fmt.Sprintf("%v/64x1400", c), func(b *testing.B) {
			client, _ := newPair(b, "bench", c, Options{})
			const batch = 64
			bufs, sizes, recs := make([][]byte, batch), make([]int, batch), make([][]byte, batch)
			for i := range bufs {
				bufs[i], sizes[i] = make([]byte, headroom+1400, headroom+1400+TagLen), 1400
			}
			b.SetBytes(batch * 1400)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.w.SealBatch(bufs, headroom, sizes, recs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*batch/b.Elapsed().Seconds(), "packets/s")
		})
	}
}

// BenchmarkOpen opens the same record again and again, as a receive loop
// opens a datagram the kernel just copied into a hot buffer: each op
// restores the record from a pristine copy (a 1400-byte copy, included in
// the figure; opening in place overwrites it) and forgets the sequence
// number in the replay window (two atomic stores), so the full path runs:
// framing, epoch lookup, replay check, AEAD open, replay accept.
func BenchmarkOpen(b *testing.B) {
	for _, c := range ciphers {
		b.Run(fmt.Sprintf("%v/1400", c), func(b *testing.B) {
			client, server := newPair(b, "bench", c, Options{})
			pristine := seal(b, client.w, payload(1400, 1))
			work := make([]byte, len(pristine))
			w := &server.s.recv.Load().cur.window
			b.SetBytes(1400)
			b.ReportAllocs()
			for b.Loop() {
				copy(work, pristine)
				w.top.Store(0)
				w.slots[0].Store(0)
				if _, err := server.r.OpenInPlace(work); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
		})
	}
}

// BenchmarkSealParallel: several goroutines sealing for one Session share
// its atomic sequence counter.
func BenchmarkSealParallel(b *testing.B) {
	client, _ := newPair(b, "bench", CipherAES128GCM, Options{})
	b.SetBytes(1400)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := client.s.NewSealer()
		buf := make([]byte, headroom+1400, headroom+1400+TagLen)
		for pb.Next() {
			if _, err := w.SealInPlace(buf, headroom, 1400); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAEADBaseline is the bare AEAD on the same buffer, for comparing
// the framing, counter and replay overhead against the cipher itself.
func BenchmarkAEADBaseline(b *testing.B) {
	for _, c := range ciphers {
		b.Run(fmt.Sprintf("%v/seal/1400", c), func(b *testing.B) {
			a := refAEAD(b, c, make([]byte, c.keyLen()))
			buf := make([]byte, 1400, 1400+TagLen)
			var nonce [IVLen]byte
			b.SetBytes(1400)
			for b.Loop() {
				a.Seal(buf[:0], nonce[:], buf, nil)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
		})
	}
}
