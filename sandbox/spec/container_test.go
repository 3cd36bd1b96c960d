package spec

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func testSandboxConfig() *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "uid-1"},
		Hostname:     "web-pod",
		LogDirectory: "/var/log/pods/default_web_uid-1",
		Linux:        &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/besteffort/poduid-1"},
	}
}

func testInput(t *testing.T, mutate func(*ContainerInput)) ContainerInput {
	t.Helper()
	in := ContainerInput{
		ID:        "c1",
		SandboxID: "sb1",
		Config: &runtimeapi.ContainerConfig{
			Metadata:    &runtimeapi.ContainerMetadata{Name: "app"},
			Image:       &runtimeapi.ImageSpec{Image: "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
			Args:        []string{"sleep", "3600"},
			Envs:        []*runtimeapi.KeyValue{kv("FOO", "bar")},
			Annotations: map[string]string{"a": "b", AnnotationContainerType: "spoofed"},
			Linux:       &runtimeapi.LinuxContainerConfig{},
		},
		Sandbox:      testSandboxConfig(),
		Image:        &v1.Config{Entrypoint: []string{"/bin/sh", "-c"}, Env: []string{"PATH=/bin"}, WorkingDir: "/work"},
		RootfsPath:   fakeRootfs(t, testPasswd, testGroup),
		Namespaces:   Namespaces{Net: "/run/netns/p1", IPC: "/proc/10/ns/ipc", UTS: "/proc/10/ns/uts", PID: "/proc/10/ns/pid"},
		HostsPath:    "/run/peapod/sb1/hosts",
		HostnamePath: "/run/peapod/sb1/hostname",
		ResolvPath:   "/run/peapod/sb1/resolv.conf",
		ShmPath:      "/run/peapod/sb1/shm",
		CgroupsPath:  "/kubepods/besteffort/poduid-1/c1",
		HostCaps:     AllCapabilities(),
	}
	if mutate != nil {
		mutate(&in)
	}
	return in
}

func sc(in *ContainerInput) *runtimeapi.LinuxContainerSecurityContext {
	if in.Config.Linux.SecurityContext == nil {
		in.Config.Linux.SecurityContext = &runtimeapi.LinuxContainerSecurityContext{}
	}
	return in.Config.Linux.SecurityContext
}

// validate is a runc-independent check of what runc requires of a spec.
func validate(t *testing.T, s *specs.Spec) {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back specs.Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	json.Unmarshal(b, &raw)
	for _, k := range []string{"ociVersion", "process", "root", "mounts", "linux"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("spec JSON lacks %q", k)
		}
	}
	if back.Version != specs.Version {
		t.Errorf("ociVersion %q", back.Version)
	}
	p := back.Process
	if p == nil || len(p.Args) == 0 || p.Cwd == "" || !strings.HasPrefix(p.Cwd, "/") {
		t.Errorf("process %+v", p)
	}
	if back.Root == nil || back.Root.Path == "" {
		t.Error("no root path")
	}
	for _, m := range back.Mounts {
		if !strings.HasPrefix(m.Destination, "/") || m.Type == "" {
			t.Errorf("bad mount %+v", m)
		}
	}
	seen := map[specs.LinuxNamespaceType]bool{}
	for _, ns := range back.Linux.Namespaces {
		if seen[ns.Type] {
			t.Errorf("namespace %s twice", ns.Type)
		}
		seen[ns.Type] = true
	}
	if !seen[specs.MountNamespace] {
		t.Error("no mount namespace")
	}
	if back.Hostname != "" && !seen[specs.UTSNamespace] {
		t.Error("hostname without a UTS namespace (runc refuses it)")
	}
	for _, ns := range back.Linux.Namespaces {
		if ns.Type == specs.UTSNamespace && ns.Path != "" && back.Hostname != "" {
			t.Error("hostname set while joining a UTS namespace")
		}
	}
	for _, e := range p.Env {
		if !strings.Contains(e, "=") {
			t.Errorf("env %q", e)
		}
	}
}

func TestContainerBasic(t *testing.T) {
	in := testInput(t, nil)
	s, w, err := Container(in)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, s)
	if len(w) != 0 {
		t.Errorf("warnings %q", w)
	}
	p := s.Process
	if !slices.Equal(p.Args, []string{"/bin/sh", "-c", "sleep", "3600"}) {
		t.Errorf("args %q", p.Args)
	}
	if !slices.Equal(p.Env, []string{"PATH=/bin", "HOSTNAME=web-pod", "FOO=bar"}) {
		t.Errorf("env %q", p.Env)
	}
	if p.Cwd != "/work" || p.Terminal || p.NoNewPrivileges || p.OOMScoreAdj != nil {
		t.Errorf("process %+v", p)
	}
	if p.User.UID != 0 || p.User.GID != 0 || !slices.Equal(p.User.AdditionalGids, []uint32{0, 10}) {
		t.Errorf("user %+v", p.User)
	}
	if !slices.Equal(p.Capabilities.Bounding, DefaultCapabilities) {
		t.Errorf("caps %v", p.Capabilities.Bounding)
	}
	if s.Root.Path != in.RootfsPath || s.Root.Readonly {
		t.Errorf("root %+v", s.Root)
	}
	if s.Hostname != "" {
		t.Errorf("container hostname %q: it joins the pod UTS namespace", s.Hostname)
	}
	if s.Linux.CgroupsPath != in.CgroupsPath {
		t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
	}
	if s.Linux.Seccomp != nil {
		t.Error("no seccomp field means unconfined")
	}
	if !slices.Equal(s.Linux.MaskedPaths, DefaultMaskedPaths) || !slices.Equal(s.Linux.ReadonlyPaths, DefaultReadonlyPaths) {
		t.Errorf("masked %v readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	for _, d := range []string{"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/shm", "/proc", "/sys/fs/cgroup"} {
		if findMount(s.Mounts, d) == nil {
			t.Errorf("no %s mount", d)
		}
	}
	if r := s.Linux.Resources; r == nil || len(r.Devices) == 0 || r.Devices[0].Allow || r.Devices[0].Access != "rwm" {
		t.Errorf("device rules %+v", r)
	}
	wantAnn := map[string]string{
		"a":                        "b",
		AnnotationContainerType:    "container",
		AnnotationContainerName:    "app",
		AnnotationSandboxID:        "sb1",
		AnnotationSandboxName:      "web",
		AnnotationSandboxNamespace: "default",
		AnnotationSandboxUID:       "uid-1",
		AnnotationImageName:        "registry.k8s.io/e2e-test-images/busybox:1.29-2",
	}
	for k, v := range wantAnn {
		if s.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, s.Annotations[k], v)
		}
	}
	wantNS := []specs.LinuxNamespace{
		{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/p1"},
		{Type: specs.IPCNamespace, Path: "/proc/10/ns/ipc"}, {Type: specs.UTSNamespace, Path: "/proc/10/ns/uts"},
		{Type: specs.PIDNamespace, Path: "/proc/10/ns/pid"},
	}
	if !slices.Equal(s.Linux.Namespaces, wantNS) {
		t.Errorf("namespaces %+v", s.Linux.Namespaces)
	}
}

func TestContainerSecurity(t *testing.T) {
	t.Run("readonly rootfs, tty, no_new_privs", func(t *testing.T) {
		in := testInput(t, func(in *ContainerInput) {
			sc(in).ReadonlyRootfs = true
			sc(in).NoNewPrivs = true
			in.Config.Tty = true
		})
		s, _, err := Container(in)
		if err != nil {
			t.Fatal(err)
		}
		validate(t, s)
		if !s.Root.Readonly || !s.Process.NoNewPrivileges || !s.Process.Terminal {
			t.Errorf("root %+v process %+v", s.Root, s.Process)
		}
		// The sandbox files follow readonly_rootfs; /dev/shm stays writable.
		for _, d := range []string{"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"} {
			if m := findMount(s.Mounts, d); !slices.Contains(m.Options, "ro") {
				t.Errorf("%s %v", d, m.Options)
			}
		}
		if m := findMount(s.Mounts, "/dev/shm"); !slices.Contains(m.Options, "rw") {
			t.Errorf("/dev/shm %v", m.Options)
		}
	})
	t.Run("masked and readonly paths overrides", func(t *testing.T) {
		in := testInput(t, func(in *ContainerInput) {
			sc(in).MaskedPaths = []string{"/proc/x"}
			sc(in).ReadonlyPaths = []string{}
		})
		s, _, err := Container(in)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.Linux.MaskedPaths, []string{"/proc/x"}) || len(s.Linux.ReadonlyPaths) != 0 {
			t.Errorf("masked %v readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
		}
	})
	t.Run("privileged", func(t *testing.T) {
		in := testInput(t, func(in *ContainerInput) {
			sc(in).Privileged = true
			sc(in).Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
			in.Sandbox.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}
			m := os.FileMode(0o660)
			in.HostDevices = []specs.LinuxDevice{{Path: "/dev/kvm", Type: "c", Major: 10, Minor: 232, FileMode: &m}}
		})
		s, _, err := Container(in)
		if err != nil {
			t.Fatal(err)
		}
		validate(t, s)
		if len(s.Process.Capabilities.Bounding) != len(allCaps) {
			t.Errorf("caps %v", s.Process.Capabilities.Bounding)
		}
		if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil || s.Linux.Seccomp != nil {
			t.Error("privileged: no masked/readonly paths, no seccomp")
		}
		if m := findMount(s.Mounts, "/sys"); !slices.Contains(m.Options, "rw") {
			t.Errorf("sysfs %v", m.Options)
		}
		if d := s.Linux.Resources.Devices; len(d) != 1 || !d[0].Allow || d[0].Access != "rwm" || d[0].Type != "" {
			t.Errorf("device rules %+v", d)
		}
		if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/kvm" {
			t.Errorf("devices %+v", s.Linux.Devices)
		}
	})
	t.Run("privileged defaults to peapod's own caps", func(t *testing.T) {
		in := testInput(t, func(in *ContainerInput) {
			sc(in).Privileged = true
			in.Sandbox.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}
			in.HostCaps = nil
			in.HostDevices = []specs.LinuxDevice{}
		})
		s, _, err := Container(in)
		if err != nil {
			t.Fatal(err)
		}
		own, err := CurrentCapabilities()
		if err != nil {
			t.Skip(err)
		}
		if !slices.Equal(s.Process.Capabilities.Bounding, own) {
			t.Errorf("caps %v, want %v", s.Process.Capabilities.Bounding, own)
		}
		if len(s.Linux.Devices) != 0 {
			t.Errorf("empty HostDevices means none, got %v", s.Linux.Devices)
		}
	})
	t.Run("privileged in unprivileged sandbox", func(t *testing.T) {
		in := testInput(t, func(in *ContainerInput) { sc(in).Privileged = true })
		_, _, err := Container(in)
		if err == nil || !strings.HasPrefix(err.Error(), "linux.security_context.privileged:") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("runtime default seccomp follows caps", func(t *testing.T) {
		in := testInput(t, func(in *ContainerInput) {
			sc(in).Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
			sc(in).Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"SYS_ADMIN"}}
		})
		s, _, err := Container(in)
		if err != nil {
			t.Fatal(err)
		}
		if s.Linux.Seccomp == nil {
			t.Fatal("no seccomp")
		}
		if u, _ := allowed(s.Linux.Seccomp, "mount"); !u {
			t.Error("mount not allowed with CAP_SYS_ADMIN")
		}
	})
	t.Run("apparmor", func(t *testing.T) {
		for _, tt := range []struct {
			p       *runtimeapi.SecurityProfile
			legacy  string
			wantErr bool
			warn    bool
		}{
			{p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}},
			{p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}, warn: true},
			{p: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "k8s-x"}, wantErr: true},
			{legacy: "runtime/default", warn: true},
			{legacy: "unconfined"},
			{legacy: "localhost/k8s-x", wantErr: true},
			{legacy: "bogus", wantErr: true},
		} {
			in := testInput(t, func(in *ContainerInput) {
				sc(in).Apparmor = tt.p
				sc(in).ApparmorProfile = tt.legacy
			})
			_, w, err := Container(in)
			if tt.wantErr != (err != nil) || (err != nil && !strings.HasPrefix(err.Error(), "linux.security_context.apparmor")) {
				t.Errorf("%v %q: err %v", tt.p, tt.legacy, err)
			}
			if err == nil && tt.warn != (len(w) == 1) {
				t.Errorf("%v %q: warnings %q", tt.p, tt.legacy, w)
			}
		}
	})
	t.Run("user from image", func(t *testing.T) {
		in := testInput(t, func(in *ContainerInput) { in.Image.User = "alice" })
		s, _, err := Container(in)
		if err != nil {
			t.Fatal(err)
		}
		if u := s.Process.User; u.UID != 1000 || u.GID != 1000 || !slices.Equal(u.AdditionalGids, []uint32{10, 100, 1000}) {
			t.Errorf("user %+v", u)
		}
	})
	t.Run("unknown username", func(t *testing.T) {
		in := testInput(t, func(in *ContainerInput) { sc(in).RunAsUsername = "nobody2" })
		_, _, err := Container(in)
		if err == nil || !IsInvalidArgument(err) || !strings.Contains(err.Error(), `linux.security_context.run_as_username: user "nobody2" not found`) {
			t.Errorf("got %v", err)
		}
	})
}

func TestContainerResourcesAndOOM(t *testing.T) {
	tests := []struct {
		name    string
		adj     int64
		min     int
		want    int
		clamped bool
	}{
		{name: "guaranteed clamped", adj: -997, min: 0, want: 0, clamped: true},
		{name: "burstable kept", adj: 500, min: 0, want: 500},
		{name: "besteffort kept", adj: 1000, min: -500, want: 1000},
		{name: "equal kept", adj: -500, min: -500, want: -500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := testInput(t, func(in *ContainerInput) {
				in.MinOOMScoreAdj = tt.min
				in.Config.Linux.Resources = &runtimeapi.LinuxContainerResources{OomScoreAdj: tt.adj, MemoryLimitInBytes: 1 << 30, CpuShares: 1024}
			})
			s, w, err := Container(in)
			if err != nil {
				t.Fatal(err)
			}
			if s.Process.OOMScoreAdj == nil || *s.Process.OOMScoreAdj != tt.want {
				t.Errorf("oom %v, want %d", s.Process.OOMScoreAdj, tt.want)
			}
			if tt.clamped != (len(w) == 1 && strings.Contains(w[0], "oom_score_adj")) {
				t.Errorf("warnings %q", w)
			}
			r := s.Linux.Resources
			if r.Memory == nil || *r.Memory.Limit != 1<<30 || *r.Memory.Swap != 1<<30 || *r.CPU.Shares != 1024 {
				t.Errorf("resources %+v", r)
			}
		})
	}
	in := testInput(t, func(in *ContainerInput) {
		in.NoSwapAccounting = true
		in.Config.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 30}
	})
	s, _, _ := Container(in)
	if s.Linux.Resources.Memory.Swap != nil {
		t.Error("swap set without swap accounting")
	}
}

func TestContainerHostNetworkHostname(t *testing.T) {
	in := testInput(t, func(in *ContainerInput) {
		in.Sandbox.Hostname = ""
		in.NodeHostname = "node1"
		in.Namespaces = Namespaces{HostNet: true, HostUTS: true, HostIPC: true, PID: "/proc/10/ns/pid"}
	})
	s, _, err := Container(in)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, s)
	if !slices.Contains(s.Process.Env, "HOSTNAME=node1") {
		t.Errorf("env %q", s.Process.Env)
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace || ns.Type == specs.UTSNamespace || ns.Type == specs.IPCNamespace {
			t.Errorf("host namespace %s in spec", ns.Type)
		}
	}
}

func TestContainerErrors(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mut    func(*ContainerInput)
		prefix string
	}{
		{name: "no command", mut: func(in *ContainerInput) { in.Config.Args = nil; in.Image = &v1.Config{} }, prefix: "command:"},
		{name: "bad cap", mut: func(in *ContainerInput) {
			sc(in).Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"FOO"}}
		}, prefix: `linux.security_context.capabilities.add_capabilities: unknown capability "FOO"`},
		{name: "bad mount", mut: func(in *ContainerInput) {
			in.Config.Mounts = []*runtimeapi.Mount{{ContainerPath: "/a", HostPath: "/b"}, {ContainerPath: "rel", HostPath: "/b"}}
		}, prefix: "mounts[1].container_path:"},
		{name: "bad device", mut: func(in *ContainerInput) {
			in.Config.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/n", Permissions: "x"}}
		}, prefix: "devices[0].permissions:"},
		{name: "bad seccomp", mut: func(in *ContainerInput) {
			sc(in).SeccompProfilePath = "whatever"
		}, prefix: "linux.security_context.seccomp_profile_path:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Container(testInput(t, tt.mut))
			if err == nil || !IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), tt.prefix) {
				t.Errorf("got %v, want prefix %q", err, tt.prefix)
			}
		})
	}
	if _, _, err := Container(ContainerInput{}); err == nil {
		t.Error("empty input must fail")
	}
}

// The kubelet sends a hugepage limit for every page size the kernel has (0
// when the pod asks for none); where the runtime has no hugetlb hierarchy
// they must not reach the spec, or runc fails every container.
func TestContainerHugepagesWithoutController(t *testing.T) {
	limits := []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}, {PageSize: "1GB", Limit: 0}}
	for _, tt := range []struct {
		name      string
		noHugetlb bool
		limits    []*runtimeapi.HugepageLimit
		wantN     int
		wantWarn  bool
	}{
		{"controller present keeps the limits", false, limits, 2, false},
		{"no controller drops zero limits silently", true, limits, 0, false},
		{"no controller drops a real limit with a warning", true, []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}}, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := testInput(t, func(in *ContainerInput) {
				in.NoHugetlb = tt.noHugetlb
				in.Config.Linux.Resources = &runtimeapi.LinuxContainerResources{HugepageLimits: tt.limits}
			})
			s, w, err := Container(in)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(s.Linux.Resources.HugepageLimits); got != tt.wantN {
				t.Errorf("%d hugepage limits in the spec, want %d", got, tt.wantN)
			}
			warned := slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, "hugepage_limits") })
			if warned != tt.wantWarn {
				t.Errorf("warnings %q, want a hugepage warning: %v", w, tt.wantWarn)
			}
		})
	}
}

// lxcfs's files go over the container's own, after /proc and /sys, as
// read-only plain binds; a pod's own mount at (or above) a path wins.
func TestContainerLXCFS(t *testing.T) {
	paths := []string{"/proc/cpuinfo", "/proc/meminfo", "/proc/uptime", "/sys/devices/system/cpu/online"}
	tests := []struct {
		name   string
		mutate func(*ContainerInput)
		want   []string // destinations bound from lxcfs
	}{
		{name: "no lxcfs", mutate: func(in *ContainerInput) { in.LXCFSPaths = paths }, want: nil},
		{name: "every path", mutate: func(in *ContainerInput) { in.LXCFSDir, in.LXCFSPaths = "/var/lib/lxcfs", paths }, want: paths},
		{name: "privileged too", mutate: func(in *ContainerInput) {
			in.LXCFSDir, in.LXCFSPaths = "/var/lib/lxcfs", paths
			sc(in).Privileged = true
			in.Sandbox.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}
			in.HostDevices = []specs.LinuxDevice{}
		}, want: paths},
		{name: "pod mounts win", mutate: func(in *ContainerInput) {
			in.LXCFSDir, in.LXCFSPaths = "/var/lib/lxcfs", paths
			in.Config.Mounts = []*runtimeapi.Mount{
				{ContainerPath: "/proc/meminfo", HostPath: "/h/meminfo"},
				{ContainerPath: "/sys/devices/system", HostPath: "/h/system"},
			}
		}, want: []string{"/proc/cpuinfo", "/proc/uptime"}},
		{name: "unclean paths dropped", mutate: func(in *ContainerInput) {
			in.LXCFSDir, in.LXCFSPaths = "/var/lib/lxcfs", []string{"proc/meminfo", "/proc/../etc/passwd", "/proc/stat"}
		}, want: []string{"/proc/stat"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, err := Container(testInput(t, tt.mutate))
			if err != nil {
				t.Fatal(err)
			}
			validate(t, s)
			var got []string
			for i, m := range s.Mounts {
				if !strings.HasPrefix(m.Source, "/var/lib/lxcfs/") {
					continue
				}
				got = append(got, m.Destination)
				if m.Source != "/var/lib/lxcfs"+m.Destination || m.Type != "bind" || !slices.Equal(m.Options, []string{"bind", "ro", "nosuid", "nodev", "noexec"}) {
					t.Errorf("lxcfs mount %+v", m)
				}
				// Its filesystem is mounted before it.
				parent := "/proc"
				if strings.HasPrefix(m.Destination, "/sys/") {
					parent = "/sys"
				}
				if j := slices.IndexFunc(s.Mounts, func(x specs.Mount) bool { return x.Destination == parent }); j < 0 || j > i {
					t.Errorf("%s mounted before %s", m.Destination, parent)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("lxcfs binds %v, want %v", got, tt.want)
			}
		})
	}
}

// TestContainerUserNS: a container of a pod with a user namespace joins the
// pause's and carries the pod's mappings; the pod's files are idmapped.
func TestContainerUserNS(t *testing.T) {
	in := testInput(t, func(in *ContainerInput) {
		in.Namespaces.User, in.Namespaces.UserNS = "/proc/10/ns/user", podUserNS
	})
	s, _, err := Container(in)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, s)
	if ns := s.Linux.Namespaces[0]; ns.Type != specs.UserNamespace || ns.Path != "/proc/10/ns/user" {
		t.Errorf("first namespace %+v, want the pause's user namespace", ns)
	}
	if !reflect.DeepEqual(s.Linux.UIDMappings, podUserNS.UIDs) || !reflect.DeepEqual(s.Linux.GIDMappings, podUserNS.GIDs) {
		t.Errorf("mappings %+v %+v", s.Linux.UIDMappings, s.Linux.GIDMappings)
	}
	for _, dst := range []string{"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"} {
		if m := findMount(s.Mounts, dst); m == nil || len(m.UIDMappings) != 1 || !slices.Contains(m.Options, "idmap") {
			t.Errorf("%s not idmapped: %+v", dst, m)
		}
	}
	// Without: no user namespace, no mappings.
	s, _, _ = Container(testInput(t, nil))
	if s.Linux.UIDMappings != nil || s.Linux.Namespaces[0].Type == specs.UserNamespace {
		t.Errorf("host user namespace: %+v %+v", s.Linux.Namespaces, s.Linux.UIDMappings)
	}
}
