package e2e

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestUnsupportedAndInvalidContainers: a valid request for a CRI feature
// peapod lacks answers Unimplemented naming the field (the kubelet and
// critest then know the runtime cannot, rather than that the request was
// wrong); a request that is wrong answers InvalidArgument naming the field.
// Neither leaves a container behind.
func TestUnsupportedAndInvalidContainers(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true})
	pullBusybox(t, d)
	ctx := d.ctx()
	cfg := podConfig(d, "unsupported")
	run, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	// Image volumes are read-only by definition (image_volume_test.go).
	imageVolume := containerConfig("iv", "true")
	imageVolume.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", Image: &runtimeapi.ImageSpec{Image: busybox}}}
	relativeWD := containerConfig("wd", "true")
	relativeWD.WorkingDir = "relative/dir"
	for _, tc := range []struct {
		cfg  *runtimeapi.ContainerConfig
		code codes.Code
		want string
	}{
		{imageVolume, codes.InvalidArgument, "mounts[0].readonly"},
		{relativeWD, codes.InvalidArgument, "working_dir"},
	} {
		_, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, Config: tc.cfg, SandboxConfig: cfg})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %s naming %s", tc.cfg.Metadata.Name, err, tc.code, tc.want)
		}
	}
	list, err := d.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil || len(list.Containers) != 0 {
		t.Errorf("containers left: %v, %v", list, err)
	}
}
