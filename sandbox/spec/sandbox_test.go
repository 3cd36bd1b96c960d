package spec

import (
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func testSandboxInput(t *testing.T, mutate func(*SandboxInput)) SandboxInput {
	t.Helper()
	in := SandboxInput{
		ID:           "sb1",
		Config:       testSandboxConfig(),
		RootfsPath:   t.TempDir(),
		PauseArgs:    []string{"/pause"},
		ImageName:    "peapod/pause",
		Namespaces:   Namespaces{Net: "/run/netns/p1"},
		ShmPath:      "/run/peapod/sb1/shm",
		ResolvPath:   "/run/peapod/sb1/resolv.conf",
		CgroupsPath:  "/kubepods/besteffort/poduid-1/sb1",
		HostnamePath: "/run/peapod/sb1/hostname",
		// -1000 is what an unrestricted daemon may ask for; the tests that
		// clamp set it to 0, this machine's value.
		MinOOMScoreAdj: -1000,
	}
	if mutate != nil {
		mutate(&in)
	}
	return in
}

func TestSandbox(t *testing.T) {
	in := testSandboxInput(t, func(in *SandboxInput) {
		in.Config.Linux.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"}
		in.Config.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuShares: 102, MemoryLimitInBytes: 1 << 20}
		in.Config.Annotations = map[string]string{"x": "y"}
	})
	s, w, err := SandboxWithWarnings(in)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, s)
	if len(w) != 0 {
		t.Errorf("warnings %q", w)
	}
	p := s.Process
	if !slices.Equal(p.Args, []string{"/pause"}) || p.Cwd != "/" || !p.NoNewPrivileges || p.Terminal {
		t.Errorf("process %+v", p)
	}
	if c := p.Capabilities; len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Ambient)+len(c.Inheritable) != 0 {
		t.Errorf("pause has capabilities %+v", c)
	}
	if p.OOMScoreAdj == nil || *p.OOMScoreAdj != -998 {
		t.Errorf("oom %v", p.OOMScoreAdj)
	}
	if !s.Root.Readonly {
		t.Error("pause rootfs must be read-only")
	}
	if s.Hostname != "web-pod" {
		t.Errorf("hostname %q", s.Hostname)
	}
	wantNS := []specs.LinuxNamespace{
		{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace, Path: "/run/netns/p1"},
		{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.PIDNamespace},
	}
	if !slices.Equal(s.Linux.Namespaces, wantNS) {
		t.Errorf("namespaces %+v", s.Linux.Namespaces)
	}
	if s.Linux.Sysctl["net.ipv4.ip_unprivileged_port_start"] != "0" || s.Linux.Sysctl["kernel.shm_rmid_forced"] != "1" {
		t.Errorf("sysctls %v", s.Linux.Sysctl)
	}
	if *s.Linux.Resources.CPU.Shares != SandboxCPUShares {
		t.Errorf("cpu shares %v", *s.Linux.Resources.CPU.Shares)
	}
	if m := findMount(s.Mounts, "/dev/shm"); m == nil || m.Type != "bind" || !slices.Contains(m.Options, "ro") {
		t.Errorf("shm %+v", m)
	}
	if m := findMount(s.Mounts, "/etc/resolv.conf"); m == nil || !slices.Contains(m.Options, "ro") {
		t.Errorf("resolv %+v", m)
	}
	if s.Linux.Seccomp != nil {
		t.Error("no seccomp requested")
	}
	for k, v := range map[string]string{
		"x":                        "y",
		AnnotationContainerType:    "sandbox",
		AnnotationSandboxID:        "sb1",
		AnnotationSandboxName:      "web",
		AnnotationSandboxNamespace: "default",
		AnnotationSandboxUID:       "uid-1",
		AnnotationSandboxLogDir:    "/var/log/pods/default_web_uid-1",
		AnnotationImageName:        "peapod/pause",
		AnnotationSandboxCPUShares: "102",
		AnnotationSandboxMemory:    "1048576",
	} {
		if s.Annotations[k] != v {
			t.Errorf("annotation %s = %q, want %q", k, s.Annotations[k], v)
		}
	}
	// Sandbox (without warnings) returns the same spec.
	if s2, err := Sandbox(in); err != nil || s2.Hostname != s.Hostname {
		t.Errorf("Sandbox: %v", err)
	}
}

func TestSandboxVariants(t *testing.T) {
	t.Run("oom clamped", func(t *testing.T) {
		s, w, err := SandboxWithWarnings(testSandboxInput(t, func(in *SandboxInput) { in.MinOOMScoreAdj = 0 }))
		if err != nil {
			t.Fatal(err)
		}
		if *s.Process.OOMScoreAdj != 0 || len(w) != 1 || !strings.Contains(w[0], "-998 raised to 0") {
			t.Errorf("oom %d warnings %q", *s.Process.OOMScoreAdj, w)
		}
	})
	t.Run("host network: no hostname, no net sysctls", func(t *testing.T) {
		in := testSandboxInput(t, func(in *SandboxInput) {
			in.Namespaces = Namespaces{HostNet: true, HostUTS: true}
		})
		s, _, err := SandboxWithWarnings(in)
		if err != nil {
			t.Fatal(err)
		}
		validate(t, s)
		if s.Hostname != "" {
			t.Errorf("hostname %q without a UTS namespace", s.Hostname)
		}
		in.Config.Linux.Sysctls = map[string]string{"net.core.somaxconn": "1024"}
		if _, _, err := SandboxWithWarnings(in); err == nil || !strings.HasPrefix(err.Error(), `linux.sysctls["net.core.somaxconn"]:`) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("sysctl checks", func(t *testing.T) {
		for _, tt := range []struct {
			k       string
			ns      Namespaces
			wantErr bool
			norm    string
		}{
			{k: "kernel.msgmax", ns: Namespaces{Net: "/n", HostIPC: true}, wantErr: true},
			{k: "fs.mqueue.msg_max", ns: Namespaces{Net: "/n"}},
			{k: "vm.swappiness", ns: Namespaces{Net: "/n"}, wantErr: true},
			{k: "kernel.domainname", ns: Namespaces{HostNet: true, HostUTS: true}, wantErr: true},
			{k: "net/ipv4/conf/eth0.100/forwarding", ns: Namespaces{Net: "/n"}, norm: "net.ipv4.conf.eth0/100.forwarding"},
		} {
			in := testSandboxInput(t, func(in *SandboxInput) {
				in.Namespaces = tt.ns
				in.Config.Linux.Sysctls = map[string]string{tt.k: "1"}
			})
			s, _, err := SandboxWithWarnings(in)
			if tt.wantErr {
				if err == nil || !IsInvalidArgument(err) {
					t.Errorf("%s: want error", tt.k)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", tt.k, err)
				continue
			}
			want := tt.norm
			if want == "" {
				want = tt.k
			}
			if s.Linux.Sysctl[want] != "1" {
				t.Errorf("%s: sysctls %v", tt.k, s.Linux.Sysctl)
			}
		}
	})
	t.Run("user and groups", func(t *testing.T) {
		s, _, err := SandboxWithWarnings(testSandboxInput(t, func(in *SandboxInput) {
			in.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
				RunAsUser: i64v(65535), RunAsGroup: i64v(65535), SupplementalGroups: []int64{1, 65535},
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		if u := s.Process.User; u.UID != 65535 || u.GID != 65535 || !slices.Equal(u.AdditionalGids, []uint32{1, 65535}) {
			t.Errorf("user %+v", u)
		}
	})
	t.Run("default and uid-only users", func(t *testing.T) {
		for _, tc := range []struct {
			sc       *runtimeapi.LinuxSandboxSecurityContext
			uid, gid uint32
		}{
			{nil, PauseUser, PauseUser},
			{&runtimeapi.LinuxSandboxSecurityContext{RunAsUser: i64v(1000)}, 1000, 0},
			{&runtimeapi.LinuxSandboxSecurityContext{RunAsUser: i64v(0)}, 0, 0},
			{&runtimeapi.LinuxSandboxSecurityContext{RunAsGroup: i64v(7)}, PauseUser, 7},
		} {
			s, _, err := SandboxWithWarnings(testSandboxInput(t, func(in *SandboxInput) {
				in.Config.Linux.SecurityContext = tc.sc
			}))
			if err != nil {
				t.Fatal(err)
			}
			if u := s.Process.User; u.UID != tc.uid || u.GID != tc.gid {
				t.Errorf("%v: user %+v, want %d:%d", tc.sc, u, tc.uid, tc.gid)
			}
		}
	})
	t.Run("seccomp runtime default", func(t *testing.T) {
		s, _, err := SandboxWithWarnings(testSandboxInput(t, func(in *SandboxInput) {
			in.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{
				Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
			}
		}))
		if err != nil {
			t.Fatal(err)
		}
		if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno {
			t.Error("no default seccomp")
		}
		if u, _ := allowed(s.Linux.Seccomp, "chroot"); u {
			t.Error("pause has no CAP_SYS_CHROOT")
		}
	})
	t.Run("host pid and ipc", func(t *testing.T) {
		n, err := SandboxNamespaces(&runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE}, "/run/netns/p")
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := SandboxWithWarnings(testSandboxInput(t, func(in *SandboxInput) { in.Namespaces = n }))
		if err != nil {
			t.Fatal(err)
		}
		for _, ns := range s.Linux.Namespaces {
			if ns.Type == specs.PIDNamespace || ns.Type == specs.IPCNamespace {
				t.Errorf("%s namespace with NODE mode", ns.Type)
			}
		}
	})
	t.Run("errors", func(t *testing.T) {
		if _, err := Sandbox(testSandboxInput(t, func(in *SandboxInput) { in.PauseArgs = nil })); err == nil {
			t.Error("no pause args")
		}
		if _, err := Sandbox(SandboxInput{}); err == nil {
			t.Error("empty input")
		}
		if _, err := Sandbox(testSandboxInput(t, func(in *SandboxInput) {
			in.Config.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{RunAsUser: i64v(-5)}
		})); err == nil || !strings.HasPrefix(err.Error(), "linux.security_context.run_as_user:") {
			t.Errorf("negative uid: %v", err)
		}
	})
}
