package tunnel

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/pion/stun/v4"
)

// TestTURNClientFramesBothFamilies: the idle gate and the permission
// back-off read the peer of a Send indication or permission request the
// relay client writes; an IPv6 peer (a relay of either family reaching a
// node over IPv6) must be read as well as an IPv4 one. Before, the Send
// indication's peer was read for IPv4 only.
func TestTURNClientFramesBothFamilies(t *testing.T) {
	for _, peer := range []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.7:51830"),
		netip.MustParseAddrPort("[2001:db8::7]:51830"),
	} {
		t.Run(peer.Addr().String(), func(t *testing.T) {
			xor := &stun.XORMappedAddress{IP: net.IP(peer.Addr().AsSlice()), Port: int(peer.Port())}
			send, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
				stun.RawAttribute{Type: stun.AttrData, Value: []byte("payload")},
				setterFunc(func(m *stun.Message) error { return xor.AddToAs(m, stun.AttrXORPeerAddress) }))
			if err != nil {
				t.Fatal(err)
			}
			data, got := unwrapTURN(send.Raw)
			if !bytes.Equal(data, []byte("payload")) || got != peer {
				t.Errorf("unwrapTURN = %q, %v; want %q, %v", data, got, "payload", peer)
			}
			perm, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest),
				setterFunc(func(m *stun.Message) error { return xor.AddToAs(m, stun.AttrXORPeerAddress) }))
			if err != nil {
				t.Fatal(err)
			}
			if got := xorPeerAddrs(perm.Raw); !slices.Equal(got, []netip.Addr{peer.Addr()}) {
				t.Errorf("xorPeerAddrs = %v, want [%v]", got, peer.Addr())
			}
		})
	}
}
