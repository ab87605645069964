package discovery

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/meshd/meshd/pki"
)

// roles.go: only coordinators act as coordinators. A certificate carries the
// coordinator role (pki.Identity.Coordinator, `meshctl cert sign
// --coordinator`); a node accepts a session only from a coordinator
// certificate (and, when ClientOptions.CoordinatorNames pins names, only
// from one of those), and a coordinator refuses to start without the role.

// verifyCoordinatorCert applies the pki policy to a coordinator's
// certificate: the role is required and, when names is not empty, the
// certificate's name must be one of them (ErrCoordinatorNotPinned).
func verifyCoordinatorCert(v *pki.Verifier, der []byte, now time.Time, names []string) (*pki.NodeCert, error) {
	nc, err := v.Verify([][]byte{der}, pki.Expect{Now: now, Coordinator: true})
	if errors.Is(err, pki.ErrSelf) {
		// The coordinator host's own node dials its own coordinator: the
		// chain, validity and revocation passed; the role is checked
		// here, since Verify stops at ErrSelf.
		if nc, err = pki.ParseNodeCert(der); err == nil && !nc.Identity.Coordinator {
			err = pki.ErrNotCoordinator
		}
	}
	if err != nil {
		return nil, err
	}
	if len(names) > 0 && !slices.Contains(names, nc.Identity.Name) {
		return nil, fmt.Errorf("%w: %q is not one of %q", ErrCoordinatorNotPinned, nc.Identity.Name, names)
	}
	return nc, nil
}
