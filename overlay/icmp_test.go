package overlay

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/meshd/meshd/overlay/internal/testpkt"
)

func TestBuildICMPError(t *testing.T) {
	out := make([]byte, icmpBufSize)
	tests := []struct {
		name     string
		orig     testpkt.Packet
		kind     int
		wantType uint8
		wantCode uint8
	}{
		{"v4 unreachable", tcpIn(local4, peerC4, 40000, 22), icmpUnreachable, 3, 1},
		{"v4 too big", testpkt.Packet{Src: local4, Dst: peerB4, Proto: testpkt.ProtoUDP, DF: true, Payload: make([]byte, 1400)}, icmpTooBig, 3, 4},
		{"v6 unreachable", tcpIn(local6, netip.MustParseAddr("fd7a::99"), 40000, 22), icmpUnreachable, 1, 3},
		{"v6 too big", testpkt.Packet{Src: local6, Dst: peerB6, Proto: testpkt.ProtoUDP, Payload: make([]byte, 1400)}, icmpTooBig, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig := tt.orig.Marshal()
			var p packet
			if err := p.parse(orig); err != nil {
				t.Fatal(err)
			}
			n := buildICMPError(out, orig, &p, tt.kind, 1300)
			if n == 0 {
				t.Fatal("no ICMP error built")
			}
			b := out[HeaderRoom : HeaderRoom+n]
			var r packet
			if err := r.parse(b); err != nil {
				t.Fatalf("ICMP error does not parse: %v", err)
			}
			// It comes from the unreachable destination, to the sender.
			if r.src != p.dst || r.dst != p.src {
				t.Fatalf("ICMP error %v → %v, want %v → %v", r.src, r.dst, p.dst, p.src)
			}
			if r.icmpType != tt.wantType || r.icmpCode != tt.wantCode {
				t.Fatalf("type/code %d/%d, want %d/%d", r.icmpType, r.icmpCode, tt.wantType, tt.wantCode)
			}
			icmp := b[r.l4:]
			if !r.v6 {
				if testpkt.Checksum(b[:20]) != 0 {
					t.Fatal("bad IPv4 header checksum")
				}
				if testpkt.Checksum(icmp) != 0 {
					t.Fatal("bad ICMP checksum")
				}
				if len(b) > 576 {
					t.Fatalf("ICMPv4 error of %d bytes exceeds 576", len(b))
				}
			} else {
				if checksum(icmp, pseudoSum6(b[8:24], b[24:40], len(icmp))) != 0 {
					t.Fatal("bad ICMPv6 checksum")
				}
				if len(b) > 1280 {
					t.Fatalf("ICMPv6 error of %d bytes exceeds 1280", len(b))
				}
			}
			if tt.kind == icmpTooBig {
				var mtu uint32
				if r.v6 {
					mtu = binary.BigEndian.Uint32(icmp[4:8])
				} else {
					mtu = uint32(binary.BigEndian.Uint16(icmp[6:8]))
				}
				if mtu != 1300 {
					t.Fatalf("reported MTU %d, want 1300", mtu)
				}
			}
			// It embeds the start of the original packet, which the sender's
			// stack uses to find the socket.
			if emb := icmp[8:]; !bytes.HasPrefix(orig, emb) || len(emb) < 28 {
				t.Fatalf("embedded %d bytes do not match the original", len(emb))
			}
			var q packet
			if !r.parseEmbedded(b, &q) || q.src != p.src || q.dst != p.dst || q.dstPort != p.dstPort {
				t.Fatalf("embedded packet = %+v", q)
			}
		})
	}
}

func TestICMPErrorNotSent(t *testing.T) {
	out := make([]byte, icmpBufSize)
	for _, tt := range []struct {
		name string
		pkt  testpkt.Packet
	}{
		{"about an ICMP error", testpkt.Packet{Src: local4, Dst: peerC4, Proto: testpkt.ProtoICMP, ICMPType: 3, Payload: tcpIn(peerC4, local4, 1, 2).Marshal()}},
		{"about an ICMPv6 error", testpkt.Packet{Src: local6, Dst: peerB6, Proto: testpkt.ProtoICMPv6, ICMPType: 1, Payload: tcpIn(peerB6, local6, 1, 2).Marshal()}},
		{"to multicast", udpPkt(local4, netip.MustParseAddr("224.0.0.251"), 5353, 5353)},
		{"to v6 multicast", udpPkt(local6, netip.MustParseAddr("ff02::fb"), 5353, 5353)},
		{"to broadcast", udpPkt(local4, netip.MustParseAddr("255.255.255.255"), 67, 68)},
		{"from unspecified", udpPkt(netip.MustParseAddr("0.0.0.0"), peerB4, 68, 67)},
		{"non-first fragment", testpkt.Packet{Src: local4, Dst: peerC4, Proto: testpkt.ProtoUDP, FragOffset: 10}},
	} {
		b := tt.pkt.Marshal()
		var p packet
		if err := p.parse(b); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if n := buildICMPError(out, b, &p, icmpUnreachable, 1300); n != 0 {
			t.Errorf("%s: ICMP error built", tt.name)
		}
	}
	// Echo requests do get answered.
	b := echoReq(local4, peerC4, 1).Marshal()
	var p packet
	_ = p.parse(b)
	if buildICMPError(out, b, &p, icmpUnreachable, 1300) == 0 {
		t.Error("no ICMP error about an echo request")
	}
}

func TestTokenBucket(t *testing.T) {
	var tb tokenBucket
	now := int64(time.Hour)
	tb.last = now
	tb.credit = icmpBurst * (int64(time.Second) / icmpRate)
	n := 0
	for range 1000 {
		if tb.allow(now) {
			n++
		}
	}
	if n != icmpBurst {
		t.Fatalf("burst allowed %d, want %d", n, icmpBurst)
	}
	// Over one second, about icmpRate more.
	n = 0
	for k := range 1000 {
		if tb.allow(now + int64(k+1)*int64(time.Millisecond)) {
			n++
		}
	}
	if n < icmpRate-1 || n > icmpRate+1 {
		t.Fatalf("one second allowed %d, want about %d", n, icmpRate)
	}
}
