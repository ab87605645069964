package config

import (
	"errors"
	"slices"
	"testing"
)

// TestJoinCoordinatorNames: join.coordinator_names pins coordinator names;
// names follow the node-name rule and appear once.
func TestJoinCoordinatorNames(t *testing.T) {
	base := "[node]\nname = \"n1\"\n[pki]\nca = \"/ca.crt\"\ncert = \"/n.crt\"\nkey = \"/n.key\"\n[join]\ncoordinators = [\"c.example.net\"]\n"
	tests := []struct {
		names string
		want  []string
		bad   bool
	}{
		{`[]`, nil, false},
		{`["c1", "c2"]`, []string{"c1", "c2"}, false},
		{`["c1", "c1"]`, nil, true},
		{`["Not A Name"]`, nil, true},
		{`[""]`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.names, func(t *testing.T) {
			cfg, err := Parse("test.toml", []byte(base+"coordinator_names = "+tt.names+"\n"))
			if tt.bad {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("coordinator_names = %s: %v, want ErrInvalid", tt.names, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Join.CoordinatorNames, tt.want) {
				t.Fatalf("got %q, want %q", cfg.Join.CoordinatorNames, tt.want)
			}
		})
	}
}
