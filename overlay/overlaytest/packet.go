package overlaytest

import "github.com/meshd/meshd/overlay/internal/testpkt"

// Packet describes a test IP packet; Marshal builds it with valid
// checksums. The IP version follows Src (Src and Dst must be of one family).
type Packet = testpkt.Packet

// IP protocol numbers for Packet.Proto.
const (
	ProtoICMP   = testpkt.ProtoICMP
	ProtoTCP    = testpkt.ProtoTCP
	ProtoUDP    = testpkt.ProtoUDP
	ProtoICMPv6 = testpkt.ProtoICMPv6
)

// TCP flags for Packet.TCPFlags.
const (
	FIN = testpkt.FIN
	SYN = testpkt.SYN
	RST = testpkt.RST
	PSH = testpkt.PSH
	ACK = testpkt.ACK
)

// Checksum returns the Internet checksum of b (0 when b carries a valid one).
func Checksum(b []byte) uint16 { return testpkt.Checksum(b) }
