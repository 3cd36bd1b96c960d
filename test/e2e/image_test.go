package e2e

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestImageService covers what `crictl pull / images / inspecti / rmi /
// imagefsinfo` do, through a mirror and directly.
func TestImageService(t *testing.T) {
	reg := startRegistry(t)
	if !hostOnlyAddr(reg) {
		t.Fatalf("registry %s is not on loopback", reg)
	}
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	ctx := d.ctx()

	start := time.Now()
	// Short name, normalised and served through the docker.io mirror.
	pulled, err := d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}})
	if err != nil {
		t.Fatalf("pull busybox via mirror: %v", err)
	}
	t.Logf("pull of busybox from the local registry took %v", time.Since(start))
	if !strings.HasPrefix(pulled.ImageRef, "sha256:") {
		t.Fatalf("image ref %q is not an id", pulled.ImageRef)
	}
	// Directly from the loopback registry (plain http, no config).
	direct := reg + "/library/busybox:latest"
	if _, err := d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: direct}}); err != nil {
		t.Fatalf("pull %s: %v", direct, err)
	}

	list, err := d.img.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var found *runtimeapi.Image
	for _, img := range list.Images {
		if img.Id == pulled.ImageRef {
			found = img
		}
	}
	if found == nil {
		t.Fatalf("pulled image %s not listed: %v", pulled.ImageRef, list.Images)
	}
	tags := strings.Join(found.RepoTags, ",")
	if !strings.Contains(tags, "docker.io/library/busybox:latest") || !strings.Contains(tags, direct) {
		t.Errorf("repo tags = %v, want the upstream and the direct name", found.RepoTags)
	}
	if len(found.RepoDigests) == 0 || found.Size == 0 {
		t.Errorf("image lacks digests or size: %v", found)
	}

	// Filtered list and verbose status by short name.
	fl, err := d.img.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "busybox"}}})
	if err != nil || len(fl.Images) != 1 {
		t.Fatalf("filtered list = %v, %v", fl, err)
	}
	st, err := d.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}, Verbose: true})
	if err != nil || st.Image == nil || st.Image.Id != pulled.ImageRef {
		t.Fatalf("ImageStatus = %v, %v", st, err)
	}
	if !strings.Contains(st.Info["info"], "imageSpec") {
		t.Errorf("verbose info lacks the image config: %v", st.Info)
	}
	missing, err := d.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "docker.io/library/nothere:1"}})
	if err != nil || missing.Image != nil {
		t.Fatalf("status of an absent image = %v, %v; want empty, no error", missing, err)
	}

	fs, err := d.img.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil || len(fs.ImageFilesystems) == 0 || fs.ImageFilesystems[0].UsedBytes.GetValue() == 0 {
		t.Fatalf("ImageFsInfo = %v, %v", fs, err)
	}

	// A pull of an absent tag fails with a clear error, without leaving the box.
	if _, err := d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox:does-not-exist"}}); err == nil {
		t.Fatal("pull of an absent tag succeeded")
	}

	// Images survive a restart.
	d.stop()
	d.start()
	st, err = d.img.ImageStatus(d.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: pulled.ImageRef}})
	if err != nil || st.Image == nil {
		t.Fatalf("after restart ImageStatus = %v, %v", st, err)
	}

	// rmi by tag removes the image with all its tags; a second rmi succeeds.
	ctx = d.ctx()
	if _, err := d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}}); err != nil {
		t.Fatalf("RemoveImage: %v", err)
	}
	if _, err := d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: "busybox"}}); err != nil {
		t.Fatalf("RemoveImage of an absent image: %v", err)
	}
	st, err = d.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: direct}})
	if err != nil || st.Image != nil {
		t.Fatalf("image still there after rmi: %v, %v", st, err)
	}
	if _, err := d.img.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("RemoveImage without a ref = %v, want InvalidArgument", err)
	}
}

// TestStatusConditions: NetworkReady is false, with a reason naming what is
// missing, when no CNI plugin can be found.
func TestStatusConditions(t *testing.T) {
	d := newDaemon(t, daemonOpts{cniBinDirs: []string{t.TempDir()}})
	resp, err := d.rt.Status(d.ctx(), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	conds := map[string]*runtimeapi.RuntimeCondition{}
	for _, c := range resp.Status.Conditions {
		conds[c.Type] = c
	}
	if c := conds[runtimeapi.RuntimeReady]; c == nil || !c.Status {
		t.Errorf("RuntimeReady = %v", c)
	}
	if c := conds[runtimeapi.NetworkReady]; c == nil || c.Status || !strings.Contains(c.Message, "bridge") {
		t.Errorf("NetworkReady = %v, want false naming the missing plugin", c)
	}
	rc, err := d.rt.RuntimeConfig(d.ctx(), &runtimeapi.RuntimeConfigRequest{})
	if err != nil || rc.Linux.CgroupDriver != runtimeapi.CgroupDriver_CGROUPFS {
		t.Fatalf("RuntimeConfig = %v, %v", rc, err)
	}
	var names []string
	for _, h := range resp.RuntimeHandlers {
		names = append(names, h.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "runc") {
		t.Errorf("handlers = %v, want runc", names)
	}
}

// TestKill9MidPull: peapod killed with kill -9 while pulling leaves no half
// image visible after a restart, and the next pull completes and runs.
func TestKill9MidPull(t *testing.T) {
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	for _, delay := range []time.Duration{5 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond} {
		go d.img.PullImage(d.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: busybox}})
		time.Sleep(delay)
		d.kill9()
		d.start()
		st, err := d.img.ImageStatus(d.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: busybox}})
		if err != nil {
			t.Fatal(err)
		}
		if st.Image != nil {
			// The pull finished before the kill: it must then be whole.
			t.Logf("kill after %v: the pull had completed", delay)
			if _, err := d.img.RemoveImage(d.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: busybox}}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		list, err := d.img.ListImages(d.ctx(), &runtimeapi.ListImagesRequest{})
		if err != nil || len(list.Images) != 0 {
			t.Fatalf("kill after %v: images listed after the restart: %v, %v", delay, list, err)
		}
	}
	pullBusybox(t, d)
	pod := podConfig(d, "afterkill")
	podID := runPod(t, d, pod)
	id := startContainer(t, d, podID, pod, containerConfig("a", "sleep", "300"))
	waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
}
