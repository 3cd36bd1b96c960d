package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/hack/testenv"
	"peapod/hack/testimages/imagebuild"
)

// loopFS makes an ext4 filesystem of size bytes in a file, attaches it to a
// loop device, mounts it and returns the mount point. Unmounted, detached
// and removed when the test ends, after any daemon created later (cleanups
// run last-registered first), whether the test passed or not.
func loopFS(t *testing.T, size int64) string {
	t.Helper()
	testenv.Require(t, "/usr/sbin/mkfs.ext4", "e2fsprogs")
	testenv.Require(t, "/usr/sbin/losetup", "mount")
	dir := t.TempDir()
	file := filepath.Join(dir, "fs.img")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	// No reserved blocks and no journal: the capacity is what the test
	// counts on.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", file).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", file).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v\n%s", dev, err, out)
		}
	})
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", dev, mnt, err)
	}
	t.Cleanup(func() {
		unmountBelow(t, mnt) // none should be left by the daemon's cleanup
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

// fsUsed is statfs of path: capacity and used bytes, as the image GC
// reads them (used = capacity - available).
func fsUsed(t *testing.T, path string) (capacity, used uint64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	bs := uint64(st.Bsize)
	return st.Blocks * bs, (st.Blocks - st.Bavail) * bs
}

// TestImageGC fills a small image filesystem with images, gives them a
// least-recently-used order through containers that refer to them, then
// pushes the disk past the high threshold: the agent's image GC removes
// the least recently used unused images until the disk is at the low
// threshold, and keeps the image of the running pod.
func TestImageGC(t *testing.T) {
	t.Parallel()
	start := time.Now()
	reg := startRegistry(t)
	mnt := loopFS(t, 64<<20)
	const high, low = 80, 65

	// Four images: busybox with 4 MiB of its own random data each.
	base := testenv.Images(t).Busybox
	var named []imagebuild.Named
	var refs []string
	for i := range 4 {
		l, err := random.Layer(4<<20, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(base, l)
		if err != nil {
			t.Fatal(err)
		}
		repo := fmt.Sprintf("gc/fill-%d", i)
		named = append(named, imagebuild.Named{Repo: repo, Tag: imagebuild.Tag, Image: img})
		refs = append(refs, reg+"/"+repo+":"+imagebuild.Tag)
	}
	pctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := imagebuild.PushNamed(pctx, named, reg, ""); err != nil {
		t.Fatal(err)
	}

	d := newDaemon(t, daemonOpts{
		mirrors: map[string]string{"docker.io": "http://" + reg},
		root:    filepath.Join(mnt, "root"),
		agentConfig: fmt.Sprintf("image_gc_period = \"1s\"\nimage_minimum_gc_age = \"0s\"\n"+
			"image_gc_high_threshold_percent = %d\nimage_gc_low_threshold_percent = %d\n", high, low),
	})
	d.writeManifest("sleeper.yaml", `
apiVersion: v1
kind: Pod
metadata:
  name: sleeper
  namespace: gc
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleep
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
`)
	d.waitPod("sleeper", 60*time.Second, "running", func(p *v1.Pod) bool {
		cs := containerStatus(p, "sleep")
		return cs != nil && cs.State.Running != nil
	})

	sizes := map[string]uint64{}
	for _, ref := range refs {
		resp, err := d.img.PullImage(d.ctx(), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		st, err := d.img.ImageStatus(d.ctx(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: resp.ImageRef}})
		if err != nil || st.Image == nil {
			t.Fatalf("image status %s: %v", ref, err)
		}
		sizes[ref] = st.Image.Size
	}

	// Use the images in an order that is not the pull order: a container
	// that refers to an image (created, not even started) makes it used
	// at each GC pass while it exists. LRU order: 2, 0, 3, 1.
	useOrder := []int{2, 0, 3, 1}
	pod := podConfig(d, "gc-user")
	podID := runPod(t, d, pod)
	// Not the agent's: the daemon's cleanup would wait for it to go.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
		d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
	})
	for _, i := range useOrder {
		cc := containerConfig(fmt.Sprintf("use-%d", i), "true")
		cc.Image = &runtimeapi.ImageSpec{Image: refs[i]}
		c, err := d.rt.CreateContainer(d.ctx(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cc, SandboxConfig: pod})
		if err != nil {
			t.Fatalf("create a container of %s: %v", refs[i], err)
		}
		time.Sleep(2200 * time.Millisecond) // two GC passes (period 1s) see it
		if _, err := d.rt.RemoveContainer(d.ctx(), &runtimeapi.RemoveContainerRequest{ContainerId: c.ContainerId}); err != nil {
			t.Fatal(err)
		}
	}
	present := func() map[string]bool {
		resp, err := d.img.ListImages(d.ctx(), &runtimeapi.ListImagesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, img := range resp.Images {
			for _, tag := range img.RepoTags {
				out[tag] = true
			}
		}
		return out
	}
	capacity, used := fsUsed(t, mnt)
	if p := present(); !p[refs[0]] || !p[refs[1]] || !p[refs[2]] || !p[refs[3]] {
		t.Fatalf("images removed below the high threshold (%d%% used): %v", used*100/capacity, p)
	}

	// Fill the disk past the high threshold with other data, so that the
	// GC has to free 2.5 images' worth (by their sizes, as the kubelet
	// counts) to get down to the low threshold: it removes three, least
	// recently used first, and keeps the most recently used one.
	s := sizes[refs[0]]
	target := capacity*low/100 + s*5/2
	if target < capacity*high/100+s/4 || used >= target || target > capacity-(2<<20) {
		t.Fatalf("test sizing: capacity %d, used %d, image size %d: cannot reach %d", capacity, used, s, target)
	}
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, target-used), 0o644); err != nil {
		t.Fatal(err)
	}
	unix.Sync()
	_, used = fsUsed(t, mnt)
	t.Logf("capacity %d MiB, image size %d KiB, filled to %d%% (%d MiB)", capacity>>20, s>>10, used*100/capacity, used>>20)

	lru := []string{refs[2], refs[0], refs[3]}
	deadline := time.Now().Add(30 * time.Second)
	for {
		p := present()
		if !p[lru[0]] && !p[lru[1]] && !p[lru[2]] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the three least recently used images are not all removed in 30s: left %v", p)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A few more passes: the GC stopped at the low threshold.
	time.Sleep(3 * time.Second)
	p := present()
	if !p[refs[1]] {
		t.Errorf("the most recently used image %s was removed", refs[1])
	}
	if !p["docker.io/library/busybox:latest"] {
		t.Errorf("the image of the running pod was removed: %v", p)
	}
	_, used = fsUsed(t, mnt)
	if used > capacity*low/100 {
		t.Errorf("usage after GC %d%% (%d bytes), want at most the low threshold %d%%", used*100/capacity, used, low)
	}
	// The order of the removals, from the agent's log.
	data, _ := os.ReadFile(d.logPath)
	var order []string
	re := regexp.MustCompile(`"Removing image".*tags=\["([^"]+)"\]`)
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		order = append(order, m[1])
	}
	if !slices.Equal(order, lru) {
		t.Errorf("removal order %v, want %v", order, lru)
	}
	if p := d.waitPod("sleeper", 10*time.Second, "running", func(p *v1.Pod) bool { return true }); containerStatus(p, "sleep").State.Running == nil {
		t.Errorf("the pod stopped running: %+v", containerStatus(p, "sleep"))
	}
	os.Remove(filler)
	t.Logf("TestImageGC took %v", time.Since(start).Round(time.Second))
}

// TestContainerGC crash-loops a container and checks the kubelet's rule
// for dead containers (max_per_pod_container = 1, the default): at most
// one dead container per name stays, beside the running one, each removed
// container's log file goes with it, and restartCount and lastState keep
// counting as if nothing were removed.
func TestContainerGC(t *testing.T) {
	t.Parallel()
	start := time.Now()
	reg := startRegistry(t)
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}})
	d.writeManifest("crash.yaml", `
apiVersion: v1
kind: Pod
metadata:
  name: crash
  namespace: gc
spec:
  restartPolicy: Always
  containers:
  - name: crash
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo attempt; exit 3"]
`)
	type ctr struct {
		id      string
		attempt uint32
		state   runtimeapi.ContainerState
	}
	list := func() []ctr {
		resp, err := d.rt.ListContainers(d.ctx(), &runtimeapi.ListContainersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []ctr
		for _, c := range resp.Containers {
			if c.Metadata.GetName() == "crash" {
				out = append(out, ctr{c.Id, c.Metadata.Attempt, c.State})
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].attempt > out[j].attempt })
		return out
	}
	dead := func(c ctr) bool {
		return c.state == runtimeapi.ContainerState_CONTAINER_EXITED || c.state == runtimeapi.ContainerState_CONTAINER_CREATED
	}

	// The kubelet's back-off (immediate, 10s, 20s) brings restart 3 after
	// about 30s. An exit leaves two dead containers until the pod's next
	// sync (1s): an old one that outlives 3s is a failure.
	var lastRestarts int32 = -1
	extraSince := map[string]time.Time{}
	deadline := time.Now().Add(75 * time.Second)
	var p *v1.Pod
	for {
		cs := list()
		now := time.Now()
		newestDead := true
		for _, c := range cs {
			if !dead(c) {
				continue
			}
			if newestDead {
				newestDead = false
				continue
			}
			if _, ok := extraSince[c.id]; !ok {
				extraSince[c.id] = now
			} else if now.Sub(extraSince[c.id]) > 3*time.Second {
				t.Fatalf("dead container attempt %d kept beside a newer dead one for more than 3s: %+v", c.attempt, cs)
			}
		}
		for _, pp := range d.agentPods().Items {
			if pp.Name == "crash" {
				p = &pp
			}
		}
		if p != nil {
			if st := containerStatus(p, "crash"); st != nil {
				if st.RestartCount < lastRestarts {
					t.Fatalf("restartCount went down from %d to %d", lastRestarts, st.RestartCount)
				}
				lastRestarts = st.RestartCount
			}
		}
		if lastRestarts >= 3 {
			break
		}
		if now.After(deadline) {
			t.Fatalf("restartCount %d after 75s, want 3; containers %+v", lastRestarts, cs)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Settled: one dead container at most, the newest attempts only, and
	// no log file of a removed attempt.
	var cs []ctr
	logDir := filepath.Join(d.dir, "podlogs", fmt.Sprintf("gc_crash_%s", p.UID), "crash")
	var logs []string
	for settle := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		cs = list()
		n := 0
		for _, c := range cs {
			if dead(c) {
				n++
			}
		}
		entries, _ := os.ReadDir(logDir)
		logs = nil
		for _, e := range entries {
			logs = append(logs, e.Name())
		}
		var want []string
		for _, c := range cs {
			want = append(want, fmt.Sprintf("%d.log", c.attempt))
		}
		slices.Sort(want)
		if n <= 1 && slices.Equal(logs, want) {
			break
		}
		if time.Now().After(settle) {
			t.Fatalf("containers %+v and logs %v did not settle to one dead container with its log", cs, logs)
		}
	}
	if len(cs) == 0 || cs[0].attempt < 3 {
		t.Fatalf("containers %+v: the newest attempt is gone", cs)
	}
	// restartCount is the newest attempt's number, lastState its exit.
	p = d.waitPod("crash", 5*time.Second, "restartCount = the newest attempt, lastState its exit", func(p *v1.Pod) bool {
		st := containerStatus(p, "crash")
		lt := st.LastTerminationState.Terminated
		return st.RestartCount == int32(cs[0].attempt) && lt != nil && lt.ExitCode == 3 && strings.HasSuffix(lt.ContainerID, cs[0].id)
	})
	st := containerStatus(p, "crash")
	t.Logf("containers %+v, logs %v, restartCount %d; took %v", cs, logs, st.RestartCount, time.Since(start).Round(time.Second))
}
