package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"
)

// UpdateResources applies res to a created or running container's cgroups
// (`runtime update --resources -`, the LinuxResources json on stdin).
func (r *Runtime) UpdateResources(ctx context.Context, id string, res *specs.LinuxResources) error {
	if err := validID(id); err != nil {
		return err
	}
	if res == nil {
		return nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("container %s: update: %w", id, err)
	}
	if _, err := r.run(ctx, id, "update", bytes.NewReader(b), "update", "--resources", "-", id); err != nil {
		if isNotExist(err) {
			return fmt.Errorf("%w: %w", err, ErrNotFound)
		}
		return err
	}
	klog.V(2).InfoS("Updated container resources", "runtime", r.name, "id", id)
	return nil
}
