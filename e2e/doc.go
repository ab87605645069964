//go:build e2e

// Package e2e holds meshd's end-to-end scenarios: real meshd and meshctl
// binaries (built with lab.Build) and reference programs such as coturn,
// run inside the network-namespace lab of package e2e/lab. The tests need
// root and the tools of scripts/lab-deps.sh, and run only with the e2e build
// tag: sudo go test -tags e2e ./e2e/...
package e2e
