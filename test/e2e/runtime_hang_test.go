package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// hangSleep is the argument the hanging runtime sleeps with: a process
// left with it is one this test leaked.
const hangSleep = "6017"

// hangingRuntime writes a runc wrapper that hangs (sleeps) on the
// subcommands whose marker file exists in dir/marks, else runs runc.
func hangingRuntime(t *testing.T, dir string) string {
	t.Helper()
	marks := filepath.Join(dir, "marks")
	if err := os.MkdirAll(marks, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
for a in "$@"; do
	case "$a" in
	create|start|exec|kill) [ -e %s/"$a" ] && exec sleep %s ;;
	esac
done
exec /usr/sbin/runc "$@"
`, marks, hangSleep)
	path := filepath.Join(dir, "runc-hang")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// leakedSleeps are the hanging runtime's processes still alive.
func leakedSleeps() []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Equal(b, []byte("sleep\x00"+hangSleep+"\x00")) {
			out = append(out, filepath.Dir(p))
		}
	}
	return out
}

// TestRuntimeHangs: an OCI runtime that hangs on create, start, exec or
// kill. Each CRI call is bounded (the caller gets DeadlineExceeded),
// nothing is left half-made (no container record, no runtime or conmon
// process: a hung create used to leave both for ever), and once the
// runtime behaves again everything works. ~30 s, in parallel.
func TestRuntimeHangs(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	hdir := t.TempDir()
	wrapper := hangingRuntime(t, hdir)
	d := newDaemon(t, daemonOpts{
		mirrors:     map[string]string{"docker.io": "http://" + reg},
		extraConfig: fmt.Sprintf("[runtimes.hang]\npath = %q\nroot = %q\ncreate_timeout = \"15s\"\n", wrapper, filepath.Join(hdir, "root")),
	})
	mark := func(op string, on bool) {
		p := filepath.Join(hdir, "marks", op)
		if on {
			os.WriteFile(p, nil, 0o644)
		} else {
			os.Remove(p)
		}
	}
	t.Cleanup(func() {
		for _, op := range []string{"create", "start", "exec", "kill"} {
			mark(op, false)
		}
	})
	pullBusybox(t, d)
	pod := podConfig(d, "hang")
	run, err := d.rt.RunPodSandbox(d.ctx(), &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: "hang"})
	if err != nil {
		t.Fatal(err)
	}
	podID := run.PodSandboxId
	bounded := func(what string, call func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		start := time.Now()
		err := call(ctx)
		if st, _ := status.FromError(err); st.Code() != codes.DeadlineExceeded {
			t.Errorf("%s with the runtime hanging: %v after %v, want DeadlineExceeded", what, err, time.Since(start))
		}
	}
	containers := func() []*runtimeapi.Container {
		resp, err := d.rt.ListContainers(d.ctx(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Containers
	}

	// create
	mark("create", true)
	bounded("CreateContainer", func(ctx context.Context) error {
		_, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("c1", "sleep", "3600"), SandboxConfig: pod})
		return err
	})
	mark("create", false)
	// The caller had its DeadlineExceeded at once; peapod itself gives a
	// create runtimes.hang.create_timeout (15 s here, 4 min by default:
	// slow image mounts, a loaded node) before it rolls back — killing
	// conmon and the runtime it runs, found by command line since a hung
	// create leaves conmon no pid file.
	deadline := time.Now().Add(60 * time.Second)
	for len(containers()) > 0 || len(leakedSleeps()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("after a hung create: containers %v, runtime processes left %v", containers(), leakedSleeps())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// start
	c, err := d.rt.CreateContainer(d.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("c2", "sleep", "3600"), SandboxConfig: pod})
	if err != nil {
		t.Fatalf("CreateContainer once the runtime behaves: %v", err)
	}
	mark("start", true)
	bounded("StartContainer", func(ctx context.Context) error {
		_, err := d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
		return err
	})
	mark("start", false)
	if _, err := d.rt.RemoveContainer(d.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Errorf("RemoveContainer after a hung start: %v", err)
	}

	// exec and kill
	id := startContainer(t, d, podID, pod, containerConfig("c3", "sleep", "3600"))
	mark("exec", true)
	bounded("ExecSync", func(ctx context.Context) error {
		_, err := d.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}, Timeout: 2})
		return err
	})
	mark("exec", false)
	if out := execOut(t, d, id, "echo", "ok"); out != "ok\n" {
		t.Errorf("exec once the runtime behaves: %q", out)
	}
	mark("kill", true)
	bounded("StopContainer", func(ctx context.Context) error {
		_, err := d.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1})
		return err
	})
	mark("kill", false)
	if _, err := d.rt.StopContainer(d.ctx(), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Errorf("StopContainer once the runtime behaves: %v", err)
	}
	waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_EXITED)
	deadline = time.Now().Add(30 * time.Second)
	for len(leakedSleeps()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("runtime processes left: %v", leakedSleeps())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
