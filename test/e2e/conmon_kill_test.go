package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// conmonOf finds the conmon process of container id by its command line.
func conmonOf(t *testing.T, id string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := bytes.Split(b, []byte{0})
		if len(args) > 2 && filepath.Base(string(args[0])) == "conmon" && bytes.Contains(b, []byte("\x00-c\x00"+id+"\x00")) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	t.Fatalf("no conmon for container %s", id)
	return 0
}

// TestConmonKilled: conmon killed -9 under a running container. The
// container keeps running and says so; stopping it works and its state
// becomes EXITED (the code unknown: nobody was left to record it, and the
// status says that) instead of staying RUNNING for ever; a container that
// exits by itself after its conmon died is found EXITED too, also when
// peapod restarted meanwhile.
func TestConmonKilled(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	pullBusybox(t, d)
	pod := podConfig(d, "conmonkill")
	podID := runPod(t, d, pod)

	long := startContainer(t, d, podID, pod, containerConfig("long", "sleep", "3600"))
	short := startContainer(t, d, podID, pod, containerConfig("short", "sh", "-c", "sleep 3; exit 7"))
	later := startContainer(t, d, podID, pod, containerConfig("later", "sh", "-c", "sleep 8; exit 3"))
	waitState(t, d, long, runtimeapi.ContainerState_CONTAINER_RUNNING)
	for _, id := range []string{long, short, later} {
		if err := syscall.Kill(conmonOf(t, id), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	st := waitState(t, d, long, runtimeapi.ContainerState_CONTAINER_RUNNING)
	t.Logf("long after its conmon died: %s", st.State)

	// The short one exits by itself with nobody to record it.
	st = waitState(t, d, short, runtimeapi.ContainerState_CONTAINER_EXITED)
	t.Logf("short: exit %d reason %q message %q", st.ExitCode, st.Reason, st.Message)
	if st.Message == "" {
		t.Errorf("an exit nobody recorded says nothing about it: %+v", st)
	}

	// A restart of peapod finds "later" running without its conmon and
	// still notices its exit.
	d.stop()
	d.start()
	waitState(t, d, later, runtimeapi.ContainerState_CONTAINER_RUNNING)
	st = waitState(t, d, later, runtimeapi.ContainerState_CONTAINER_EXITED)
	t.Logf("later, after a peapod restart: exit %d message %q", st.ExitCode, st.Message)

	if _, err := d.rt.StopContainer(d.ctx(), &runtimeapi.StopContainerRequest{ContainerId: long, Timeout: 2}); err != nil {
		t.Fatalf("StopContainer after conmon died: %v", err)
	}
	st = waitState(t, d, long, runtimeapi.ContainerState_CONTAINER_EXITED)
	t.Logf("long stopped: exit %d message %q", st.ExitCode, st.Message)
	for _, id := range []string{long, short, later} {
		if _, err := d.rt.RemoveContainer(d.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Errorf("RemoveContainer %s: %v", id, err)
		}
	}
}
