package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"peapod/image"
	"peapod/store"
)

// TestSoak (issue 17): pod lifecycles, soakParallel at a time, each
// RunPodSandbox, CreateContainer (busybox writing a few log lines, then
// sleeping), StartContainer, ExecSync, reading the log, StopContainer,
// RemoveContainer, StopPodSandbox, RemovePodSandbox; peapod is killed with
// -9 about every 100 lifecycles while they run (every other kill while
// several RunPodSandbox calls are in flight) and restarted.
//
// The lifecycles a kill cuts short fail (Unavailable, a closing client):
// expected. After each restart, with no lifecycle running, the test cleans
// up as the kubelet would (list, stop, remove through the CRI, and the
// pods' log dirs) and then checks that nothing is left: that is peapod's
// recovery at work, not the test's. Every 25 lifecycles (away from the
// kills) the test also lets those in flight finish and checks the same.
// Any error of a lifecycle no kill interrupted fails the test.
//
// PEAPOD_SOAK_LIFECYCLES sets the count: 60 (one kill, under a minute and
// a half) by default, which make test runs; make soak runs 1,000.
// PEAPOD_SOAK_KILL_EVERY (default 100) spaces the kills; 0: none, to watch
// one process for the whole run.
//
// Growth of peapod's RSS, open fds and goroutines is judged so that noise
// and warm-up cannot pass for a leak nor hide one (see checkGrowth).
func TestSoak(t *testing.T) {
	integration(t)
	n := 60
	if v := os.Getenv("PEAPOD_SOAK_LIFECYCLES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20 {
			t.Fatalf("PEAPOD_SOAK_LIFECYCLES=%q: want a number >= 20", v)
		}
	}
	killEvery := 100
	if v := os.Getenv("PEAPOD_SOAK_KILL_EVERY"); v != "" {
		var err error
		if killEvery, err = strconv.Atoi(v); err != nil || killEvery < 0 {
			t.Fatalf("PEAPOD_SOAK_KILL_EVERY=%q: want a number of lifecycles, 0 for no kill", v)
		}
	}
	reg := startRegistry(t)
	// The agent is off: this soaks the CRI runtime, and the test is its
	// only client.
	d := newDaemon(t, daemonOpts{mirrors: map[string]string{"docker.io": "http://" + reg}, agentDisabled: true})
	pullBusybox(t, d)
	s := &soak{t: t, d: d, uidPrefix: "soak-" + d.bridge, returned: map[string]bool{}, known: map[string]bool{}}
	s.rt = d.rt

	// One lifecycle first: it makes every directory peapod makes lazily,
	// so that what exists afterwards is the baseline of the tree walk.
	if err := s.lifecycle(-1); err != nil {
		t.Fatalf("warm-up lifecycle: %v", err)
	}
	s.baseline = s.tree()
	s.checkNothingLeft("after the warm-up lifecycle")
	s.sample("quiet")

	kills := 0
	if killEvery > 0 {
		kills = max(1, n/killEvery)
	}
	var killAt []int64
	for k := 0; k < kills; k++ {
		// Spread evenly, jittered by up to a fifth of the gap.
		gap := float64(n) / float64(kills)
		at := gap*(float64(k)+0.5) + (rand.Float64()-0.5)*gap*0.4
		killAt = append(killAt, int64(at))
	}

	began := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < soakParallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i, epoch, ok := s.next(n)
				if !ok {
					return
				}
				err := s.lifecycle(i)
				s.active.Add(-1)
				s.done.Add(1)
				if err == nil {
					s.ok.Add(1)
					continue
				}
				if s.epochNow() != epoch {
					s.aborted.Add(1) // cut short by a kill: expected
					continue
				}
				s.fail(fmt.Sprintf("lifecycle %d (no kill during it): %v", i, err))
			}
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	// Load samples every 250 ms while soakParallel lifecycles run (not
	// while the last ones drain): many samples, so that medians are steady.
	lastSample := time.Now()
	k := 0
	// Quiet points every soakQuietEvery lifecycles, away from the kills.
	nextQuiet := int64(soakQuietEvery)
	nearKill := func(at int64) bool {
		for _, ka := range killAt {
			if at > ka-10 && at < ka+10 {
				return true
			}
		}
		return false
	}
loop:
	for {
		select {
		case <-allDone:
			break loop
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(lastSample) >= 250*time.Millisecond && s.started.Load() < int64(n) {
			s.sample("load")
			lastSample = time.Now()
		}
		if k < len(killAt) && s.started.Load() >= killAt[k] {
			s.kill(k, k%2 == 0)
			k++
		}
		if s.started.Load() >= nextQuiet && nextQuiet < int64(n) {
			if !nearKill(nextQuiet) {
				s.quiesce()
			}
			nextQuiet += soakQuietEvery
		}
		if t.Failed() && len(s.failures()) > 20 {
			break
		}
	}
	wg.Wait()
	took := time.Since(began)
	if errs := s.failures(); len(errs) > 0 {
		t.Errorf("%d lifecycles failed without a kill:\n%s", len(errs), strings.Join(errs[:min(len(errs), 20)], "\n"))
	}
	// Kill-free lifecycles may have been few; the cleanup after the
	// last kill ran long ago: the same cleanup and checks once more.
	s.reap()
	s.checkNothingLeft("at the end")
	s.sample("quiet")

	// Records, read from the database itself (ListPodSandbox shows only
	// what peapod loaded): none of a sandbox, a container or an image hold.
	d.stop()
	s.checkRecords()

	t.Logf("soak: %d lifecycles in %v (%.2f/s), %d completed, %d cut short by %d kills; %d parallel",
		s.done.Load(), took.Round(time.Second), float64(s.done.Load())/took.Seconds(), s.ok.Load(), s.aborted.Load(), len(s.kills), soakParallel)
	midRunp := 0
	for i, kl := range s.kills {
		t.Logf("kill %d: after %d lifecycles started (%d done), %d lifecycles and %d RunPodSandbox calls in flight, %d half-made sandboxes found after the restart, %d pods cleaned up",
			i+1, kl.started, kl.done, kl.active, kl.runp, kl.halfMade, kl.reaped)
		if kl.halfMade > 0 {
			midRunp++
		}
	}
	if midRunp == 0 && kills > 0 {
		t.Errorf("no kill landed inside RunPodSandbox (no half-made sandbox after any restart)")
	}
	s.logRecovery()
	s.report()
	s.checkGrowth()
}

// logRecovery counts what peapod's restarts found to settle, from its log:
// which crash windows the kills hit.
func (s *soak) logRecovery() {
	data, err := os.ReadFile(s.d.logPath)
	if err != nil {
		return
	}
	var b strings.Builder
	for _, what := range []string{
		"Sandbox no longer ready after restart",
		"Container state unknown after restart",
		"Stopping a pause no sandbox recorded",
		"Removing the netns of a sandbox cut short",
		"Unmounting /dev/shm of a sandbox cut short",
		"Removing the dirs of a container never recorded",
		"Dropping image hold of a container that does not exist",
	} {
		fmt.Fprintf(&b, "\n  %4d  %s", strings.Count(string(data), `"`+what), what)
	}
	s.t.Logf("what peapod's restarts settled (lines in its log):%s", b.String())
}

const (
	soakParallel = 10
	// soakQuietEvery: every so many lifecycles, none starts until those in
	// flight are done; then nothing may be left, and peapod is sampled at
	// rest (checkGrowth).
	soakQuietEvery = 25
)

type soak struct {
	t         *testing.T
	d         *daemon
	uidPrefix string
	baseline  map[string]bool

	// gate: the workers take an index under its read lock; a kill holds
	// the write lock, so no lifecycle starts from then until the cleanup
	// after the restart is done.
	gate sync.RWMutex

	mu       sync.Mutex
	rt       runtimeapi.RuntimeServiceClient // swapped on restart
	epoch    int                             // kills so far
	returned map[string]bool                 // sandbox ids RunPodSandbox returned
	known    map[string]bool                 // every sandbox id seen: returned, listed or on disk
	errs     []string
	samples  []soakSample
	kills    []soakKill
	httpAddr string

	started, done, active, ok, aborted atomic.Int64
	runp                               atomic.Int32
}

type soakSample struct {
	phase      string // load: lifecycles running; quiet: none, all cleaned up
	done       int64
	run        int // process run: kills before it
	rssKB      int64
	fds        int
	goroutines int
	// heapKB: go_memstats_heap_inuse_bytes, reported, not judged: it
	// holds whatever garbage the last GC left.
	heapKB int64
}

type soakKill struct {
	started, done, active int64
	runp                  int32
	halfMade, reaped      int
}

// next hands out the next lifecycle's index and the kills so far (which
// change only under the gate's write lock).
func (s *soak) next(n int) (int, int, bool) {
	s.gate.RLock()
	defer s.gate.RUnlock()
	i := s.started.Add(1) - 1
	if i >= int64(n) {
		s.started.Add(-1)
		return 0, 0, false
	}
	s.active.Add(1)
	return int(i), s.epochNow(), true
}

func (s *soak) client() runtimeapi.RuntimeServiceClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rt
}

func (s *soak) epochNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

func (s *soak) fail(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, msg)
}

func (s *soak) failures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

func (s *soak) podConfig(i int) *runtimeapi.PodSandboxConfig {
	cfg := podConfig(s.d, fmt.Sprintf("soak-%d", i))
	// The uid names the pod's cgroup (/peapod/pod<uid>): this run's prefix
	// tells its cgroups from other daemons'.
	cfg.Metadata.Uid = fmt.Sprintf("%s-%d", s.uidPrefix, i)
	return cfg
}

// lifecycle runs one pod from RunPodSandbox to RemovePodSandbox on the
// client of the moment; the first error ends it.
func (s *soak) lifecycle(i int) error {
	rt := s.client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := s.podConfig(i)
	s.runp.Add(1)
	run, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	s.runp.Add(-1)
	if err != nil {
		return fmt.Errorf("RunPodSandbox: %w", err)
	}
	pod := run.PodSandboxId
	s.mu.Lock()
	s.returned[pod], s.known[pod] = true, true
	s.mu.Unlock()
	cc := containerConfig("c", "sh", "-c", "for i in 1 2 3; do echo soak line $i; done; exec sleep 3600")
	c, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod, Config: cc, SandboxConfig: cfg})
	if err != nil {
		return fmt.Errorf("CreateContainer: %w", err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		return fmt.Errorf("StartContainer: %w", err)
	}
	ex, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c.ContainerId, Cmd: []string{"echo", "hi"}, Timeout: 20})
	if err != nil {
		return fmt.Errorf("ExecSync: %w", err)
	}
	if ex.ExitCode != 0 || string(ex.Stdout) != "hi\n" {
		return fmt.Errorf("ExecSync: exit %d, stdout %q, stderr %q", ex.ExitCode, ex.Stdout, ex.Stderr)
	}
	logPath := filepath.Join(cfg.LogDirectory, cc.LogPath)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		data, _ := os.ReadFile(logPath)
		if strings.Contains(string(data), " stdout F soak line 3\n") {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("log %s lacks line 3: %q", logPath, data)
		}
	}
	if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.ContainerId, Timeout: 10}); err != nil {
		return fmt.Errorf("StopContainer: %w", err)
	}
	if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.ContainerId}); err != nil {
		return fmt.Errorf("RemoveContainer: %w", err)
	}
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod}); err != nil {
		return fmt.Errorf("StopPodSandbox: %w", err)
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod}); err != nil {
		return fmt.Errorf("RemovePodSandbox: %w", err)
	}
	// The kubelet removes a removed pod's log dir; the runtime does not.
	return os.RemoveAll(cfg.LogDirectory)
}

// kill kills peapod with -9 while lifecycles run; midRunp waits first
// for several RunPodSandbox calls in flight. Then, with no lifecycle
// running, it restarts peapod, cleans up and checks what is left.
func (s *soak) kill(k int, midRunp bool) {
	t := s.t
	if midRunp {
		for deadline := time.Now().Add(10 * time.Second); s.runp.Load() < 3 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		// Long enough for the server to be inside them (past its first
		// store write), short enough that they have not returned yet.
		time.Sleep(time.Duration(10+rand.IntN(40)) * time.Millisecond)
	} else {
		time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond)
	}
	s.gate.Lock()
	defer s.gate.Unlock()
	s.mu.Lock()
	kl := soakKill{started: s.started.Load(), done: s.done.Load(), active: s.active.Load(), runp: s.runp.Load()}
	s.epoch++
	s.d.kill9()
	s.mu.Unlock()
	// The cut-short lifecycles fail at their next call.
	for deadline := time.Now().Add(3 * time.Minute); s.active.Load() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("kill %d: %d lifecycles still running 3 min after the kill", k+1, s.active.Load())
		}
	}
	// Sandboxes on disk (the state dir outlives the process): a
	// RunPodSandbox cut short made its dir before its netns.
	s.noteOnDisk()
	s.mu.Lock()
	s.d.start()
	s.rt = s.d.rt
	s.httpAddr = ""
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if pods, err := s.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
		s.mu.Lock()
		for _, p := range pods.Items {
			s.known[p.Id] = true
			if !s.returned[p.Id] {
				kl.halfMade++
			}
		}
		s.mu.Unlock()
	}
	kl.reaped = s.reap()
	s.checkNothingLeft(fmt.Sprintf("after kill %d and the cleanup", k+1))
	s.sample("quiet")
	s.mu.Lock()
	s.kills = append(s.kills, kl)
	s.mu.Unlock()
}

// quiesce lets the lifecycles in flight finish, starting no other, then
// checks that nothing is left and samples peapod at rest.
func (s *soak) quiesce() {
	s.gate.Lock()
	defer s.gate.Unlock()
	for deadline := time.Now().Add(3 * time.Minute); s.active.Load() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("%d lifecycles still running after 3 min", s.active.Load())
		}
	}
	s.checkNothingLeft(fmt.Sprintf("at rest after %d lifecycles", s.done.Load()))
	s.sample("quiet")
}

func (s *soak) noteOnDisk() {
	entries, _ := os.ReadDir(filepath.Join(s.d.dir, "run", "sandboxes"))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range entries {
		s.known[e.Name()] = true
	}
}

// reap removes every pod and container through the CRI, as the kubelet
// does with pods it no longer wants, and the pods' log dirs; it returns
// how many pods it removed.
func (s *soak) reap() int {
	t := s.t
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt := s.client()
	pods, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatalf("cleanup: ListPodSandbox: %v", err)
	}
	cs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatalf("cleanup: ListContainers: %v", err)
	}
	for _, c := range cs.Containers {
		if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.Id, Timeout: 2}); err != nil {
			t.Errorf("cleanup: StopContainer %s (%s): %v", c.Id, c.State, err)
		}
		if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.Id}); err != nil {
			t.Errorf("cleanup: RemoveContainer %s (%s): %v", c.Id, c.State, err)
		}
	}
	for _, p := range pods.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			t.Errorf("cleanup: StopPodSandbox %s (%s): %v", p.Id, p.State, err)
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			t.Errorf("cleanup: RemovePodSandbox %s (%s): %v", p.Id, p.State, err)
		}
	}
	logs, _ := os.ReadDir(filepath.Join(s.d.dir, "logs"))
	for _, l := range logs {
		os.RemoveAll(filepath.Join(s.d.dir, "logs", l.Name()))
	}
	return len(pods.Items)
}

// checkNothingLeft checks, with no pod expected, that the daemon holds no
// record and left nothing in the kernel or on disk.
func (s *soak) checkNothingLeft(when string) {
	t := s.t
	d := s.d
	errorf := func(format string, args ...any) { t.Errorf(when+": "+format, args...) }
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rt := s.client()
	if pods, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil || len(pods.Items) > 0 {
		errorf("ListPodSandbox: %d pods, err %v", len(pods.GetItems()), err)
	}
	if cs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil || len(cs.Containers) > 0 {
		errorf("ListContainers: %d containers, err %v", len(cs.GetContainers()), err)
	}
	// veths on the test's bridge.
	if links, _ := os.ReadDir("/sys/class/net/" + d.bridge + "/brif"); len(links) > 0 {
		errorf("%d veths still on %s", len(links), d.bridge)
	}
	// host-local reservations: only its last_reserved_ip marker may stay.
	if ips, _ := filepath.Glob(filepath.Join(d.dir, "ipam", "*", "10.*")); len(ips) > 0 {
		errorf("%d host-local IP reservations left: %v", len(ips), ips)
	}
	// netns pins of every sandbox this run ever saw.
	s.mu.Lock()
	known := make([]string, 0, len(s.known))
	for id := range s.known {
		known = append(known, id)
	}
	s.mu.Unlock()
	for _, id := range known {
		if _, err := os.Lstat(filepath.Join("/run/netns", "peapod-"+id)); err == nil {
			errorf("netns pin /run/netns/peapod-%s left", id)
		}
	}
	// Mounts below the daemon's dirs, or of a known sandbox's netns.
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(mi), "\n") {
			f := strings.Fields(line)
			if len(f) < 5 {
				continue
			}
			mp := f[4]
			if strings.HasPrefix(mp, d.dir+"/") || (strings.HasPrefix(mp, "/run/netns/peapod-") && slices.Contains(known, strings.TrimPrefix(mp, "/run/netns/peapod-"))) {
				errorf("mount left: %s", mp)
			}
		}
	}
	// Cgroups: the pods' (named by this run's uids), their containers'
	// and conmons' below them, and anything under the daemon's own root.
	for _, h := range hierarchies() {
		pods, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", h, "peapod", "pod"+s.uidPrefix+"-*"))
		for _, p := range pods {
			errorf("cgroup left: %s", p)
		}
		if subs, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup", h, d.cgroupRoot)); len(subs) > 0 {
			for _, e := range subs {
				if e.IsDir() {
					errorf("cgroup left: %s", filepath.Join("/sys/fs/cgroup", h, d.cgroupRoot, e.Name()))
				}
			}
		}
	}
	// Processes: conmon, runc, pause (its -root is in the state dir) and
	// containers started with the daemon's paths on their command line.
	self := 0
	if d.cmd != nil {
		self = d.cmd.Process.Pid
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if pid == self {
			continue
		}
		cmd, _ := os.ReadFile(p)
		if strings.Contains(string(cmd), d.dir) {
			errorf("process left: %d %s", pid, strings.ReplaceAll(string(cmd), "\x00", " "))
		}
	}
	// Files and dirs below the daemon's dirs that were not there after the
	// warm-up: sandbox and container dirs, exit files, FIFOs and sockets,
	// bundles, writable layers, snapshots, CNI cache entries, log files.
	var extra []string
	for p := range s.tree() {
		if !s.baseline[p] {
			extra = append(extra, p)
		}
	}
	sort.Strings(extra)
	var tops []string // a new dir's contents are not listed again
	for _, p := range extra {
		if len(tops) > 0 && strings.HasPrefix(p, tops[len(tops)-1]+"/") {
			continue
		}
		tops = append(tops, p)
	}
	for _, p := range tops {
		errorf("left on disk: %s", p)
	}
}

// tree lists the paths below the daemon's dir, but for its own log,
// config, socket and database, whose contents change by design.
func (s *soak) tree() map[string]bool {
	d := s.d
	skip := map[string]bool{d.logPath: true, d.cfgPath: true, d.socket: true, filepath.Join(d.dir, "root", "peapod.db"): true}
	out := map[string]bool{}
	filepath.WalkDir(d.dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || p == d.dir || skip[p] {
			return nil
		}
		out[p] = true
		return nil
	})
	return out
}

// checkRecords opens the stopped daemon's database: no sandbox, container
// or image hold may be left.
func (s *soak) checkRecords() {
	t := s.t
	st, err := store.Open(filepath.Join(s.d.dir, "root", "peapod.db"))
	if err != nil {
		t.Errorf("open the database: %v", err)
		return
	}
	defer st.Close()
	for _, b := range []string{store.BucketSandboxes, store.BucketContainers, image.BucketHolders} {
		var keys []string
		st.ForEach(b, func(key string, _ []byte) error { keys = append(keys, key); return nil })
		if len(keys) > 0 {
			t.Errorf("database: %d records left in %s: %v", len(keys), b, keys)
		}
	}
}

// sample reads peapod's RSS and open fds from /proc and its goroutines
// from its own /metrics (go_goroutines of serve's registry).
func (s *soak) sample(phase string) {
	s.mu.Lock()
	d := s.d
	if d.cmd == nil {
		s.mu.Unlock()
		return
	}
	pid := d.cmd.Process.Pid
	smp := soakSample{phase: phase, done: s.done.Load(), run: s.epoch, goroutines: -1}
	if s.httpAddr == "" {
		s.httpAddr = d.httpAddr()
	}
	addr := s.httpAddr
	s.mu.Unlock()
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				smp.rssKB, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	smp.fds = len(fds)
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				smp.goroutines = int(f)
			}
			if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				smp.heapKB = int64(f) / 1024
			}
		}
		resp.Body.Close()
	}
	s.mu.Lock()
	s.samples = append(s.samples, smp)
	s.mu.Unlock()
}

func (s *soak) report() {
	var b strings.Builder
	b.WriteString("samples (phase, lifecycles done, process run, RSS MiB, fds, goroutines, Go heap in use MiB); load samples: one in 4\n")
	for i, x := range s.samples {
		if x.phase == "load" && i%4 != 0 {
			continue
		}
		fmt.Fprintf(&b, "  %-5s %5d  run %2d  %6.1f  %4d  %4d  %5.1f\n", x.phase, x.done, x.run, float64(x.rssKB)/1024, x.fds, x.goroutines, float64(x.heapKB)/1024)
	}
	s.t.Log(b.String())
}

// checkGrowth fails when peapod's RSS, fds or goroutines grow with the
// lifecycles done. Each kill starts a new process, so figures are only
// compared within one process run, or at the same phase.
//
// The judge is the quiet samples, taken with no lifecycle in flight and
// nothing left (after the warm-up, every 25 lifecycles, after each
// restart's cleanup, at the end): then peapod's fds and goroutines are
// its own idle set, the same every time (15-16 fds, 20-25 goroutines
// here), so a leak of even one per a few dozen lifecycles shows.
//
//   - every quiet sample against the first: fds and goroutines within +10
//     (idle keep-alive connections of the metrics scrape and the CRI
//     client come and go). Catches what accumulates across restarts too
//     (records restored on each start, say).
//   - within one process run, the last quiet sample against the first
//     one taken after the run's first 10 lifecycles (lazily made things
//     exist by then): fds and goroutines within +5, RSS within
//     max(8 MiB, 25 %). RSS needs the room: in one process over 1,000
//     lifecycles (PEAPOD_SOAK_KILL_EVERY=0) it rose from ~26 to ~31 MiB at
//     rest, mostly in the first few hundred, while the heap live after a
//     forced GC stayed at 1.7 MiB (+19 KB, +91 objects; pprof with
//     GODEBUG=memprofilerate): memory the Go runtime keeps, not a leak.
//
// Load samples (every 250 ms while 10 lifecycles run) catch pods at any
// stage, so their fds and goroutines swing by a few per pod from one to
// the next: they are reported (medians of the first and last third of
// each run) and fail only on gross growth, max(30, 50 %), RSS
// max(16 MiB, 50 %), with at least 8 samples per third.
func (s *soak) checkGrowth() {
	t := s.t
	var quiet []soakSample
	runs := map[int][]soakSample{}
	runStart := map[int]int64{}
	for _, x := range s.samples {
		if _, ok := runStart[x.run]; !ok {
			runStart[x.run] = x.done
		}
		if x.phase == "quiet" {
			quiet = append(quiet, x)
			continue
		}
		runs[x.run] = append(runs[x.run], x)
	}
	if len(quiet) > 0 {
		q0 := quiet[0]
		for _, q := range quiet[1:] {
			if q.fds > q0.fds+10 {
				t.Errorf("open fds at rest grew from %d to %d after %d lifecycles", q0.fds, q.fds, q.done)
			}
			if q.goroutines > q0.goroutines+10 {
				t.Errorf("goroutines at rest grew from %d to %d after %d lifecycles", q0.goroutines, q.goroutines, q.done)
			}
		}
	}
	quietRuns := map[int][]soakSample{}
	for _, q := range quiet {
		if q.done >= runStart[q.run]+10 {
			quietRuns[q.run] = append(quietRuns[q.run], q)
		}
	}
	var runIDs []int
	for r := range quietRuns {
		runIDs = append(runIDs, r)
	}
	sort.Ints(runIDs)
	for _, r := range runIDs {
		qs := quietRuns[r]
		if len(qs) < 2 {
			continue
		}
		a, b := qs[0], qs[len(qs)-1]
		t.Logf("process run %d at rest, lifecycles %d -> %d: RSS %.1f -> %.1f MiB, fds %d -> %d, goroutines %d -> %d (Go heap in use %.1f -> %.1f MiB)",
			r, a.done, b.done, float64(a.rssKB)/1024, float64(b.rssKB)/1024, a.fds, b.fds, a.goroutines, b.goroutines, float64(a.heapKB)/1024, float64(b.heapKB)/1024)
		if b.fds > a.fds+5 || b.goroutines > a.goroutines+5 || float64(b.rssKB) > float64(a.rssKB)+max(8<<10, float64(a.rssKB)/4) {
			t.Errorf("process run %d grew at rest from lifecycle %d to %d: RSS %d -> %d KiB, fds %d -> %d, goroutines %d -> %d",
				r, a.done, b.done, a.rssKB, b.rssKB, a.fds, b.fds, a.goroutines, b.goroutines)
		}
	}

	type fig struct {
		name  string
		get   func(soakSample) float64
		slack func(base float64) float64
	}
	figs := []fig{
		{"RSS (KiB)", func(x soakSample) float64 { return float64(x.rssKB) }, func(b float64) float64 { return max(16<<10, b/2) }},
		{"open fds", func(x soakSample) float64 { return float64(x.fds) }, func(b float64) float64 { return max(30, b/2) }},
		{"goroutines", func(x soakSample) float64 { return float64(x.goroutines) }, func(b float64) float64 { return max(30, b/2) }},
	}
	median := func(xs []soakSample, get func(soakSample) float64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = get(x)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	runIDs = runIDs[:0]
	for r := range runs {
		runIDs = append(runIDs, r)
	}
	sort.Ints(runIDs)
	for _, r := range runIDs {
		var xs []soakSample
		for _, x := range runs[r] {
			if x.done >= runStart[r]+10 {
				xs = append(xs, x)
			}
		}
		third := len(xs) / 3
		if third < 2 {
			continue
		}
		first, last := xs[:third], xs[len(xs)-third:]
		for _, f := range figs {
			a, b := median(first, f.get), median(last, f.get)
			t.Logf("process run %d under load, lifecycles %d-%d -> %d-%d: %s median %.0f -> %.0f (%d samples each)",
				r, first[0].done, first[len(first)-1].done, last[0].done, last[len(last)-1].done, f.name, a, b, third)
			if third >= 8 && b > a+f.slack(a) {
				t.Errorf("process run %d: %s under load grew with lifecycles: median %.0f in lifecycles %d-%d, %.0f in %d-%d",
					r, f.name, a, first[0].done, first[len(first)-1].done, b, last[0].done, last[len(last)-1].done)
			}
		}
	}
}
