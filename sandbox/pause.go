package sandbox

import (
	"context"

	eventstypes "github.com/containerd/containerd/api/events"
)

// Event topics of pause and resume.
const (
	TopicTaskPaused  = "/tasks/paused"
	TopicTaskResumed = "/tasks/resumed"
)

// Pause freezes a running container and publishes TaskPaused.
func (m *Manager) Pause(ctx context.Context, id string) error {
	c, err := m.lookup(id, "pause")
	if err != nil {
		return err
	}
	if err := c.init.Pause(ctx); err != nil {
		return err
	}
	m.exits.publish(TopicTaskPaused, &eventstypes.TaskPaused{ContainerID: id})
	return nil
}

// Resume thaws a paused container and publishes TaskResumed.
func (m *Manager) Resume(ctx context.Context, id string) error {
	c, err := m.lookup(id, "resume")
	if err != nil {
		return err
	}
	if err := c.init.Resume(ctx); err != nil {
		return err
	}
	m.exits.publish(TopicTaskResumed, &eventstypes.TaskResumed{ContainerID: id})
	return nil
}
