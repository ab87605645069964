//go:build e2e && bench

// Package bench is `make bench`: it measures meshd against the plain underlay,
// wireguard-go and Nebula side by side, in one run, in the network-namespace
// lab of package e2e/lab, and writes the table to docs/performance-lab.md.
//
// Each path gets its own pair of public lab hosts on the backbone bridge (two
// namespaces joined by veths and a bridge, no NAT), so that no tunnel can see
// another's interfaces: meshd's ICE would otherwise gather candidates on the
// wireguard-go and Nebula devices. meshd is measured three times: direct,
// relayed over TURN/UDP (the direct path blocked in the bridge, so the link
// goes through the coordinator's TURN server) and relayed over TURN/TCP
// (the direct path and all the two nodes' UDP blocked, so each reaches the
// relay only over its TURN stream); the relayed rows are compared with the
// direct one. Its link setup time is taken from the daemons' start to the
// first overlay ping reply. The plain underlay, wireguard-go and meshd
// direct are measured over an IPv6 underlay too, between two IPv6-only
// hosts (issue 16): their ratio is reported next to the IPv4 one.
//
// Measures per path: iperf3 TCP with one stream (repeated, the median kept)
// and with four streams, and ping's RTT of every reply (rounds of 200
// echoes 10 ms apart, one in flight at a time) as p50, p99 and mean, and
// the RTT each tunnel adds at p50 over the plain underlay of its family,
// with meshd's added RTT as a ratio to wireguard-go's (issue 19); then the
// same with echoes 1 ms apart, so that the machines stay warm between
// echoes (on a VM, waking from idle costs more than any tunnel's work). The TCP
// runs and the ping rounds of all paths are interleaved round by round, so
// that the VM's drift (±25% between runs) hits every path alike; compare
// paths by their ratio to wireguard-go measured in the same run, never
// across runs. Whether each tunnel's bulk data goes out as UDP GSO
// super-datagrams is read from nft counters in the backbone bridge (a GSO
// datagram crosses the veths and the bridge unsegmented, so it is seen
// there as one frame above the MTU).
//
// wireguard-go is built from this module's requirement, Nebula is built with
// `go install` (the newest v1 release the module proxy serves and this Go
// can build) into a temporary directory, and meshd from this checkout; a
// path whose program cannot be built or brought up is reported as not
// available, with the reason, and the others are still measured. The tests
// need root and scripts/lab-deps.sh --bench, and run only
// with both the e2e and bench build tags:
//
//	sudo go test -tags 'e2e bench' -run TestBench -count=1 -timeout 20m -v ./e2e/bench/
//
// Environment: MESHD_BENCH_SECONDS (iperf3 -t, default 8), MESHD_BENCH_RUNS
// (repetitions of the one-stream run and of the ping round, default 3),
// MESHD_BENCH_NEBULA (a Nebula version to use instead of the newest),
// MESHD_BENCH_OUT (the report, default docs/performance-lab.md in this
// checkout).
package bench
