package sandbox

import (
	"context"

	"google.golang.org/protobuf/proto"
)

// Stats returns a container's cgroup metrics: a cgroups v1 or v2 Metrics
// message, which the task service sends as it is.
func (m *Manager) Stats(ctx context.Context, id string) (proto.Message, error) {
	defer m.trim.nudge()
	c, err := m.lookup(id, "stats")
	if err != nil {
		return nil, err
	}
	return c.init.Stats(ctx)
}
