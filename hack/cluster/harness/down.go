package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Down undoes everything Up recorded, in reverse: metrics-server (when it
// ran) and the node agent (the kubelet or peapod-agent, so it restarts
// nothing) first, then the node's pods through the CRI, the runtime, the
// control plane and the registry; then the bridge, mounts, cgroups (the
// kubelet's root, and the pod cgroups the runtime reported wherever they
// are) and sysctls; last the directory. It goes on past errors and returns
// them all.
func (c *Cluster) Down() error {
	var errs []error
	note := func(err error) {
		if err != nil {
			errs = append(errs, err)
			c.logf("down: %v", err)
		}
	}
	c.adoptRecorded()
	if p := c.component("metrics-server"); p != nil {
		note(p.stop(10 * time.Second))
	}
	c.stopCSI(note) // csi.go
	if n := c.nodeComponent(); n != nil {
		note(n.stop(30 * time.Second))
	}
	var podCgroups []string
	if rt := c.runtimeComponent(); rt != nil && rt.alive() && c.RuntimeEndpoint != "" {
		var err error
		podCgroups, err = c.removeAllPods(context.Background())
		note(err)
	}
	if rt := c.runtimeComponent(); rt != nil {
		note(rt.stop(30 * time.Second))
	}
	// The test hosts' agents, pods, runtimes and flanneld (hosts.go).
	podCgroups = append(podCgroups, c.stopHosts(note)...)
	for _, name := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
		if p := c.component(name); p != nil {
			note(p.stop(20 * time.Second))
		}
	}
	if c.Registry != "" {
		if out, err := exec.Command("bash", filepath.Join(c.Repo, "hack/registry.sh"), "stop", filepath.Join(c.Dir, "registry")).CombinedOutput(); err != nil {
			note(fmt.Errorf("registry stop: %w: %s", err, out))
		}
	}
	// The hosts' network namespaces (and with them everything in them:
	// cni0, flannel's routes and flannel.1, iptables rules), the switch
	// and the real host's veth.
	c.removeHostNetwork(note)
	if c.Bridge != "" {
		if _, err := os.Stat("/sys/class/net/" + c.Bridge); err == nil {
			if out, err := exec.Command("ip", "link", "del", c.Bridge).CombinedOutput(); err != nil {
				note(fmt.Errorf("ip link del %s: %w: %s", c.Bridge, err, out))
			}
		}
	}
	// With the hosts' processes gone, this also drops each host's mount
	// namespace (its pin is under the dir) and every mount in it.
	note(unmountUnder(c.Dir))
	note(c.detachCSIDisks()) // csi.go: the loop devices of its disks, unmounted now
	for _, err := range removeEmptyDirs(c.MadeMountpoints) {
		c.logf("down: kept %v", err)
	}
	note(removeLogLinksInto("/var/log/containers", c.Dir))
	for _, d := range c.MadeHostDirs {
		note(os.RemoveAll(d))
	}
	roots := []string{}
	if c.CgroupRoot != "" {
		roots = append(roots, c.CgroupRoot)
	}
	for _, h := range c.Hosts {
		roots = append(roots, h.CgroupRoot)
	}
	for _, r := range roots {
		note(removeCgroupTree(r))
	}
	for _, cg := range podCgroups {
		// The runtime removes a pod cgroup it made itself; one it could
		// not (busy at the time) or one a node agent named goes here.
		if !underAny(cg, roots) {
			note(removeCgroupTree(cg))
		}
	}
	for s, v := range c.Sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", s), []byte(v), 0o644); err != nil {
			note(fmt.Errorf("restore sysctl %s=%s: %w", s, v, err))
		}
	}
	if len(errs) == 0 {
		note(os.RemoveAll(c.Dir))
	} else {
		c.logf("down: kept %s for inspection", c.Dir)
	}
	return errors.Join(errs...)
}

// adoptRecorded takes, from cluster.json, the live processes another
// process started (RestartNode or RestartRuntime on its own Load of the
// cluster) in place of this copy's dead records of the same name, so that
// Down stops what runs, not what ran.
func (c *Cluster) adoptRecorded() {
	disk, err := Load(c.Dir)
	if err != nil {
		return
	}
	for _, d := range disk.Components {
		if !d.alive() {
			continue
		}
		mine := c.component(d.Name)
		switch {
		case mine == nil:
			c.Components = append(c.Components, d)
		case mine.PID != d.PID && !mine.alive():
			*mine = *d
		}
	}
}

func (c *Cluster) runtimeComponent() *component {
	if p := c.component("peapod"); p != nil {
		return p
	}
	return c.component("containerd")
}

// removeAllPods stops and removes every pod sandbox the runtime has (the
// node agent is gone, so nothing recreates them), so no netns, veth, mount
// or process of the node outlives the cluster. It returns the pod-level
// cgroups the runtime reports for them (peapod's verbose status has
// cgroupParent), for Down to remove once the runtime is gone.
func (c *Cluster) removeAllPods(ctx context.Context) ([]string, error) {
	return removeAllPodsAt(ctx, c.RuntimeEndpoint)
}

// removeAllPodsAt is removeAllPods for the runtime at endpoint.
func removeAllPodsAt(ctx context.Context, endpoint string) ([]string, error) {
	var cgroups []string
	err := criCall(ctx, endpoint, func(ctx context.Context, rt runtimeapi.RuntimeServiceClient) error {
		list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			return fmt.Errorf("list pods: %w", err)
		}
		var errs []error
		for _, p := range list.Items {
			if st, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: p.Id, Verbose: true}); err == nil {
				if cg := podCgroup(st.GetInfo()["info"]); cg != "" {
					cgroups = append(cgroups, cg)
				}
			}
			if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				errs = append(errs, fmt.Errorf("stop pod %s: %w", p.Id, err))
			}
			if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				errs = append(errs, fmt.Errorf("remove pod %s: %w", p.Id, err))
			}
		}
		return errors.Join(errs...)
	})
	return cgroups, err
}

// podCgroup returns the cgroupParent of a sandbox's verbose info when it
// is a pod's own cgroup (last element pod<uid>, never a shared parent such
// as the runtime's /peapod or a QoS level), else "".
func podCgroup(info string) string {
	var v struct {
		CgroupParent string `json:"cgroupParent"`
	}
	if json.Unmarshal([]byte(info), &v) != nil {
		return ""
	}
	cg := filepath.Clean(v.CgroupParent)
	if !filepath.IsAbs(cg) || strings.Count(cg, "/") < 2 || !strings.HasPrefix(filepath.Base(cg), "pod") {
		return ""
	}
	return cg
}

// underAny says whether cgroup cg is below one of roots.
func underAny(cg string, roots []string) bool {
	for _, r := range roots {
		if strings.HasPrefix(cg, r+"/") {
			return true
		}
	}
	return false
}

// unmountUnder lazily unmounts every mount below dir, deepest first (the
// kubelet's secret and projected tmpfs mounts, the runtime's overlays).
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	var mounts []string
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			// /proc/mounts escapes spaces as \040; our paths have none.
			if strings.HasPrefix(f[1], prefix) {
				mounts = append(mounts, f[1])
			}
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	var errs []error
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

// removeCgroupTree removes root and every cgroup below it in every
// hierarchy, deepest first. The processes are gone by now; a cgroup that
// still holds one is reported, not forced.
func removeCgroupTree(root string) error {
	hier, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hier {
		top := filepath.Join(h, root)
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			for try := 0; try < 20; try++ {
				// A cgroup whose last process just exited can be briefly busy.
				if err = os.Remove(dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) || !errors.Is(err, syscall.EBUSY) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// removeEmptyDirs removes each of dirs while it is empty (the mount points
// Up made: a kubelet on the real host may have come since and filled one,
// which is then that one's) and returns why it kept the others.
func removeEmptyDirs(dirs []string) []error {
	var kept []error
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			kept = append(kept, err)
		}
	}
	return kept
}

// removeLogLinksInto removes the kubelet's /var/log/containers symlinks
// that point into dir (its pods' logs, gone with the cluster).
func removeLogLinksInto(links, dir string) error {
	ents, err := os.ReadDir(links)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	prefix := strings.TrimSuffix(dir, "/") + "/"
	var errs []error
	for _, e := range ents {
		p := filepath.Join(links, e.Name())
		if target, err := os.Readlink(p); err == nil && strings.HasPrefix(target, prefix) {
			if err := os.Remove(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
