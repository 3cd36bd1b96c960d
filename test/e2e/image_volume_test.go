package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/hack/testimages/imagebuild"
)

// imageVolumeMounts lists the image volume overlays of d (mount points
// under <root>/images/volumes), as the kernel sees them.
func (d *daemon) imageVolumeMounts(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(d.dir, "root", "images", "volumes") + "/"
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return out
}

// pullRef pulls ref and returns its image_ref (the image id), which the
// kubelet puts in Mount.image.
func pullRef(t *testing.T, d *daemon, ref string) string {
	t.Helper()
	r, err := d.img.PullImage(d.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return r.ImageRef
}

func imageMount(dst, imageRef, sub string) *runtimeapi.Mount {
	return &runtimeapi.Mount{ContainerPath: dst, Image: &runtimeapi.ImageSpec{Image: imageRef}, ImageSubPath: sub, Readonly: true}
}

func removeContainer(t *testing.T, d *daemon, id string) {
	t.Helper()
	if _, err := d.rt.RemoveContainer(d.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("RemoveContainer %s: %v", id, err)
	}
}

// TestImageVolume: CRI Mount.image (the kubelet's ImageVolume). A second
// image's rootfs is mounted read-only in a busybox container, whole and by
// image_sub_path; one overlay per image, shared by the containers using it
// and gone with the last; RemoveImage refused while it is mounted, naming
// the container; hostile and absent inputs refused with the code the
// kubelet expects, leaving nothing behind.
func TestImageVolume(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true})
	pullBusybox(t, d)
	busyboxID := pullRef(t, d, busybox)
	cfgImage := reg + "/" + imagebuild.RepoBusyboxConfig + ":latest"
	volID := pullRef(t, d, cfgImage)
	ctx := d.ctx()
	pod := podConfig(d, "imagevol")
	podID := runPod(t, d, pod)

	hello := imagebuild.ConfigHelloFile // /work/hello.txt, in the image's second layer
	reader := containerConfig("reader", "sleep", "3600")
	reader.Mounts = []*runtimeapi.Mount{
		imageMount("/data", volID, ""),
		imageMount("/sub", volID, strings.TrimPrefix(filepath.Dir(hello), "/")),
		imageMount("/file.txt", volID, strings.TrimPrefix(hello, "/")),
		imageMount("/bb", busyboxID, ""), // a one-layer image
	}
	readerID := startContainer(t, d, podID, pod, reader)
	for _, p := range []string{"/data" + hello, "/sub/" + filepath.Base(hello), "/file.txt"} {
		if got := execOut(t, d, readerID, "cat", p); got != imagebuild.ConfigHelloContent {
			t.Errorf("cat %s = %q, want %q", p, got, imagebuild.ConfigHelloContent)
		}
	}
	for _, p := range []string{"/data/new", "/data/work/new", "/sub/new", "/bb/new"} {
		if _, stderr, code := execTry(t, d, readerID, "touch", p); code == 0 || !strings.Contains(stderr, "Read-only file system") {
			t.Errorf("touch %s: exit %d, %q; want a read-only file system", p, code, stderr)
		}
	}
	// Read-only, not noexec (critest checks the same).
	if out := execOut(t, d, readerID, "/bb/bin/busybox", "echo", "exec ok"); out != "exec ok\n" {
		t.Errorf("binary from the volume: %q", out)
	}
	st, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: readerID})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Status.Mounts {
		if m.GetImage() != nil && m.GetImage().GetImageRef() == "" {
			t.Errorf("status mount %s: no image_ref", m.ContainerPath)
		}
	}
	if mounts := d.imageVolumeMounts(t); len(mounts) != 2 {
		t.Fatalf("image volume mounts = %v, want one per image (2)", mounts)
	}

	// A second user shares the overlay.
	reader2 := containerConfig("reader2", "sleep", "3600")
	reader2.Mounts = []*runtimeapi.Mount{imageMount("/data", cfgImage, "")} // by name this time
	reader2ID := startContainer(t, d, podID, pod, reader2)
	if got := execOut(t, d, reader2ID, "cat", "/data"+hello); got != imagebuild.ConfigHelloContent {
		t.Errorf("reader2: %q", got)
	}
	if mounts := d.imageVolumeMounts(t); len(mounts) != 2 {
		t.Errorf("after a second user: mounts = %v, want still 2", mounts)
	}

	// Refusals: each names the field, none leaves a container or a mount.
	for _, tc := range []struct {
		name string
		m    *runtimeapi.Mount
		code codes.Code
		want string
	}{
		{"dotdot", imageMount("/data", volID, "../../../etc"), codes.InvalidArgument, "mounts[0].image_sub_path"},
		{"dotdot-inner", imageMount("/data", volID, "work/../.."), codes.InvalidArgument, "mounts[0].image_sub_path"},
		{"absolute", imageMount("/data", volID, "/etc"), codes.InvalidArgument, "mounts[0].image_sub_path"},
		{"missing", imageMount("/data", volID, "not-existing"), codes.InvalidArgument, "mounts[0].image_sub_path"},
		{"not-readonly", &runtimeapi.Mount{ContainerPath: "/data", Image: &runtimeapi.ImageSpec{Image: volID}}, codes.InvalidArgument, "mounts[0].readonly"},
		{"with-host-path", &runtimeapi.Mount{ContainerPath: "/data", HostPath: "/etc", Readonly: true, Image: &runtimeapi.ImageSpec{Image: volID}}, codes.InvalidArgument, "mounts[0].host_path"},
		{"absent-image", imageMount("/data", "docker.io/library/absent:1", ""), codes.NotFound, "mounts[0].image"},
	} {
		cc := containerConfig("bad-"+tc.name, "true")
		cc.Mounts = []*runtimeapi.Mount{tc.m}
		_, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: pod})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ImageVolumeMountFailed: ") {
			t.Errorf("%s: err = %v, want %s naming %s with the ImageVolumeMountFailed prefix", tc.name, err, tc.code, tc.want)
		}
	}
	if list, err := d.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil || len(list.Containers) != 2 {
		t.Errorf("containers after the refusals: %v, %v; want the 2 readers", list, err)
	}
	if mounts := d.imageVolumeMounts(t); len(mounts) != 2 {
		t.Errorf("after the refusals: mounts = %v, want 2", mounts)
	}

	// RemoveImage refused while mounted, naming the users.
	_, err = d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: volID}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), readerID) || !strings.Contains(err.Error(), reader2ID) {
		t.Fatalf("RemoveImage of a mounted image: %v, want FailedPrecondition naming %s and %s", err, readerID, reader2ID)
	}
	if crictl, _ := filepath.Abs("../../bin/crictl"); fileExists(crictl) {
		cfg := filepath.Join(d.dir, "crictl.yaml")
		os.WriteFile(cfg, nil, 0o644)
		out, err := exec.Command(crictl, "--config", cfg, "--runtime-endpoint", "unix://"+d.socket, "--image-endpoint", "unix://"+d.socket, "rmi", volID).CombinedOutput()
		if err == nil || !strings.Contains(string(out), readerID) {
			t.Errorf("crictl rmi of a mounted image: %v\n%s", err, out)
		}
		t.Logf("crictl rmi says: %s", strings.TrimSpace(string(out)))
	}

	// The first reader goes: busybox's volume (its only user) is unmounted,
	// busybox-config's stays for reader2.
	removeContainer(t, d, readerID)
	if mounts := d.imageVolumeMounts(t); len(mounts) != 1 {
		t.Errorf("after removing reader: mounts = %v, want 1", mounts)
	}
	if _, err := d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: volID}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("RemoveImage while reader2 mounts it: %v", err)
	}
	removeContainer(t, d, reader2ID)
	if mounts := d.imageVolumeMounts(t); len(mounts) != 0 {
		t.Errorf("after the last user: mounts = %v, want none", mounts)
	}
	if _, err := d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: volID}}); err != nil {
		t.Errorf("RemoveImage after the last user: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(d.dir, "root", "images", "volumes")); len(ents) != 0 {
		t.Errorf("image volume dirs left: %v", ents)
	}
	if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
}

// TestImageVolumeKill9: peapod killed with -9 while a container runs with
// an image volume; after the restart the volume is still counted (the
// image cannot be removed, the container still reads it) and removing the
// container unmounts it.
func TestImageVolumeKill9(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true})
	pullBusybox(t, d)
	volID := pullRef(t, d, reg+"/"+imagebuild.RepoWhiteout+":latest") // three layers with whiteouts
	pod := podConfig(d, "imagevol-kill")
	podID := runPod(t, d, pod)
	cc := containerConfig("survivor", "sleep", "3600")
	cc.Mounts = []*runtimeapi.Mount{imageMount("/w", volID, "data")}
	id := startContainer(t, d, podID, pod, cc)
	check := func(when string) {
		t.Helper()
		for _, p := range imagebuild.WhiteoutPresent {
			if rest, ok := strings.CutPrefix(p, "/data/"); ok {
				if _, _, code := execTry(t, d, id, "test", "-e", "/w/"+rest); code != 0 {
					t.Errorf("%s: /w/%s missing", when, rest)
				}
			}
		}
		for _, p := range imagebuild.WhiteoutAbsent {
			if rest, ok := strings.CutPrefix(p, "/data/"); ok {
				if _, _, code := execTry(t, d, id, "test", "-e", "/w/"+rest); code == 0 {
					t.Errorf("%s: /w/%s present", when, rest)
				}
			}
		}
	}
	check("before the kill")
	before := d.imageVolumeMounts(t)
	if len(before) != 1 {
		t.Fatalf("mounts = %v, want 1", before)
	}

	d.kill9()
	d.start()
	ctx := d.ctx()
	waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	check("after the restart")
	if after := d.imageVolumeMounts(t); len(after) != 1 || after[0] != before[0] {
		t.Errorf("mounts after the restart = %v, want %v", after, before)
	}
	_, err := d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: volID}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), id) {
		t.Errorf("RemoveImage after the restart: %v, want FailedPrecondition naming %s", err, id)
	}
	removeContainer(t, d, id)
	if mounts := d.imageVolumeMounts(t); len(mounts) != 0 {
		t.Errorf("after removing the container: mounts = %v, want none", mounts)
	}
	if _, err := d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: volID}}); err != nil {
		t.Errorf("RemoveImage after the container: %v", err)
	}
	if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
