package stats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Summary serves GET /stats/summary: the node and its pods as JSON
// (statsapi.Summary). With ?only_cpu_and_memory=true, only CPU, memory and
// swap, as the kubelet's GetCPUAndMemoryStats. A figure that cannot be had
// answers 500 with the reason, as the kubelet does.
func (p *Provider) Summary() http.Handler {
	return readOnly(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "parse form: "+err.Error(), http.StatusBadRequest)
			return
		}
		var s *statsapi.Summary
		var err error
		if v, ok := r.Form["only_cpu_and_memory"]; ok && len(v) == 1 && v[0] == "true" {
			s, err = p.cpuAndMemorySummary(r.Context())
		} else {
			s, err = p.Get(r.Context())
		}
		if err != nil {
			klog.ErrorS(err, "Stats summary failed")
			http.Error(w, "Internal Error: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			klog.V(2).InfoS("Writing the stats summary failed", "err", err)
		}
	})
}

// Get is the full summary, as GET /stats/summary serves it: the kubelet's
// summaryProviderImpl.Get. Of the systemContainers only "pods" is there
// (Options.PodsCgroup): the agent keeps no kubelet/runtime/misc cgroups
// of its own.
func (p *Provider) Get(ctx context.Context) (*statsapi.Summary, error) {
	boot, err := p.bootTime()
	if err != nil {
		return nil, fmt.Errorf("boot time: %w", err)
	}
	cpu, err := p.nodeCPU()
	if err != nil {
		return nil, fmt.Errorf("node cpu: %w", err)
	}
	mem, swap, err := p.nodeMemory()
	if err != nil {
		return nil, fmt.Errorf("node memory: %w", err)
	}
	net, err := p.nodeNetwork()
	if err != nil {
		return nil, fmt.Errorf("node network: %w", err)
	}
	rootFs, err := statfs(p.o.RootDir)
	if err != nil {
		return nil, fmt.Errorf("node filesystem: %w", err)
	}
	fs := fsCache{p.o.RootDir: &rootFs}
	node := statsapi.NodeStats{
		NodeName:         p.o.NodeName,
		StartTime:        metav1.NewTime(boot),
		CPU:              cpu,
		Memory:           mem,
		Swap:             swap,
		Network:          net,
		Fs:               nodeFs(rootFs),
		Rlimit:           p.rlimit(),
		SystemContainers: p.systemContainers(),
	}
	if p.o.Images != nil {
		imageFs, err := p.imageFs(ctx, fs)
		if err != nil {
			return nil, fmt.Errorf("image filesystem: %w", err)
		}
		// As the kubelet's CRI stats provider: one filesystem for both.
		node.Runtime = &statsapi.RuntimeStats{ImageFs: imageFs, ContainerFs: imageFs}
	}
	pods, err := p.listPodStats(ctx, podCtx{scope: fullPod, rootFs: rootFs, fs: fs})
	if err != nil {
		return nil, fmt.Errorf("pod stats: %w", err)
	}
	return &statsapi.Summary{Node: node, Pods: pods}, nil
}

// cpuAndMemorySummary is the kubelet's GetCPUAndMemoryStats.
func (p *Provider) cpuAndMemorySummary(ctx context.Context) (*statsapi.Summary, error) {
	boot, err := p.bootTime()
	if err != nil {
		return nil, fmt.Errorf("boot time: %w", err)
	}
	cpu, err := p.nodeCPU()
	if err != nil {
		return nil, fmt.Errorf("node cpu: %w", err)
	}
	mem, swap, err := p.nodeMemory()
	if err != nil {
		return nil, fmt.Errorf("node memory: %w", err)
	}
	pods, err := p.listPodStats(ctx, podCtx{scope: cpuAndMemory})
	if err != nil {
		return nil, fmt.Errorf("pod stats: %w", err)
	}
	return &statsapi.Summary{
		Node: statsapi.NodeStats{NodeName: p.o.NodeName, StartTime: metav1.NewTime(boot), CPU: cpu, Memory: mem, Swap: swap,
			SystemContainers: p.systemContainers()},
		Pods: pods,
	}, nil
}

// imageFs is the kubelet's CRI ImageFsStats: the first image filesystem the
// runtime reports, its capacity from statfs of its mount point.
func (p *Provider) imageFs(ctx context.Context, fs fsCache) (*statsapi.FsStats, error) {
	resp, err := p.o.Images.ImageFsInfo(ctx)
	if err != nil {
		return nil, err
	}
	if len(resp.GetImageFilesystems()) == 0 {
		return nil, errors.New("the runtime reports no image filesystem")
	}
	u := resp.GetImageFilesystems()[0]
	out := &statsapi.FsStats{
		Time:       metav1.NewTime(time.Unix(0, u.Timestamp)),
		UsedBytes:  u64(u.UsedBytes),
		InodesUsed: u64(u.InodesUsed),
	}
	if mp := u.GetFsId().GetMountpoint(); mp != "" {
		if fi := fs.get(mp); fi != nil {
			withCapacity(out, *fi)
		}
	}
	return out, nil
}
