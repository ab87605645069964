//go:build e2e && bench

package bench

import (
	"testing"

	"github.com/meshd/meshd/e2e/lab"
)

func TestMain(m *testing.M) { lab.Main(m) }
