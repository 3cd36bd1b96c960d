package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/sandbox/network/failpoint"
	"peapod/sandbox/network/nettest"
)

// failpointDaemon runs peapod with its bridge wrapped in the cni-failpoint
// plugin; it returns the plugin's control dir.
func failpointDaemon(t *testing.T) (*daemon, string) {
	t.Helper()
	integration(t)
	pluginDir := nettest.BuildFailpoint(t)
	control := t.TempDir()
	d := newDaemon(t, daemonOpts{
		cniBinDirs:       []string{pluginDir, "/usr/lib/cni", "/opt/cni/bin"},
		failpointControl: control,
	})
	return d, control
}

// leftovers lists what a pod may leave behind: netns pins of this daemon,
// veths on its bridge, IP allocations, sandbox dirs, listed pods.
func leftovers(t *testing.T, d *daemon) []string {
	t.Helper()
	var out []string
	if dirs, _ := os.ReadDir(filepath.Join(d.dir, "run", "sandboxes")); len(dirs) > 0 {
		out = append(out, fmt.Sprintf("%d sandbox dirs", len(dirs)))
		for _, e := range dirs {
			if _, err := os.Stat("/run/netns/peapod-" + e.Name()); err == nil {
				out = append(out, "netns peapod-"+e.Name())
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second) // the kernel frees veths of a dead netns asynchronously
	for {
		links, _ := os.ReadDir("/sys/class/net/" + d.bridge + "/brif")
		if len(links) == 0 {
			break
		}
		if time.Now().After(deadline) {
			out = append(out, fmt.Sprintf("%d veths on %s", len(links), d.bridge))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if allocs, _ := filepath.Glob(filepath.Join(d.dir, "ipam", "*", "10.*")); len(allocs) > 0 {
		out = append(out, fmt.Sprintf("IPs %v", allocs))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if pods, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil && len(pods.Items) > 0 {
		out = append(out, fmt.Sprintf("%d pods listed", len(pods.Items)))
	}
	// Cgroups of the pods these tests make (podConfig's uid-<name>-…).
	for _, name := range []string{"failadd", "deadline", "faildel"} {
		if left, _ := filepath.Glob("/sys/fs/cgroup/memory/peapod/poduid-" + name + "-*"); len(left) > 0 {
			out = append(out, fmt.Sprintf("cgroups %v", left))
		}
	}
	// Processes in those pods' cgroups (a `runc init` orphaned by a create
	// cut short shows no test dir in its command line).
	cgs, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, p := range cgs {
		data, _ := os.ReadFile(p)
		for _, name := range []string{"failadd", "deadline", "faildel"} {
			if strings.Contains(string(data), "/peapod/poduid-"+name+"-") {
				cmd, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
				out = append(out, "process in a pod cgroup: "+strings.ReplaceAll(string(cmd), "\x00", " "))
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	agent := d.agentPID()
	for _, p := range procs {
		cmd, _ := os.ReadFile(p)
		if filepath.Base(filepath.Dir(p)) == strconv.Itoa(agent) {
			continue // the daemon's own peapod-agent child
		}
		if strings.Contains(string(cmd), d.dir) && !strings.Contains(string(cmd), "serve") {
			out = append(out, "process "+strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
	return out
}

// TestRunPodSandboxRollsBack: a CNI ADD failure, and a caller whose
// deadline passes mid-way, leave no netns, veth, IP, process or record.
func TestRunPodSandboxRollsBack(t *testing.T) {
	d, control := failpointDaemon(t)

	cfg := podConfig(d, "failadd")
	if err := failpoint.Write(control, "failadd", failpoint.Control{CmdAdd: "1*error(injected ADD failure)"}); err != nil {
		t.Fatal(err)
	}
	_, err := d.rt.RunPodSandbox(d.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "injected ADD failure") {
		t.Fatalf("RunPodSandbox with failing ADD: err = %v", err)
	}
	if left := leftovers(t, d); len(left) > 0 {
		t.Fatalf("after a failed ADD: %v", left)
	}
	// The same pod then starts: the name was released.
	run, err := d.rt.RunPodSandbox(d.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox after the failpoint passed: %v", err)
	}
	if _, err := d.rt.RemovePodSandbox(d.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}

	// Deadlines that pass at different steps of RunPodSandbox.
	for _, deadline := range []time.Duration{5 * time.Millisecond, 30 * time.Millisecond, 80 * time.Millisecond, 150 * time.Millisecond, 250 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		_, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podConfig(d, "deadline")})
		cancel()
		if err == nil {
			// Fast enough to finish: then it must be removable.
			pods, _ := d.rt.ListPodSandbox(d.ctx(), &runtimeapi.ListPodSandboxRequest{})
			for _, p := range pods.Items {
				d.rt.RemovePodSandbox(d.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
			}
			continue
		}
		t.Logf("deadline %v: %v", deadline, err)
		// The server keeps unwinding after the client gave up; give it
		// time. A deadline that passes while the answer is on its way
		// leaves a finished, READY pod, as with any runtime: that one is
		// visible and removable, not a leak.
		var left []string
		for i := 0; i < 20; i++ {
			if left = leftovers(t, d); len(left) == 0 {
				break
			}
			if pods, err := d.rt.ListPodSandbox(d.ctx(), &runtimeapi.ListPodSandboxRequest{}); err == nil && len(pods.Items) == 1 && pods.Items[0].State == runtimeapi.PodSandboxState_SANDBOX_READY {
				t.Logf("deadline %v: the pod finished as the deadline passed; removing it", deadline)
				d.rt.RemovePodSandbox(d.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pods.Items[0].Id})
				continue
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(left) > 0 {
			t.Errorf("deadline %v (%v): left %v", deadline, err, left)
		}
	}
}

// TestStopPodSandboxRetriesCNIDel: a failing CNI DEL fails the stop, and
// the next stop runs DEL again and frees the IP.
func TestStopPodSandboxRetriesCNIDel(t *testing.T) {
	d, control := failpointDaemon(t)
	cfg := podConfig(d, "faildel")
	run, err := d.rt.RunPodSandbox(d.ctx(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if err := failpoint.Write(control, "faildel", failpoint.Control{CmdDel: "1*error(injected DEL failure)"}); err != nil {
		t.Fatal(err)
	}
	_, err = d.rt.StopPodSandbox(d.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId})
	if err == nil || !strings.Contains(err.Error(), "injected DEL failure") {
		t.Fatalf("first stop: err = %v, want the DEL failure", err)
	}
	if _, err := d.rt.StopPodSandbox(d.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if allocs, _ := filepath.Glob(filepath.Join(d.dir, "ipam", "*", "10.*")); len(allocs) > 0 {
		t.Fatalf("IP still allocated after the second stop: %v", allocs)
	}
	if _, err := d.rt.RemovePodSandbox(d.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId}); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, d); len(left) > 0 {
		t.Fatalf("after remove: %v", left)
	}
}
