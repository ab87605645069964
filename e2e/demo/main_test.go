//go:build e2e

package demo

import (
	"testing"

	"github.com/meshd/meshd/e2e/lab"
)

// TestMain tears the lab down on Ctrl-C (SIGINT), SIGTERM or a timeout.
func TestMain(m *testing.M) { lab.Main(m) }
