package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// dialCRI makes a client of the runtime's CRI socket; the connection
// itself is made at the first call.
func dialCRI(rt *runtime) (*grpc.ClientConn, runtimeapi.RuntimeServiceClient, error) {
	conn, err := grpc.NewClient(rt.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", rt.endpoint, err)
	}
	return conn, runtimeapi.NewRuntimeServiceClient(conn), nil
}

// grpcOrder are the timed calls of a gRPC lifecycle, then their sum.
var grpcOrder = []string{"RunPodSandbox", "CreateContainer", "StartContainer", "total"}

// grpcLifecycles starts n pods one after the other straight over the CRI
// socket, with the configs crictl is given, timing each call: crictl's own
// process cost is three times in runp+create+start and pulls that ratio
// towards 1.
func grpcLifecycles(ctx context.Context, o options, rt *runtime, r *result) error {
	conn, cl, err := dialCRI(rt)
	if err != nil {
		return err
	}
	defer conn.Close()
	// Connect before the first timed call: the figures are the daemon's
	// handling of a call on an open connection, as the kubelet has one.
	if _, err := cl.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		return fmt.Errorf("Version: %w", err)
	}
	r.grpc = map[string][]float64{}
	for i := 0; i < o.n; i++ {
		t, err := grpcLifecycle(ctx, o, cl, fmt.Sprintf("grpc-%d", i), nil)
		if err != nil {
			return err
		}
		total := 0.0
		for _, p := range grpcOrder[:3] {
			r.grpc[p] = append(r.grpc[p], t[p])
			total += t[p]
		}
		r.grpc["total"] = append(r.grpc["total"], total)
	}
	return nil
}

// grpcLifecycle runs one pod and its container, timing each call, then
// stops and removes the pod (untimed), also when a call failed. A pod whose
// RunPodSandbox failed half-way has no id here; rt.stop's rmp -af removes it.
// annotations are added to the pod's.
func grpcLifecycle(ctx context.Context, o options, cl runtimeapi.RuntimeServiceClient, name string, annotations map[string]string) (t map[string]float64, err error) {
	podCfg, ctrCfg, err := grpcConfigs(o, name)
	if err != nil {
		return nil, err
	}
	for k, v := range annotations {
		if podCfg.Annotations == nil {
			podCfg.Annotations = map[string]string{}
		}
		podCfg.Annotations[k] = v
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute) // crictl's --timeout
	defer cancel()
	t = map[string]float64{}
	start := time.Now()
	run, err := cl.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		return nil, fmt.Errorf("RunPodSandbox %s: %w", name, err)
	}
	t["RunPodSandbox"] = time.Since(start).Seconds()
	pod := run.PodSandboxId
	defer func() {
		if rmErr := removePodSandbox(cl, pod); rmErr != nil && err == nil {
			t, err = nil, fmt.Errorf("%s: %w", name, rmErr)
		}
	}()
	start = time.Now()
	created, err := cl.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: ctrCfg, SandboxConfig: podCfg})
	if err != nil {
		return nil, fmt.Errorf("CreateContainer %s: %w", name, err)
	}
	t["CreateContainer"] = time.Since(start).Seconds()
	start = time.Now()
	if _, err := cl.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		return nil, fmt.Errorf("StartContainer %s: %w", name, err)
	}
	t["StartContainer"] = time.Since(start).Seconds()
	return t, nil
}

// removePodSandbox stops and removes a pod on a context of its own, so the
// pod goes also when the run's context was cancelled.
func removePodSandbox(cl runtimeapi.RuntimeServiceClient, pod string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cl.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		return fmt.Errorf("StopPodSandbox: %w", err)
	}
	if _, err := cl.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		return fmt.Errorf("RemovePodSandbox: %w", err)
	}
	return nil
}

// grpcConfigs writes crictl's JSON for pod name and decodes it as crictl
// does (JSON into the CRI types), so both paths send the same configs; like
// crictl create, it fills user_specified_image from the image.
func grpcConfigs(o options, name string) (*runtimeapi.PodSandboxConfig, *runtimeapi.ContainerConfig, error) {
	f, err := writeConfigs(o, name)
	if err != nil {
		return nil, nil, err
	}
	podCfg := &runtimeapi.PodSandboxConfig{}
	if err := readJSON(f.pod, podCfg); err != nil {
		return nil, nil, err
	}
	ctrCfg := &runtimeapi.ContainerConfig{}
	if err := readJSON(f.ctr, ctrCfg); err != nil {
		return nil, nil, err
	}
	if ctrCfg.Image == nil {
		return nil, nil, fmt.Errorf("%s: no image", f.ctr)
	}
	if ctrCfg.Image.UserSpecifiedImage == "" {
		ctrCfg.Image.UserSpecifiedImage = ctrCfg.Image.Image
	}
	return podCfg, ctrCfg, nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
