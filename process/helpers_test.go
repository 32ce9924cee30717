package process

import (
	"fmt"

	"github.com/containerd/errdefs"
)

// errNotFound is how the runtime answers for a container it does not have.
var errNotFound = fmt.Errorf("container does not exist: %w", errdefs.ErrNotFound)
