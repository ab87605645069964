package overlay

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/meshd/meshd/overlay/internal/testpkt"
)

var (
	a4 = netip.MustParseAddr("100.64.0.1")
	b4 = netip.MustParseAddr("100.64.0.2")
	a6 = netip.MustParseAddr("fd7a:115c:a1e0::1")
	b6 = netip.MustParseAddr("fd7a:115c:a1e0::2")
)

func TestParse(t *testing.T) {
	tcp := testpkt.Packet{Src: a4, Dst: b4, Proto: testpkt.ProtoTCP, SrcPort: 40000, DstPort: 22, TCPFlags: testpkt.SYN, Payload: []byte("x")}.Marshal()
	udp6 := testpkt.Packet{Src: a6, Dst: b6, Proto: testpkt.ProtoUDP, SrcPort: 53, DstPort: 5353, Payload: make([]byte, 100)}.Marshal()
	echo := testpkt.Packet{Src: a4, Dst: b4, Proto: testpkt.ProtoICMP, ICMPType: 8, ICMPID: 77}.Marshal()
	echo6 := testpkt.Packet{Src: a6, Dst: b6, Proto: testpkt.ProtoICMPv6, ICMPType: 128, ICMPID: 78}.Marshal()
	frag := testpkt.Packet{Src: a4, Dst: b4, Proto: testpkt.ProtoUDP, FragOffset: 100, Payload: make([]byte, 3)}.Marshal()
	gre := testpkt.Packet{Src: a4, Dst: b4, Proto: 47, Payload: []byte{1, 2, 3}}.Marshal()
	padded := append(append([]byte(nil), tcp...), 0, 0, 0, 0)

	// IPv6 with hop-by-hop + destination options before TCP.
	tcp6 := testpkt.Packet{Src: a6, Dst: b6, Proto: testpkt.ProtoTCP, SrcPort: 1, DstPort: 443}.Marshal()
	ext := make([]byte, 40+8+16+20)
	copy(ext, tcp6[:40])
	ext[6] = 0                  // hop-by-hop
	ext[40] = 60                // → destination options
	ext[41] = 0                 // 8 bytes
	ext[48] = protoTCP          // → TCP
	ext[49] = 1                 // 16 bytes
	copy(ext[64:], tcp6[40:60]) // TCP header
	binary.BigEndian.PutUint16(ext[4:], uint16(len(ext)-40))
	// IPv6 non-first fragment.
	frag6 := make([]byte, 40+8+8)
	copy(frag6, tcp6[:40])
	frag6[6] = 44
	frag6[40] = protoUDP
	binary.BigEndian.PutUint16(frag6[42:], 8<<3)
	binary.BigEndian.PutUint16(frag6[4:], 16)

	tests := []struct {
		name    string
		b       []byte
		want    packet
		wantErr error
	}{
		{"ipv4 tcp", tcp, packet{src: a4, dst: b4, length: len(tcp), l4: 20, proto: protoTCP, srcPort: 40000, dstPort: 22, tcpFlags: testpkt.SYN}, nil},
		{"ipv4 tcp trailing padding is ignored", padded, packet{src: a4, dst: b4, length: len(tcp), l4: 20, proto: protoTCP, srcPort: 40000, dstPort: 22, tcpFlags: testpkt.SYN}, nil},
		{"ipv6 udp", udp6, packet{src: a6, dst: b6, length: len(udp6), l4: 40, proto: protoUDP, v6: true, df: true, srcPort: 53, dstPort: 5353}, nil},
		{"ipv4 echo", echo, packet{src: a4, dst: b4, length: len(echo), l4: 20, proto: protoICMP, icmpType: 8, icmpID: 77}, nil},
		{"ipv6 echo", echo6, packet{src: a6, dst: b6, length: len(echo6), l4: 40, proto: protoICMPv6, v6: true, df: true, icmpType: 128, icmpID: 78}, nil},
		{"ipv4 non-first fragment", frag, packet{src: a4, dst: b4, length: len(frag), proto: protoUDP, frag: true}, nil},
		{"ipv4 other protocol", gre, packet{src: a4, dst: b4, length: len(gre), proto: 47}, nil},
		{"ipv6 extension headers", ext, packet{src: a6, dst: b6, length: len(ext), l4: 64, proto: protoTCP, v6: true, df: true, srcPort: 1, dstPort: 443}, nil},
		{"ipv6 non-first fragment", frag6, packet{src: a6, dst: b6, length: len(frag6), proto: protoUDP, v6: true, df: true, frag: true}, nil},

		{"empty", nil, packet{}, errTruncated},
		{"bad version", append([]byte{0x50}, tcp[1:]...), packet{}, errBadVersion},
		{"ipv4 truncated header", tcp[:19], packet{}, errTruncated},
		{"ipv4 bad IHL", append([]byte{0x44}, tcp[1:]...), packet{}, errBadIHL},
		{"ipv4 IHL beyond packet", append([]byte{0x4f}, tcp[1:30]...), packet{}, errLengthMismatch},
		{"ipv4 length beyond buffer", tcp[:len(tcp)-1], packet{}, errLengthMismatch},
		{"ipv4 length below header", func() []byte { b := append([]byte(nil), tcp...); binary.BigEndian.PutUint16(b[2:], 10); return b }(), packet{}, errLengthMismatch},
		{"ipv4 tcp header truncated", func() []byte {
			b := append([]byte(nil), tcp[:30]...)
			binary.BigEndian.PutUint16(b[2:], 30)
			return b
		}(), packet{}, errShortL4},
		{"ipv4 tcp bad data offset", func() []byte { b := append([]byte(nil), tcp...); b[32] = 0x40; return b }(), packet{}, errBadTCPOffset},
		{"ipv6 truncated header", udp6[:39], packet{}, errTruncated},
		{"ipv6 payload length beyond buffer", udp6[:len(udp6)-1], packet{}, errLengthMismatch},
		{"ipv6 extension header truncated", func() []byte {
			b := append([]byte(nil), ext[:44]...)
			binary.BigEndian.PutUint16(b[4:], 4)
			return b
		}(), packet{}, errTruncated},
		{"ipv6 extension header loop", func() []byte {
			b := make([]byte, 40+8*10)
			copy(b, udp6[:40])
			b[6] = 60
			for i := 0; i < 10; i++ {
				b[40+8*i] = 60
			}
			binary.BigEndian.PutUint16(b[4:], 80)
			return b
		}(), packet{}, errTooManyExt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p packet
			err := p.parse(tt.b)
			if tt.wantErr != nil {
				if err != tt.wantErr {
					t.Fatalf("parse error = %v, want %v", err, tt.wantErr)
				}
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("%v is not ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if p != tt.want {
				t.Fatalf("parse =\n %+v\nwant\n %+v", p, tt.want)
			}
		})
	}
}

func TestParseAllocs(t *testing.T) {
	b := testpkt.Packet{Src: a6, Dst: b6, Proto: testpkt.ProtoTCP, SrcPort: 1, DstPort: 2}.Marshal()
	bad := []byte{0x45, 0, 0}
	var p packet
	if n := testing.AllocsPerRun(100, func() { _ = p.parse(b); _ = p.parse(bad) }); n != 0 {
		t.Fatalf("parse allocates %v times per run", n)
	}
}

func TestParseEmbedded(t *testing.T) {
	// Node b4 tells us (a4) that our UDP packet to c could not be delivered.
	c := netip.MustParseAddr("100.64.0.9")
	orig := testpkt.Packet{Src: a4, Dst: c, Proto: testpkt.ProtoUDP, SrcPort: 1111, DstPort: 2222, Payload: []byte("hello")}.Marshal()
	icmp := testpkt.Packet{Src: b4, Dst: a4, Proto: testpkt.ProtoICMP, ICMPType: 3, ICMPCode: 3, Payload: orig[:28]}.Marshal()
	var p, q packet
	if err := p.parse(icmp); err != nil {
		t.Fatal(err)
	}
	if !p.isICMPError() {
		t.Fatal("not an ICMP error")
	}
	if !p.parseEmbedded(icmp, &q) {
		t.Fatal("embedded packet not parsed")
	}
	if q.src != a4 || q.dst != c || q.proto != protoUDP || q.srcPort != 1111 || q.dstPort != 2222 {
		t.Fatalf("embedded = %+v", q)
	}
	// Too short to hold the embedded ports.
	short := testpkt.Packet{Src: b4, Dst: a4, Proto: testpkt.ProtoICMP, ICMPType: 3, ICMPCode: 3, Payload: orig[:24]}.Marshal()
	_ = p.parse(short)
	if p.parseEmbedded(short, &q) {
		t.Fatal("embedded packet without ports accepted")
	}
	// An echo request is not an error.
	echo := testpkt.Packet{Src: b4, Dst: a4, Proto: testpkt.ProtoICMP, ICMPType: 8, Payload: orig}.Marshal()
	_ = p.parse(echo)
	if p.parseEmbedded(echo, &q) {
		t.Fatal("echo parsed as an error")
	}
}

// FuzzParse: parsing arbitrary bytes never panics, and what it accepts is
// consistent with the buffer; the ICMP error path and the embedded parser
// never panic either.
func FuzzParse(f *testing.F) {
	f.Add(testpkt.Packet{Src: a4, Dst: b4, Proto: testpkt.ProtoTCP, SrcPort: 1, DstPort: 2}.Marshal())
	f.Add(testpkt.Packet{Src: a6, Dst: b6, Proto: testpkt.ProtoUDP, SrcPort: 1, DstPort: 2}.Marshal())
	f.Add(testpkt.Packet{Src: a4, Dst: b4, Proto: testpkt.ProtoICMP, ICMPType: 3, Payload: testpkt.Packet{Src: b4, Dst: a4, Proto: testpkt.ProtoUDP}.Marshal()}.Marshal())
	f.Add(testpkt.Packet{Src: a6, Dst: b6, Proto: testpkt.ProtoICMPv6, ICMPType: 1, Payload: testpkt.Packet{Src: b6, Dst: a6, Proto: testpkt.ProtoTCP}.Marshal()}.Marshal())
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 0, 64})
	f.Add([]byte{0x4f})
	out := make([]byte, icmpBufSize)
	f.Fuzz(func(t *testing.T, b []byte) {
		var p, q packet
		if err := p.parse(b); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if p.length > len(b) || p.l4 > p.length {
			t.Fatalf("inconsistent parse of %d bytes: %+v", len(b), p)
		}
		p.parseEmbedded(b, &q)
		for _, kind := range []int{icmpUnreachable, icmpTooBig} {
			if n := buildICMPError(out, b, &p, kind, 1280); n > 0 {
				var r packet
				if err := r.parse(out[HeaderRoom : HeaderRoom+n]); err != nil || !r.isICMPError() {
					t.Fatalf("built ICMP error does not parse as one: %v %+v", err, r)
				}
			}
		}
	})
}
