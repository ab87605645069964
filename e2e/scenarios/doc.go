//go:build e2e

// Package scenarios runs meshd's end-to-end scenarios: the real meshd and
// meshctl binaries (built with lab.Build) in the network-namespace lab of
// package e2e/lab, behind every kind of NAT the lab makes. Each test is one
// scenario with a clear pass/fail and logs what it measured (times to
// connect, to fail over, to recover). The NAT matrix test also writes
// docs/nat-matrix.md.
//
// The tests need root, /dev/net/tun and the tools of scripts/lab-deps.sh,
// and run only with the e2e build tag:
//
//	sudo go test -tags e2e -count=1 -v ./e2e/scenarios/
//
// Scenarios run one after another: every meshd is a real process, and
// clusters in parallel would starve a small CI machine.
package scenarios
