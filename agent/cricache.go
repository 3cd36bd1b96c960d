package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criCache makes the pod workers' observations cheap, as the kubelet's
// PLEG relist is: one ListPodSandbox and one ListContainers of all the
// agent's pods serve every worker that syncs within snapshotMaxAge, and a
// container's ContainerStatus is asked again only when the list shows it
// in another state (a running container's status does not change, an
// exited one's never will). Without it each pod cost four CRI calls a
// second at idle (measured by make bench-cluster: ~7x the kubelet's).
type criCache struct {
	mu     sync.Mutex
	at     time.Time
	sbs    []*runtimeapi.PodSandbox
	ctrs   []*runtimeapi.Container
	status map[string]*runtimeapi.ContainerStatus // by container id
	ips    map[string][]string                    // ready sandbox id → pod IPs
}

func newCRICache() *criCache {
	return &criCache{status: map[string]*runtimeapi.ContainerStatus{}, ips: map[string][]string{}}
}

// snapshot lists the agent's sandboxes and containers, reusing a list not
// older than maxAge (0: always list).
func (c *criCache) snapshot(ctx context.Context, rt runtimeLister, now time.Time, maxAge time.Duration) ([]*runtimeapi.PodSandbox, []*runtimeapi.Container, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if maxAge > 0 && !c.at.IsZero() && now.Sub(c.at) < maxAge {
		return c.sbs, c.ctrs, nil
	}
	sel := map[string]string{labelManagedBy: managedByAgent}
	sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: sel})
	if err != nil {
		return nil, nil, fmt.Errorf("list sandboxes: %w", err)
	}
	ctrs, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel})
	if err != nil {
		return nil, nil, fmt.Errorf("list containers: %w", err)
	}
	c.sbs, c.ctrs, c.at = sbs, ctrs, now
	// Forget what is gone.
	live := make(map[string]bool, len(ctrs)+len(sbs))
	for _, x := range ctrs {
		live[x.Id] = true
	}
	for _, x := range sbs {
		if x.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			live[x.Id] = true
		}
	}
	for id := range c.status {
		if !live[id] {
			delete(c.status, id)
		}
	}
	for id := range c.ips {
		if !live[id] {
			delete(c.ips, id)
		}
	}
	return sbs, ctrs, nil
}

// invalidate makes the next snapshot list again: an event said the list
// is out of date.
func (c *criCache) invalidate() {
	c.mu.Lock()
	c.at = time.Time{}
	c.mu.Unlock()
}

// containerStatus is the status of listed container x, from the cache when
// x is still in the state the cached status was read in (running or
// exited); created or unknown containers are always asked.
func (c *criCache) containerStatus(ctx context.Context, rt runtimeStatuser, x *runtimeapi.Container) (*runtimeapi.ContainerStatus, error) {
	c.mu.Lock()
	s := c.status[x.Id]
	c.mu.Unlock()
	if s != nil && s.State == x.State {
		return s, nil
	}
	resp, err := rt.ContainerStatus(ctx, x.Id, false)
	if err != nil {
		return nil, err
	}
	s = resp.GetStatus()
	if s != nil && (s.State == runtimeapi.ContainerState_CONTAINER_RUNNING || s.State == runtimeapi.ContainerState_CONTAINER_EXITED) {
		c.mu.Lock()
		c.status[x.Id] = s
		c.mu.Unlock()
	}
	return s, nil
}

// sandboxIPs are the IPs of a ready sandbox, asked once.
func (c *criCache) sandboxIPs(ctx context.Context, rt runtimeStatuser, id string) []string {
	c.mu.Lock()
	ips, ok := c.ips[id]
	c.mu.Unlock()
	if ok {
		return ips
	}
	resp, err := rt.PodSandboxStatus(ctx, id, false)
	if err != nil || resp.GetStatus() == nil {
		return nil
	}
	if n := resp.Status.GetNetwork(); n != nil {
		if n.Ip != "" {
			ips = append(ips, n.Ip)
		}
		for _, ip := range n.AdditionalIps {
			ips = append(ips, ip.Ip)
		}
	}
	if resp.Status.State == runtimeapi.PodSandboxState_SANDBOX_READY {
		c.mu.Lock()
		c.ips[id] = ips
		c.mu.Unlock()
	}
	return ips
}

type runtimeLister interface {
	ListPodSandbox(ctx context.Context, filter *runtimeapi.PodSandboxFilter) ([]*runtimeapi.PodSandbox, error)
	ListContainers(ctx context.Context, filter *runtimeapi.ContainerFilter) ([]*runtimeapi.Container, error)
}

type runtimeStatuser interface {
	ContainerStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.ContainerStatusResponse, error)
	PodSandboxStatus(ctx context.Context, id string, verbose bool) (*runtimeapi.PodSandboxStatusResponse, error)
}
