//go:build e2e

// Package demo is `make demo`: on a fresh machine, as root, it builds meshd
// and meshctl, creates a coordinator and two nodes behind different NATs
// (port-restricted cone and symmetric) in network namespaces, starts meshd
// on each, prints `meshctl status` and `meshctl peers` of every node, pings
// across the overlay, and tears everything down (also on Ctrl-C or
// failure: the lab's TestMain and cleanups see to that).
//
//	sudo go test -tags e2e -count=1 -v -run TestDemo ./e2e/demo/
package demo
