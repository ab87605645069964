//go:build e2e

package scenarios

import (
	"testing"

	"github.com/meshd/meshd/e2e/lab"
)

func TestMain(m *testing.M) { lab.Main(m) }
