package hostcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// procCgroups renders a /proc/cgroups with every controller enabled
// except those in disabled, and none of those in absent.
func procCgroups(absent, disabled []string) string {
	var b strings.Builder
	b.WriteString("#subsys_name\thierarchy\tnum_cgroups\tenabled\n")
	for i, c := range []string{"cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "hugetlb", "pids"} {
		if contains(absent, c) {
			continue
		}
		en := 1
		if contains(disabled, c) {
			en = 0
		}
		fmt.Fprintf(&b, "%s\t%d\t1\t%d\n", c, i+1, en)
	}
	return b.String()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// fakeTree makes a cgroup root in a temp dir: dirs (v1 mount points),
// symlinks (name -> target), an optional v2 cgroup.controllers, and the
// mounts and /proc/cgroups files; it returns root, mounts, procCgroups.
type fakeTree struct {
	v1       map[string]string // mount dir under root -> mount options
	links    map[string]string // link under root -> target
	unified  string            // "": no cgroup2 mount; else its dir under root ("" dir = root)
	v2       *string           // root's cgroup.controllers (pure v2)
	absent   []string
	disabled []string
	extra    string // more mounts lines
}

func (f fakeTree) make(t *testing.T) (string, string, string) {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "sys", "fs", "cgroup")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	mounts := "sysfs /sys sysfs rw 0 0\ntmpfs " + root + " tmpfs rw,mode=755 0 0\n"
	for d, opts := range f.v1 {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
		mounts += fmt.Sprintf("cgroup %s cgroup rw,relatime,%s 0 0\n", filepath.Join(root, d), opts)
	}
	for l, target := range f.links {
		if err := os.Symlink(target, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	if f.unified != "" {
		if err := os.MkdirAll(filepath.Join(root, f.unified), 0o755); err != nil {
			t.Fatal(err)
		}
		mounts += fmt.Sprintf("cgroup2 %s cgroup2 rw 0 0\n", filepath.Join(root, f.unified))
		// A hybrid host's unified mount lists what is attached to it.
		if err := os.WriteFile(filepath.Join(root, f.unified, "cgroup.controllers"), []byte("hugetlb\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if f.v2 != nil {
		mounts = "cgroup2 " + root + " cgroup2 rw,nsdelegate 0 0\n"
		if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte(*f.v2+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mounts += f.extra
	mountsFile := filepath.Join(dir, "mounts")
	pcFile := filepath.Join(dir, "cgroups")
	if err := os.WriteFile(mountsFile, []byte(mounts), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pcFile, []byte(procCgroups(f.absent, f.disabled)), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, mountsFile, pcFile
}

func allV1(except ...string) map[string]string {
	out := map[string]string{}
	for _, c := range []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"} {
		if !contains(except, c) {
			out[c] = c
		}
	}
	out["systemd"] = "name=systemd"
	return out
}

func ptr(s string) *string { return &s }

// Each controller peapod needs and a host lacks is named, with why it
// lacks it (not mounted, not in the kernel, disabled at boot, not where
// peapod looks, not in cgroup.controllers) and the fix.
func TestCgroups(t *testing.T) {
	tests := []struct {
		name    string
		tree    fakeTree
		wantErr []string // none: passes
		notErr  []string
	}{
		{name: "this machine kind: v1 + unified hugetlb", tree: fakeTree{v1: allV1(), unified: "unified"}},
		{
			name: "systemd's co-mounted cpu,cpuacct with links",
			tree: fakeTree{v1: func() map[string]string {
				m := allV1("cpu", "cpuacct")
				m["cpu,cpuacct"] = "cpu,cpuacct"
				return m
			}(), links: map[string]string{"cpu": "cpu,cpuacct", "cpuacct": "cpu,cpuacct"}},
		},
		{
			name: "co-mounted without the links",
			tree: fakeTree{v1: func() map[string]string {
				m := allV1("cpu", "cpuacct")
				m["cpu,cpuacct"] = "cpu,cpuacct"
				return m
			}()},
			wantErr: []string{"cgroup v1 controllers missing under ", "cpu (CPU requests and limits", "mounted at ", "cpu,cpuacct, but peapod looks for ", "ln -s cpu,cpuacct ", "cpuacct (container CPU usage stats)"},
		},
		{
			name:    "pids not mounted",
			tree:    fakeTree{v1: allV1("pids"), unified: "unified"},
			wantErr: []string{"pids (pid limits and process counts): not mounted: mkdir -p ", "/pids && mount -t cgroup -o pids cgroup "},
			notErr:  []string{"memory", "cpuset"},
		},
		{
			name:    "the kernel has no pids controller",
			tree:    fakeTree{v1: allV1("pids"), absent: []string{"pids"}},
			wantErr: []string{"pids (pid limits and process counts): the kernel has no pids controller", "CONFIG_CGROUP_PIDS"},
		},
		{
			name:    "memory disabled at boot",
			tree:    fakeTree{v1: allV1("memory"), disabled: []string{"memory"}},
			wantErr: []string{"memory (memory limits and memory stats): disabled on the kernel command line (cgroup_disable=memory", "remove it and reboot"},
		},
		{
			name:    "two missing: both named",
			tree:    fakeTree{v1: allV1("devices", "cpuset")},
			wantErr: []string{"cpuset (CPU pinning", "devices (device access rules: without it every container could open every host device)"},
		},
		{
			name:    "controller mounted outside root does not count",
			tree:    fakeTree{v1: allV1("memory"), extra: "cgroup /mnt/memory cgroup rw,memory 0 0\n"},
			wantErr: []string{"memory (memory limits and memory stats): not mounted"},
		},
		{name: "pure v2", tree: fakeTree{v2: ptr("cpuset cpu io memory hugetlb pids rdma misc")}},
		{
			name:    "v2 without pids and cpuset",
			tree:    fakeTree{v2: ptr("cpu io memory")},
			wantErr: []string{"cgroup v2 controllers missing under ", "cpuset (CPU pinning", "pids (pid limits", "cgroup.controllers: it is still bound to a v1 hierarchy", "cgroup.subtree_control"},
			notErr:  []string{"memory ("},
		},
		{
			name:    "v2, memory disabled at boot",
			tree:    fakeTree{v2: ptr("cpuset cpu io pids"), disabled: []string{"memory"}},
			wantErr: []string{"memory (memory limits and memory stats): disabled on the kernel command line (cgroup_disable=memory"},
		},
		{
			name:    "nothing mounted",
			tree:    fakeTree{},
			wantErr: []string{"no cgroup hierarchy is mounted at ", "mount -t cgroup2 cgroup2 "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, mounts, pc := tt.tree.make(t)
			r := CgroupsResult(root, mounts, pc)
			if len(tt.wantErr) == 0 {
				if r.Err != nil {
					t.Fatalf("Cgroups = %v, want ok", r.Err)
				}
				return
			}
			if r.Err == nil {
				t.Fatal("Cgroups passed, want an error")
			}
			t.Logf("%s: %v", r.What, r.Err)
			if r.Reason != ReasonCgroups {
				t.Errorf("reason = %q", r.Reason)
			}
			msg := strings.ReplaceAll(r.Err.Error(), root, "")
			for _, w := range tt.wantErr {
				if !strings.Contains(r.Err.Error(), w) {
					t.Errorf("error lacks %q:\n%s", w, r.Err)
				}
			}
			for _, w := range tt.notErr {
				if strings.Contains(msg, w) {
					t.Errorf("error names %q, which is there:\n%s", w, r.Err)
				}
			}
		})
	}
}

// This host (a hybrid v1 + unified layout here) has what peapod needs.
func TestCgroupsHost(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup"); err != nil {
		t.Skip("no /sys/fs/cgroup")
	}
	if err := Cgroups("/sys/fs/cgroup", "/proc/self/mounts", "/proc/cgroups"); err != nil {
		t.Fatalf("this host: %v", err)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/sys/fs/cgroup/cpu`:             "/sys/fs/cgroup/cpu",
		`/mnt/with\040space/cpu`:         "/mnt/with space/cpu",
		`/odd\134name`:                   `/odd\name`,
		`/trailing\04`:                   `/trailing\04`,
		`/sys/fs/cgroup/cpu,cpuacct\011`: "/sys/fs/cgroup/cpu,cpuacct\t",
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
