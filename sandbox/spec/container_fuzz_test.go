package spec

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzContainer: a CRI ContainerConfig (any bytes the protobuf decoder
// accepts) becomes an OCI spec or a refusal, never a panic; a refusal is
// an error naming something; an accepted spec keeps its bounds: the rootfs
// is the one given, every mount destination is absolute and clean, every
// device is under /dev, the process runs in an absolute working dir, no
// capability that is not default, named or the host's ("ALL" and
// privileged grant no more than the host's), no oom_score_adj below the
// floor.
func FuzzContainer(f *testing.F) {
	seeds := []*runtimeapi.ContainerConfig{
		{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: &runtimeapi.ImageSpec{Image: "busybox"}, Command: []string{"sh"}},
		{Metadata: &runtimeapi.ContainerMetadata{Name: "m"}, Image: &runtimeapi.ImageSpec{Image: "b"}, Args: []string{"x"},
			Mounts:     []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: "/tmp"}, {ContainerPath: "../../etc", HostPath: "/"}, {ContainerPath: "rel", HostPath: "/x"}},
			Devices:    []*runtimeapi.Device{{ContainerPath: "/dev/x", HostPath: "/dev/null", Permissions: "rwm"}, {ContainerPath: "/etc/shadow", HostPath: "/dev/null"}},
			WorkingDir: "../..", Envs: []*runtimeapi.KeyValue{{Key: "A=B", Value: []byte("c")}}},
		{Metadata: &runtimeapi.ContainerMetadata{Name: "iv"}, Image: &runtimeapi.ImageSpec{Image: "b"}, Command: []string{"x"},
			Mounts: []*runtimeapi.Mount{{ContainerPath: "/vol", Image: &runtimeapi.ImageSpec{Image: "sha256:0"}, Readonly: true, ImageSubPath: "../etc"},
				{ContainerPath: "/rw", Image: &runtimeapi.ImageSpec{Image: "x"}, HostPath: "/etc"}}},
		{Metadata: &runtimeapi.ContainerMetadata{Name: "p"}, Image: &runtimeapi.ImageSpec{Image: "b"}, Command: []string{"x"},
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources: &runtimeapi.LinuxContainerResources{CpuShares: 2, MemoryLimitInBytes: 1, OomScoreAdj: -1000, CpusetCpus: "0-999999"},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					Privileged: true, Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"ALL", "CAP_BOGUS"}, DropCapabilities: []string{"ALL"}},
					RunAsUser: &runtimeapi.Int64Value{Value: -1}, RunAsUsername: "nobody", MaskedPaths: []string{"../x"}, ReadonlyPaths: []string{"rel"},
					Seccomp:  &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "../../../etc/passwd"},
					Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "x"},
				}}},
	}
	for _, c := range seeds {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	hostCaps := []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := &runtimeapi.ContainerConfig{}
		if err := proto.Unmarshal(b, cfg); err != nil {
			return
		}
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "etc"), 0o755)
		os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"), 0o644)
		os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
		in := ContainerInput{
			ID: "cid", SandboxID: "sid", Config: cfg,
			Sandbox:    &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "n", Uid: "u"}},
			Image:      &v1.Config{Cmd: []string{"sh"}},
			RootfsPath: root, Namespaces: Namespaces{Net: "/proc/1/ns/net", IPC: "/proc/1/ns/ipc", UTS: "/proc/1/ns/uts"},
			CgroupsPath: "/peapod/podu/cid", MinOOMScoreAdj: -500, SeccompProfileRoot: t.TempDir(),
			HostCaps: hostCaps, HostDevices: []specs.LinuxDevice{},
			LXCFSDir: "/var/lib/lxcfs", LXCFSPaths: []string{"/proc/meminfo", "/proc/cpuinfo", "/sys/devices/system/cpu/online"},
			ImageVolumes: map[int]string{},
		}
		for i := range cfg.GetMounts() {
			in.ImageVolumes[i] = fmt.Sprintf("/var/lib/peapod/images/volumes/v%d", i)
		}
		s, _, err := Container(in)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if s.Root == nil || s.Root.Path != root {
			t.Fatalf("root %v, want %s", s.Root, root)
		}
		for _, m := range s.Mounts {
			if !path.IsAbs(m.Destination) || path.Clean(m.Destination) != m.Destination {
				t.Fatalf("mount destination %q not absolute and clean", m.Destination)
			}
			// lxcfs's files go only where lxcfs serves them, and never
			// where the pod mounts its own.
			if slices.Equal(m.Options, lxcfsOptions) && (m.Source != "/var/lib/lxcfs"+m.Destination || LXCFSCovered(cfg.GetMounts(), m.Destination)) {
				t.Fatalf("lxcfs mount %+v", m)
			}
			// An image volume binds what the caller mounted, read-only
			// (unless a host mount happens to name the same source).
			imageSrc, hostSrc := false, false
			for i, cm := range cfg.GetMounts() {
				imageSrc = imageSrc || (IsImageMount(cm) && in.ImageVolumes[i] == m.Source)
				hostSrc = hostSrc || (!IsImageMount(cm) && cm.GetHostPath() == m.Source)
			}
			if imageSrc && !hostSrc && !slices.Contains(m.Options, "ro") && !slices.Contains(m.Options, "rro") {
				t.Fatalf("image volume mount %+v is not read-only", m)
			}
		}
		if s.Linux != nil {
			// Devices go where the caller says (device plugins name
			// their paths), but always at an absolute, clean path.
			for _, d := range s.Linux.Devices {
				if !path.IsAbs(d.Path) || path.Clean(d.Path) != d.Path {
					t.Fatalf("device at %q: not absolute and clean", d.Path)
				}
			}
		}
		if s.Process == nil || !path.IsAbs(s.Process.Cwd) {
			t.Fatalf("process cwd %v", s.Process)
		}
		if s.Process.OOMScoreAdj != nil && *s.Process.OOMScoreAdj < -500 {
			t.Fatalf("oom_score_adj %d below the floor", *s.Process.OOMScoreAdj)
		}
		// A cap is granted only when it is in the default set, named
		// explicitly, or the host's (what "ALL" and privileged reach).
		sc := cfg.GetLinux().GetSecurityContext()
		named := map[string]bool{}
		for _, a := range sc.GetCapabilities().GetAddCapabilities() {
			if n, ok := normalizeCap(a); ok {
				named[n] = true
			}
		}
		if c := s.Process.Capabilities; c != nil {
			for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted, c.Inheritable, c.Ambient} {
				for _, cp := range set {
					if !slices.Contains(hostCaps, cp) && !slices.Contains(DefaultCapabilities, cp) && !named[cp] {
						t.Fatalf("capability %s is neither default, named, nor the host's", cp)
					}
				}
			}
		}
	})
}
