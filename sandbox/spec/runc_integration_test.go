package spec

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestRuncRunsGeneratedSpec runs a generated container spec with the real
// runc (PEAPOD_INTEGRATION=1, root, runc and a static busybox needed): the
// user and groups from the image's /etc/passwd and /etc/group, RuntimeDefault
// seccomp, no_new_privs, a read-only rootfs, ro and rro bind mounts, masked
// paths and the oom_score_adj clamp must all work as runc applies them.
func TestRuncRunsGeneratedSpec(t *testing.T) {
	if os.Getenv("PEAPOD_INTEGRATION") == "" {
		t.Skip("PEAPOD_INTEGRATION not set")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("no runc")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("no busybox")
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "data", "rdata"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "id", "cat", "touch", "grep", "echo"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", a))
	}
	os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte(testPasswd), 0o644)
	os.WriteFile(filepath.Join(rootfs, "etc/group"), []byte(testGroup), 0o644)
	hostData := filepath.Join(dir, "hostdata")
	os.MkdirAll(filepath.Join(hostData, "sub"), 0o755)
	os.WriteFile(filepath.Join(hostData, "f"), []byte("hello\n"), 0o644)

	own, _ := os.ReadFile("/proc/self/oom_score_adj")
	minAdj, _ := strconv.Atoi(strings.TrimSpace(string(own)))
	hostCaps, err := CurrentCapabilities()
	if err != nil {
		t.Fatal(err)
	}

	script := `id -u; id -G; grep NoNewPrivs /proc/self/status; grep Seccomp: /proc/self/status; ` +
		`cat /data/f; touch /x 2>/dev/null && echo rootfs-rw || echo rootfs-ro; ` +
		`touch /data/y 2>/dev/null && echo data-rw || echo data-ro; ` +
		`cat /proc/kcore >/dev/null 2>&1; cat /proc/self/oom_score_adj; echo $HOSTNAME`
	id := fmt.Sprintf("peapod-spec-test-%d", os.Getpid())
	in := ContainerInput{
		ID:        id,
		SandboxID: "sb",
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "t"},
			Image:    &runtimeapi.ImageSpec{Image: "busybox"},
			Command:  []string{"/bin/sh", "-c", script},
			Mounts: []*runtimeapi.Mount{
				{ContainerPath: "/data", HostPath: hostData, Readonly: true},
				{ContainerPath: "/rdata", HostPath: hostData, Readonly: true, RecursiveReadOnly: true},
			},
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources: &runtimeapi.LinuxContainerResources{OomScoreAdj: -997, MemoryLimitInBytes: 64 << 20},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					RunAsUsername:      "alice",
					SupplementalGroups: []int64{5000},
					NoNewPrivs:         true,
					ReadonlyRootfs:     true,
					Seccomp:            &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
				},
			},
		},
		Sandbox:        testSandboxConfig(),
		Image:          &v1.Config{},
		RootfsPath:     rootfs,
		MinOOMScoreAdj: minAdj,
		HostCaps:       hostCaps,
	}
	// A standalone container: new namespaces of every kind, no sandbox to join.
	in.Namespaces = Namespaces{}
	s, w, err := Container(in)
	if err != nil {
		t.Fatal(err)
	}
	s.Hostname = "web-pod" // it owns its UTS namespace here
	t.Logf("warnings: %q", w)
	b, _ := json.MarshalIndent(s, "", " ")
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errb := runcRun(t, runc, dir, id)
	got := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		"1000",
		"1000 10 100 5000",
		"NoNewPrivs:\t1",
		"Seccomp:\t2",
		"hello",
		"rootfs-ro",
		"data-ro",
		strconv.Itoa(max(-997, minAdj)),
		"web-pod",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("container said:\n%s\nwant:\n%s\nstderr: %s", out, strings.Join(want, "\n"), errb)
	}

	// The pause spec, with a sysctl and the hostname, in its own namespaces.
	sb, err := Sandbox(SandboxInput{
		ID: id + "-pause",
		Config: &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "u"},
			Hostname: "web-pod",
			Linux: &runtimeapi.LinuxPodSandboxConfig{
				Sysctls: map[string]string{"net.ipv4.ip_unprivileged_port_start": "0"},
				SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
					RunAsUser: i64v(65535),
					Seccomp:   &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
				},
			},
		},
		RootfsPath:     rootfs,
		PauseArgs:      []string{"/bin/sh", "-c", "id -u; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; cat /proc/sys/kernel/hostname; grep CapEff /proc/self/status"},
		MinOOMScoreAdj: minAdj,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ = json.MarshalIndent(sb, "", " ")
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errb = runcRun(t, runc, dir, id+"-pause")
	if want := "65535\n0\nweb-pod\nCapEff:\t0000000000000000"; strings.TrimSpace(out) != want {
		t.Errorf("pause said:\n%s\nwant:\n%s\nstderr: %s", out, want, errb)
	}
}

// TestRuncRunsPrivilegedSpec: a privileged container with the defaults
// (peapod's own caps, every host device) must start under runc on a host
// that withholds CAP_SYS_RESOURCE.
func TestRuncRunsPrivilegedSpec(t *testing.T) {
	if os.Getenv("PEAPOD_INTEGRATION") == "" {
		t.Skip("PEAPOD_INTEGRATION not set")
	}
	runc, err1 := exec.LookPath("runc")
	busybox, err2 := exec.LookPath("busybox")
	if os.Geteuid() != 0 || err1 != nil || err2 != nil {
		t.Skip("needs root, runc and busybox")
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	bb, _ := os.ReadFile(busybox)
	os.WriteFile(filepath.Join(rootfs, "bin/sh"), bb, 0o755)
	own, _ := os.ReadFile("/proc/self/oom_score_adj")
	minAdj, _ := strconv.Atoi(strings.TrimSpace(string(own)))
	id := fmt.Sprintf("peapod-spec-priv-%d", os.Getpid())
	sbCfg := testSandboxConfig()
	sbCfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{Privileged: true}
	s, _, err := Container(ContainerInput{
		ID: id,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "p"},
			Command:  []string{"/bin/sh", "-c", "test -c /dev/null && echo ok"},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Privileged: true,
			}},
		},
		Sandbox:        sbCfg,
		RootfsPath:     rootfs,
		MinOOMScoreAdj: minAdj,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	if out, errb := runcRun(t, runc, dir, id); strings.TrimSpace(out) != "ok" {
		t.Errorf("stdout %q stderr %q", out, errb)
	}
}

func runcRun(t *testing.T, runc, bundle, id string) (stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root := filepath.Join(bundle, "runc")
	cmd := exec.CommandContext(ctx, runc, "--root", root, "run", "--bundle", bundle, id)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	exec.Command(runc, "--root", root, "delete", "-f", id).Run()
	if err != nil {
		t.Fatalf("runc run %s: %v\nstdout: %s\nstderr: %s", id, err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}
