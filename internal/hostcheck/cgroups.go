package hostcheck

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// controllerUse is why peapod needs each cgroup controller: what runc
// writes for it from the OCI spec peapod makes (sandbox/spec), what
// peapod writes itself (internal/cgroupfs) or reads for stats
// (sandbox/stats.go reads <root>/cpuacct, <root>/memory and <root>/pids
// by those names on v1).
var controllerUse = map[string]string{
	"cpu":     "CPU requests and limits (cpu.shares, CFS quota)",
	"cpuacct": "container CPU usage stats",
	"cpuset":  "CPU pinning (cpuset_cpus, the kubelet's static CPU manager)",
	"devices": "device access rules: without it every container could open every host device",
	"memory":  "memory limits and memory stats",
	"pids":    "pid limits and process counts",
}

// Required controllers per layout. v2 has no cpuacct (cpu.stat is always
// there) and no devices controller (runc attaches an eBPF program).
// hugetlb is optional: peapod drops hugepage limits on a host without it
// (sandbox/spec.DropHugepageLimits), as this machine kind's hybrid layout
// has it only on the unified mount.
var (
	requiredV1 = []string{"cpu", "cpuacct", "cpuset", "devices", "memory", "pids"}
	requiredV2 = []string{"cpu", "cpuset", "memory", "pids"}
)

// CgroupsResult is Cgroups as a Result.
func CgroupsResult(root, mounts, procCgroups string) Result {
	what := "cgroup controllers (" + strings.Join(requiredV1, ", ") + ") under " + root
	if err := Cgroups(root, mounts, procCgroups); err != nil {
		return Result{What: "cgroup controllers under " + root, Reason: ReasonCgroups, Err: err}
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		what = "cgroup v2 controllers (" + strings.Join(requiredV2, ", ") + ") under " + root
	}
	return Result{What: what}
}

// Cgroups checks that every controller peapod needs is usable by a
// cgroupfs runtime under root (/sys/fs/cgroup), given the paths of a
// /proc/self/mounts and a /proc/cgroups (parameters, so a fake tree in a
// test stands in for the host): on a pure v2 host each is listed in
// <root>/cgroup.controllers; otherwise (v1, or hybrid with a cgroup2 mount
// beside the v1 ones) each has a v1 mount below root and <root>/<name>
// reaches it. A missing one is explained from /proc/cgroups: not built
// into the kernel, disabled on its command line, or just not mounted.
func Cgroups(root, mounts, procCgroups string) error {
	kernel := readProcCgroups(procCgroups)
	var missing []string
	if b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers")); err == nil {
		have := strings.Fields(string(b))
		for _, c := range requiredV2 {
			if slices.Contains(have, c) {
				continue
			}
			why := kernelWhy(kernel, c)
			if why == "" {
				why = fmt.Sprintf("not in %s: it is still bound to a v1 hierarchy (unmount that) or not delegated to this cgroup (add +%s to the parent's cgroup.subtree_control)",
					filepath.Join(root, "cgroup.controllers"), c)
			}
			missing = append(missing, fmt.Sprintf("%s (%s): %s", c, controllerUse[c], why))
		}
		if len(missing) > 0 {
			return fmt.Errorf("cgroup v2 controllers missing under %s: %s", root, strings.Join(missing, "; "))
		}
		return nil
	}
	mounted, err := v1Mounts(mounts, root)
	if err != nil {
		return fmt.Errorf("cannot read the mount table %s: %w", mounts, err)
	}
	if len(mounted) == 0 {
		return fmt.Errorf("no cgroup hierarchy is mounted at %s (neither %s/cgroup.controllers nor v1 controllers below it): "+
			"mount cgroup2 (mount -t cgroup2 cgroup2 %s) or the v1 controllers (cgroupfs-mount does)", root, root, root)
	}
	for _, c := range requiredV1 {
		at, ok := mounted[c]
		want := filepath.Join(root, c)
		var why string
		switch {
		case !ok:
			if why = kernelWhy(kernel, c); why == "" {
				why = fmt.Sprintf("not mounted: mkdir -p %s && mount -t cgroup -o %s cgroup %s", want, c, want)
			}
		case at != want && !sameDir(at, want):
			why = fmt.Sprintf("mounted at %s, but peapod looks for %s: ln -s %s %s", at, want, filepath.Base(at), want)
		default:
			continue
		}
		missing = append(missing, fmt.Sprintf("%s (%s): %s", c, controllerUse[c], why))
	}
	if len(missing) > 0 {
		return fmt.Errorf("cgroup v1 controllers missing under %s: %s", root, strings.Join(missing, "; "))
	}
	return nil
}

// kernelWhy explains a controller missing from the kernel itself, from a
// /proc/cgroups table; "" when the kernel has it enabled (or the table is
// not readable).
func kernelWhy(kernel map[string]bool, c string) string {
	if kernel == nil {
		return ""
	}
	enabled, ok := kernel[c]
	switch {
	case !ok:
		return fmt.Sprintf("the kernel has no %s controller (not in /proc/cgroups): use a kernel built with %s", c, kconfig[c])
	case !enabled:
		return fmt.Sprintf("disabled on the kernel command line (cgroup_disable=%s; /proc/cgroups says enabled 0): remove it and reboot", c)
	}
	return ""
}

// kconfig names the kernel option that builds controller c.
var kconfig = map[string]string{
	"cpu": "CONFIG_CGROUP_SCHED", "cpuacct": "CONFIG_CGROUP_CPUACCT", "cpuset": "CONFIG_CPUSETS",
	"devices": "CONFIG_CGROUP_DEVICE", "memory": "CONFIG_MEMCG", "pids": "CONFIG_CGROUP_PIDS",
}

// readProcCgroups parses /proc/cgroups ("subsys_name hierarchy
// num_cgroups enabled") into name → enabled; nil when unreadable.
func readProcCgroups(path string) map[string]bool {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		out[fields[0]] = fields[3] == "1"
	}
	return out
}

// v1Mounts maps each v1 controller to where it is mounted below root,
// from a /proc/self/mounts table.
func v1Mounts(path, root string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) < 4 || f[2] != "cgroup" || !strings.HasPrefix(f[1], root+"/") {
			continue
		}
		for _, opt := range strings.Split(f[3], ",") {
			if _, ok := controllerUse[opt]; ok {
				if _, seen := out[opt]; !seen {
					out[opt] = unescapeMount(f[1])
				}
			}
		}
	}
	return out, nil
}

// unescapeMount undoes the octal escapes of /proc/self/mounts (\040 for a
// space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var n int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &n); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// sameDir says whether a and b are the same directory (b a symlink to a:
// systemd's cpu -> cpu,cpuacct).
func sameDir(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
