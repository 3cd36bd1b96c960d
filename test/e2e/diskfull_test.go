package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/hack/testenv"
	"peapod/hack/testimages/imagebuild"
)

const enospc = "no space left on device"

// fillFS leaves about free bytes available on the filesystem at mnt, with
// filler files it replaces on each call (free < 0: it only removes them);
// free 0 fills the filesystem to its last block. It returns what is left.
func fillFS(t *testing.T, mnt string, free int64) int64 {
	t.Helper()
	for _, f := range []string{"filler", "filler-tail"} {
		if err := os.Remove(filepath.Join(mnt, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if free < 0 {
		return avail(t, mnt)
	}
	f, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// fallocate takes the blocks at once (no data written); the extent
	// tree may need a block or two of its own, so back off on ENOSPC.
	for n := avail(t, mnt) - free; n > 0; n -= 64 << 10 {
		if err = unix.Fallocate(int(f.Fd()), 0, 0, n); !errors.Is(err, unix.ENOSPC) {
			break
		}
	}
	if err != nil {
		t.Fatalf("fallocate filler: %v", err)
	}
	if free == 0 {
		// The last blocks, one at a time, until the filesystem says no.
		tf, err := os.Create(filepath.Join(mnt, "filler-tail"))
		if err != nil && !errors.Is(err, unix.ENOSPC) {
			t.Fatal(err)
		}
		if err == nil {
			buf := make([]byte, 4096)
			for err == nil {
				_, err = tf.Write(buf)
			}
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("filler tail: %v", err)
			}
			tf.Sync()
			tf.Close()
		}
	}
	return avail(t, mnt)
}

func avail(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// entries are the names in dir (none when it is missing).
func entries(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// criLine is one whole line of the logger in the CRI log format.
var (
	criLine     = regexp.MustCompile(`^` + criLineText)
	criLineText = `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d\d:\d\d stdout F line (\d+) 0{500}$`
	criLineEnd  = regexp.MustCompile(criLineText)
)

// logLines are the numbers n of the logger's "line n 000…" lines in a
// CRI log, in file order; the lines that hold the start of a line cut short
// followed by a whole line (glued); and the lines that are neither (bad).
func logLines(t *testing.T, path string) (nums []int, glued, bad []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		m := criLine.FindStringSubmatch(line)
		if m == nil {
			// A whole line after the start of another.
			if m = criLineEnd.FindStringSubmatch(line); m != nil {
				glued = append(glued, line)
			}
		}
		if m == nil {
			bad = append(bad, line)
			continue
		}
		n, _ := strconv.Atoi(m[1])
		nums = append(nums, n)
	}
	return nums, glued, bad
}

// mountsBelow are the mount points below dir.
func mountsBelow(dir string) []string {
	data, _ := os.ReadFile("/proc/self/mounts")
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			out = append(out, f[1])
		}
	}
	slices.Sort(out)
	return out
}

// containerInit is the pid of container id's init: conmon's child.
func containerInit(t *testing.T, id string) int {
	t.Helper()
	c := conmonOf(t, id)
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c, c))
	f := strings.Fields(string(b))
	if len(f) == 0 {
		t.Fatalf("conmon %d of %s has no child", c, id)
	}
	pid, _ := strconv.Atoi(f[0])
	return pid
}

// dbKeys are the keys of each bucket of a stopped daemon's state
// database, which must pass bbolt's consistency check.
func dbKeys(t *testing.T, path string, buckets ...string) map[string][]string {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	out := map[string][]string{}
	db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("%s: %v", path, err)
		}
		for _, name := range buckets {
			if b := tx.Bucket([]byte(name)); b != nil {
				b.ForEach(func(k, _ []byte) error { out[name] = append(out[name], string(k)); return nil })
			}
		}
		return nil
	})
	return out
}

// TestDiskFull: the filesystem that holds peapod's root and state (a small
// loop-mounted ext4) runs full under a running pod whose container logs all
// the time (issue 17 fault). A pull (download or unpack), a container
// create, a pod sandbox and a state database write each fail with "no space
// left on device" and leave nothing half-made (no image record, blob,
// snapshot or tmp file; no container or sandbox record, dir or mount). The
// running containers keep running: conmon drains their output and drops
// what it cannot write (the line that meets the full disk may be cut short,
// and the next line written after space is back follows it on the same
// line). A container that exits meanwhile has no exit file (conmon cannot
// write it): its code is unknown and its status says the disk is full. An
// exec fails naming the full disk. peapod restarts on the full disk, and
// what frees space (removing a container, an image, a pod) works there.
// Once space is back every operation succeeds, and nothing done before the
// disk filled is lost, also across a restart. ~10 s.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	// An image with 12 MiB of random (incompressible) bytes of its own:
	// more than the space left when it is pulled.
	l, err := random.Layer(12<<20, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	bigImg, err := mutate.AppendLayers(testenv.Images(t).Busybox, l)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := imagebuild.PushNamed(pctx, []imagebuild.Named{{Repo: "diskfull/big", Tag: imagebuild.Tag, Image: bigImg}}, reg, ""); err != nil {
		t.Fatal(err)
	}
	big := reg + "/diskfull/big:" + imagebuild.Tag

	mnt := loopFS(t, 64<<20)
	root, state := filepath.Join(mnt, "root"), filepath.Join(mnt, "run")
	d := newDaemon(t, daemonOpts{
		mirrors:       map[string]string{"docker.io": "http://" + reg},
		root:          root,
		state:         state,
		agentDisabled: true,
	})
	// Space back before the daemon's cleanup removes the pod (cleanups
	// run last-registered first).
	t.Cleanup(func() { fillFS(t, mnt, -1) })

	pullBusybox(t, d)
	// An image nothing uses, and a pod to evict: what the kubelet removes
	// under disk pressure, on the full disk.
	spare := reg + "/" + imagebuild.RepoBusyboxConfig + ":latest"
	if _, err := d.img.PullImage(d.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: spare}}); err != nil {
		t.Fatal(err)
	}
	evictPod := podConfig(d, "evictme")
	evictPod.LogDirectory = filepath.Join(mnt, "logs-evictme")
	evictID := runPod(t, d, evictPod)
	evictC := startContainer(t, d, evictID, evictPod, containerConfig("c", "sleep", "3600"))
	pod := podConfig(d, "diskfull")
	pod.LogDirectory = filepath.Join(mnt, "logs")
	podID := runPod(t, d, pod)
	sleeper := startContainer(t, d, podID, pod, containerConfig("sleeper", "sleep", "3600"))
	// ~550 bytes of log every 10 ms, and its count in /dev/shm (a tmpfs:
	// writable when the disk is full).
	logger := startContainer(t, d, podID, pod, containerConfig("logger", "sh", "-c",
		`i=0; while :; do i=$((i+1)); echo "line $i $(printf '%0500d' 0)"; echo $i >/dev/shm/count; sleep 0.01; done`))
	stopme := startContainer(t, d, podID, pod, containerConfig("stopme", "sleep", "3600"))
	logPath := filepath.Join(pod.LogDirectory, "logger.log")
	waitLog(t, logPath, "line 10 ")
	loggerPid := containerInit(t, logger)
	count := func() int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/dev/shm/count", loggerPid))
		if err != nil {
			t.Fatalf("logger's count: %v", err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}

	imagesDir := filepath.Join(root, "images")
	blobsBefore := entries(filepath.Join(imagesDir, "blobs", "sha256"))
	snapsBefore := entries(filepath.Join(imagesDir, "snapshots"))
	containerDirs := func() [][]string {
		return [][]string{entries(filepath.Join(root, "containers")), entries(filepath.Join(state, "containers")), entries(filepath.Join(state, "oci", "runc"))}
	}
	dirsBefore := containerDirs()
	listContainers := func() []string {
		resp, err := d.rt.ListContainers(d.ctx(), &runtimeapi.ListContainersRequest{})
		if err != nil {
			t.Fatalf("ListContainers: %v", err)
		}
		var ids []string
		for _, c := range resp.Containers {
			ids = append(ids, c.Id)
		}
		slices.Sort(ids)
		return ids
	}
	containersBefore := listContainers()
	nothingLeft := func(what string) {
		t.Helper()
		if got := listContainers(); !slices.Equal(got, containersBefore) {
			t.Errorf("after %s: containers %v, want %v", what, got, containersBefore)
		}
		if got := containerDirs(); fmt.Sprint(got) != fmt.Sprint(dirsBefore) {
			t.Errorf("after %s: container dirs (root, state, oci) %v, want %v", what, got, dirsBefore)
		}
	}

	// Pull of an image of 12 MiB compressed, 12 MiB unpacked: with 4 MiB
	// left its download fails, with 18 MiB its unpack.
	for _, free := range []int64{4 << 20, 18 << 20} {
		left := fillFS(t, mnt, free)
		_, err = d.img.PullImage(d.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: big}})
		t.Logf("pull with %d KiB free: %v", left>>10, err)
		if err == nil || !strings.Contains(err.Error(), enospc) || !strings.Contains(err.Error(), big) || status.Code(err) != codes.ResourceExhausted {
			t.Errorf("pull of %s with %d KiB free: %v, want ResourceExhausted naming the image and %q", big, left>>10, err, enospc)
		}
		if st, err := d.img.ImageStatus(d.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: big}}); err != nil || st.Image != nil {
			t.Errorf("after the failed pull: ImageStatus %v, %v; want no image", st, err)
		}
		if got := entries(filepath.Join(imagesDir, "blobs", "sha256")); !slices.Equal(got, blobsBefore) {
			t.Errorf("after the failed pull: blobs %v, want %v", got, blobsBefore)
		}
		if got := entries(filepath.Join(imagesDir, "snapshots")); !slices.Equal(got, snapsBefore) {
			t.Errorf("after the failed pull: snapshots %v, want %v", got, snapsBefore)
		}
		if got := entries(filepath.Join(imagesDir, "tmp")); len(got) > 0 {
			t.Errorf("after the failed pull: tmp holds %v", got)
		}
	}

	// State database: 1 MiB left; the container's dirs and spec fit, its
	// record (a 3 MiB label, not in the spec) does not.
	left := fillFS(t, mnt, 1<<20)
	t.Logf("create with a 3 MiB record and %d KiB free", left>>10)
	bigLabel := containerConfig("biglabel", "sleep", "3600")
	bigLabel.Labels["big"] = strings.Repeat("x", 3<<20)
	_, err = d.rt.CreateContainer(d.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: bigLabel, SandboxConfig: pod})
	t.Logf("state database write on a full disk: %v", err)
	if err == nil || !strings.Contains(err.Error(), enospc) || !strings.Contains(err.Error(), "persist container") || status.Code(err) != codes.ResourceExhausted {
		t.Errorf("create whose record does not fit: %v, want ResourceExhausted, a failed persist with %q", err, enospc)
	}
	nothingLeft("a failed state database write")

	// Create: not one block left.
	left = fillFS(t, mnt, 0)
	t.Logf("create with %d bytes free", left)
	_, err = d.rt.CreateContainer(d.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("late", "sleep", "3600"), SandboxConfig: pod})
	t.Logf("create on a full disk: %v", err)
	if err == nil || !strings.Contains(err.Error(), enospc) || status.Code(err) != codes.ResourceExhausted {
		t.Errorf("create on a full disk: %v, want ResourceExhausted with %q", err, enospc)
	}
	nothingLeft("a create on a full disk")
	mountsBefore := mountsBelow(mnt)
	_, err = d.rt.RunPodSandbox(d.ctx(), &runtimeapi.RunPodSandboxRequest{Config: podConfig(d, "late")})
	t.Logf("pod sandbox on a full disk: %v", err)
	if err == nil || !strings.Contains(err.Error(), enospc) || status.Code(err) != codes.ResourceExhausted {
		t.Errorf("RunPodSandbox on a full disk: %v, want ResourceExhausted with %q", err, enospc)
	}
	if resp, err := d.rt.ListPodSandbox(d.ctx(), &runtimeapi.ListPodSandboxRequest{}); err != nil || len(resp.Items) != 2 {
		t.Errorf("pods after a RunPodSandbox on a full disk: %v, %v; want only %s and %s", resp, err, podID, evictID)
	}
	if got := mountsBelow(mnt); !slices.Equal(got, mountsBefore) {
		t.Errorf("mounts after a RunPodSandbox on a full disk: %v, want %v", got, mountsBefore)
	}

	// Logs: the logger goes on, well past what its stdout pipe holds
	// (64 KiB, ~120 lines): conmon drains it and drops what it cannot
	// write.
	fullAt, fullSince := count(), time.Now()
	logSize := func() int64 {
		fi, err := os.Stat(logPath)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	sizeFull := logSize()
	for count() < fullAt+300 {
		if time.Since(fullSince) > 30*time.Second {
			t.Fatalf("the logger is stuck on a full disk: line %d, %d lines in %v (blocked on its stdout?)", count(), count()-fullAt, time.Since(fullSince))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("on a full disk: logger at line %d, log %d bytes; %v later line %d, log %d bytes", fullAt, sizeFull, time.Since(fullSince).Round(time.Millisecond), count(), logSize())
	for _, id := range []string{sleeper, logger} {
		waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	}
	if st, err := d.rt.PodSandboxStatus(d.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID}); err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod on a full disk: %v, %v", st, err)
	}
	if _, err := d.rt.StopContainer(d.ctx(), &runtimeapi.StopContainerRequest{ContainerId: stopme, Timeout: 1}); err != nil {
		t.Errorf("stop on a full disk: %v", err)
	}
	// conmon cannot write the exit file: the code is unknown, and the
	// status says why.
	st := waitState(t, d, stopme, runtimeapi.ContainerState_CONTAINER_EXITED)
	t.Logf("stopped on a full disk: exit %d, reason %q, message %q", st.ExitCode, st.Reason, st.Message)
	if !strings.Contains(st.Message, enospc) {
		t.Errorf("a container stopped on a full disk: message %q, want it to say %q", st.Message, enospc)
	}
	// Exec: conmon writes the output to a file in the state dir; with
	// too little room for it the call fails rather than return a part.
	for _, free := range []int64{0, 256 << 10} {
		left := fillFS(t, mnt, free)
		r, err := d.rt.ExecSync(d.ctx(), &runtimeapi.ExecSyncRequest{ContainerId: sleeper, Cmd: []string{"sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo done"}, Timeout: 10})
		if err != nil {
			t.Logf("exec of 1 MB of output with %d KiB free: %v", left>>10, err)
		} else {
			t.Logf("exec of 1 MB of output with %d KiB free: exit %d, %d bytes of stdout, ends %q, stderr %q", left>>10, r.ExitCode, len(r.Stdout), r.Stdout[max(0, len(r.Stdout)-20):], r.Stderr)
		}
		if err == nil && (r.ExitCode != 0 || len(r.Stdout) != 1000006) {
			t.Errorf("exec with %d KiB free succeeded with part of its output: exit %d, %d bytes of stdout (want an error, or the output)", left>>10, r.ExitCode, len(r.Stdout))
		}
		if err != nil && !strings.Contains(err.Error(), enospc) {
			t.Errorf("exec with %d KiB free: %v, want it to say %q", left>>10, err, enospc)
		}
	}
	fillFS(t, mnt, 0)

	// A restart on a full disk: peapod comes up with everything.
	d.stop()
	d.start()
	if got := listContainers(); !slices.Equal(got, containersBefore) {
		t.Errorf("after a restart on a full disk: containers %v, want %v", got, containersBefore)
	}
	if st, err := d.img.ImageStatus(d.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: busybox}}); err != nil || st.Image == nil {
		t.Errorf("after a restart on a full disk: image %s: %v, %v", busybox, st, err)
	}
	for _, id := range []string{sleeper, logger} {
		waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	}
	st = waitState(t, d, stopme, runtimeapi.ContainerState_CONTAINER_EXITED)
	t.Logf("stopped on a full disk, after a restart: exit %d, reason %q, message %q", st.ExitCode, st.Reason, st.Message)

	// What frees space works on the full disk: removing a container, an
	// image, a whole pod.
	fillFS(t, mnt, 0)
	if _, err := d.rt.RemoveContainer(d.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: stopme}); err != nil {
		t.Errorf("remove a container on a full disk: %v", err)
	}
	if _, err := d.img.RemoveImage(d.ctx(), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: spare}}); err != nil {
		t.Errorf("remove an image on a full disk: %v", err)
	}
	if _, err := d.rt.StopPodSandbox(d.ctx(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: evictID}); err != nil {
		t.Errorf("stop a pod on a full disk: %v", err)
	}
	if _, err := d.rt.RemovePodSandbox(d.ctx(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: evictID}); err != nil {
		t.Errorf("remove a pod on a full disk: %v", err)
	}
	if resp, err := d.rt.ListPodSandbox(d.ctx(), &runtimeapi.ListPodSandboxRequest{}); err != nil || len(resp.Items) != 1 || resp.Items[0].Id != podID {
		t.Errorf("pods after removing one on a full disk: %v, %v; want only %s", resp, err, podID)
	}
	for _, m := range mountsBelow(mnt) {
		if strings.Contains(m, evictID) || strings.Contains(m, evictC) {
			t.Errorf("a mount of the pod removed on a full disk is left: %s", m)
		}
	}

	// Space back.
	fillFS(t, mnt, -1)
	backAt := count()
	waitLog(t, logPath, fmt.Sprintf("line %d ", backAt+20))
	nums, glued, bad := logLines(t, logPath)
	if len(bad) > 0 {
		t.Errorf("log lines not in the CRI format: %q", bad[:min(len(bad), 3)])
	}
	// conmon writes what fits of a line that meets the full disk; the
	// next line it writes once there is space follows on the same line.
	for _, g := range glued {
		t.Logf("a line cut short by the full disk, the next one written after it: %q", g)
	}
	for i := 1; i < len(nums); i++ {
		if nums[i] != nums[i-1]+1 {
			t.Logf("log gap: line %d, then line %d (%d lines dropped while the disk was full)", nums[i-1], nums[i], nums[i]-nums[i-1]-1)
		}
	}
	if _, err := d.img.PullImage(d.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: big}}); err != nil {
		t.Errorf("pull once space is back: %v", err)
	}
	c, err := d.rt.CreateContainer(d.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: bigLabel, SandboxConfig: pod})
	if err != nil {
		t.Errorf("create with a 3 MiB record once space is back: %v", err)
	} else if _, err := d.rt.RemoveContainer(d.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: c.ContainerId}); err != nil {
		t.Errorf("remove it: %v", err)
	}
	late := startContainer(t, d, podID, pod, containerConfig("late", "sleep", "3600"))
	if out := execOut(t, d, late, "echo", "ok"); out != "ok\n" {
		t.Errorf("exec once space is back: %q", out)
	}

	// Restart: the database holds exactly the live containers, their
	// image holds and the images; everything is there afterwards.
	d.stop()
	want := slices.Sorted(slices.Values([]string{sleeper, logger, late}))
	keys := dbKeys(t, filepath.Join(root, "peapod.db"), "containers", "image-holders", "images")
	if len(keys["images"]) != 2 {
		t.Errorf("image records %v, want busybox's and %s's", keys["images"], big)
	}
	if got := slices.Sorted(slices.Values(keys["containers"])); !slices.Equal(got, want) {
		t.Errorf("container records %v, want %v", got, want)
	}
	if got := slices.Sorted(slices.Values(keys["image-holders"])); !slices.Equal(got, want) {
		t.Errorf("image holders %v, want %v", got, want)
	}
	d.start()
	for _, ref := range []string{busybox, big} {
		if st, err := d.img.ImageStatus(d.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil || st.Image == nil {
			t.Errorf("after the restart: image %s: %v, %v", ref, st, err)
		}
	}
	if st, err := d.rt.PodSandboxStatus(d.ctx(), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID}); err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("pod after the restart: %v, %v", st, err)
	}
	for _, id := range want {
		waitState(t, d, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	}
	if got := listContainers(); !slices.Equal(got, want) {
		t.Errorf("containers after the restart: %v, want %v", got, want)
	}
	n := count()
	waitLog(t, logPath, fmt.Sprintf("line %d ", n+20))
}
