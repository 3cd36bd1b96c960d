package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"peapod/hack/containerdref"
	"peapod/hack/testimages/imagebuild"
	"peapod/internal/freeport"
)

// runtime is one daemon under test.
type runtime struct {
	name     string
	endpoint string // unix:///…
	cmd      *exec.Cmd
	dir      string
	bridge   string
	subnet   string // of its CNI conf list
	httpAddr string // peapod's /metrics and /debug/pprof/
	// helpers lists the per-pod helper processes (conmon / shims) of this
	// daemon only, from their command lines.
	helpers func() []int
	crictl  *crictl
	// shims seen during the run: each must be gone after stop.
	seen map[int]string
	// cleanup runs after the daemon stopped.
	cleanup []func()
	// peapod only: the idle memory of peapod with its default config (the
	// agent on); the workload runs with the agent off.
	idleWithAgent      mem
	idleWithAgentSplit rssSplit
	idleAgent          mem // the peapod-agent process alone
}

// registry is the local docker-registry both runtimes pull from.
type registry struct {
	repo, dir, addr string
}

func startRegistry(ctx context.Context, o options) (*registry, error) {
	port, err := freeport.Get()
	if err != nil {
		return nil, err
	}
	r := &registry{repo: o.repo, dir: filepath.Join(o.dir, "registry"), addr: "127.0.0.1:" + strconv.Itoa(port)}
	if out, err := exec.CommandContext(ctx, "bash", filepath.Join(o.repo, "hack/registry.sh"), "start", r.dir, strconv.Itoa(port)).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("registry: %v\n%s", err, out)
	}
	// The test images (library/busybox:latest …) and those critest and
	// containerd pull (pause:3.6, library/busybox:1 …), under their
	// original paths; both runtimes' mirrors send docker.io and
	// registry.k8s.io here.
	set, err := imagebuild.Cached(imagebuild.Options{})
	if err != nil {
		r.stop()
		return nil, err
	}
	bin := filepath.Join(o.dir, "bin")
	os.MkdirAll(bin, 0o755)
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(bin, "ctrbin"), "./hack/testimages/ctrbin")
	build.Dir, build.Env = o.repo, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		r.stop()
		return nil, fmt.Errorf("build ctrbin: %v\n%s", err, out)
	}
	conf, err := imagebuild.Conformance(imagebuild.ConformanceOptions{Ctrbin: filepath.Join(bin, "ctrbin"), Pause: filepath.Join(o.repo, "bin/peapod-pause")})
	if err != nil {
		r.stop()
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := imagebuild.Push(pctx, set, r.addr, ""); err != nil {
		r.stop()
		return nil, err
	}
	if _, err := imagebuild.PushNamed(pctx, conf, r.addr, ""); err != nil {
		r.stop()
		return nil, err
	}
	logf("registry on %s with the test images and pause:3.6", r.addr)
	return r, nil
}

func (r *registry) stop() {
	exec.Command("bash", filepath.Join(r.repo, "hack/registry.sh"), "stop", r.dir).Run()
}

// freeSubnet picks a 10.254.X.0/24 that no route on this host uses.
func freeSubnet() (string, error) {
	out, _ := exec.Command("ip", "-4", "route").Output()
	for i := 0; i < 100; i++ {
		s := fmt.Sprintf("10.254.%d.", rand.Intn(256))
		if !strings.Contains(string(out), s) {
			return s + "0/24", nil
		}
	}
	return "", fmt.Errorf("no free 10.254.X.0/24")
}

// writeCNI writes the same conf list for both runtimes: a bridge of
// their own with host-local IPAM on a /24 of their own, and portmap — what
// peapod writes by default, and what containerd's docs suggest.
func writeCNI(dir, name, bridge, subnet string) error {
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       name,
		"plugins": []any{
			map[string]any{"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]string{{{"subnet": subnet}}}, "dataDir": filepath.Join(dir, "ipam")}},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	})
	os.MkdirAll(filepath.Join(dir, "cni"), 0o755)
	return os.WriteFile(filepath.Join(dir, "cni", "10-bench.conflist"), conf, 0o644)
}

func startPeapod(ctx context.Context, o options, reg string, n int) (*runtime, error) {
	d := filepath.Join(o.dir, "peapod")
	rt := &runtime{name: "peapod", dir: d, bridge: fmt.Sprintf("pbench%d", n), seen: map[int]string{}}
	subnet, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	rt.subnet = subnet
	if err := writeCNI(d, "bench-peapod", rt.bridge, subnet); err != nil {
		return nil, err
	}
	// First, peapod with its default config (the agent on), only for its
	// idle memory; the workload then runs against peapod as a CRI runtime
	// only (agent.enabled = false), as containerd is one.
	rt.idleWithAgent, rt.idleWithAgentSplit, rt.idleAgent, err = peapodIdleWithAgent(ctx, o, d, rt.bridge, subnet, reg)
	if err != nil {
		return nil, err
	}
	port, err := freeport.Get()
	if err != nil {
		return nil, err
	}
	rt.httpAddr = "127.0.0.1:" + strconv.Itoa(port)
	sock := filepath.Join(d, "run", "peapod.sock")
	cfg, err := writePeapodConfig(d, filepath.Join(d, "peapod.toml"), sock, rt.httpAddr, rt.bridge, subnet, reg, "/"+o.cgroup+"/peapod", false, "")
	if err != nil {
		return nil, err
	}
	rt.cmd = exec.Command(filepath.Join(o.repo, "bin/peapod"), "serve", "--config", cfg)
	rt.endpoint = "unix://" + sock
	stateDir := filepath.Join(d, "run")
	rt.helpers = func() []int { return pidsMatching("conmon", stateDir) }
	return rt, rt.start(ctx, o)
}

// writePeapodConfig writes a config with its own root, state and socket
// under dir (cniDir's conf list is shared: peapod writes none when one is
// there) and returns its path. The agent's QoS tree goes below
// cgroupRoot, which the run removes at its end. lxcfs is off unless
// lxcfsDir names an lxcfs mount (then "on"): the figures must not depend
// on whether the host runs lxcfs at /var/lib/lxcfs.
func writePeapodConfig(cniDir, path, sock, httpAddr, bridge, subnet, reg, cgroupRoot string, agent bool, lxcfsDir string) (string, error) {
	d := filepath.Dir(path)
	var b strings.Builder
	fmt.Fprintf(&b, "root = %q\nstate = %q\n", filepath.Join(d, "root"), filepath.Dir(sock))
	fmt.Fprintf(&b, "[cri]\nsocket = %q\n", sock)
	fmt.Fprintf(&b, "[http]\naddress = %q\npprof = true\n", httpAddr)
	fmt.Fprintf(&b, "[cni]\nconf_dir = %q\nbin_dirs = [\"/usr/lib/cni\"]\nbridge = %q\nsubnet = %q\n", filepath.Join(cniDir, "cni"), bridge, subnet)
	fmt.Fprintf(&b, "[runtimes.runc]\npath = \"/usr/sbin/runc\"\nroot = %q\n", filepath.Join(filepath.Dir(sock), "runc"))
	fmt.Fprintf(&b, "[runtimes.crun]\npath = \"/usr/bin/crun\"\nroot = %q\n", filepath.Join(filepath.Dir(sock), "crun"))
	fmt.Fprintf(&b, "[agent]\nenabled = %t\nmanifests_dir = %q\npod_logs_dir = %q\nvolume_plugin_dir = %q\n",
		agent, filepath.Join(d, "manifests"), filepath.Join(d, "podlogs"), filepath.Join(d, "volume-plugins"))
	fmt.Fprintf(&b, "cgroup_root = %q\n", cgroupRoot)
	if lxcfsDir == "" {
		b.WriteString("[containers]\nlxcfs = \"off\"\n")
	} else {
		fmt.Fprintf(&b, "[containers]\nlxcfs = \"on\"\nlxcfs_dir = %q\n", lxcfsDir)
	}
	for _, h := range []string{"docker.io", "registry.k8s.io"} {
		fmt.Fprintf(&b, "[registry.mirrors.%q]\nendpoints = [\"http://%s\"]\n", h, reg)
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// peapodIdleWithAgent starts a peapod with the agent on (its own dirs),
// reads its memory as measure reads the idle daemon's (2 s after it first
// answered and its peapod-agent child serves), and stops it by its PID.
// It returns serve + agent (the default install's two processes) and the
// agent alone.
func peapodIdleWithAgent(ctx context.Context, o options, cniDir, bridge, subnet, reg string) (mem, rssSplit, mem, error) {
	d := filepath.Join(o.dir, "peapod-agent")
	sock := filepath.Join(d, "run", "peapod.sock")
	cfg, err := writePeapodConfig(cniDir, filepath.Join(d, "peapod.toml"), sock, "127.0.0.1:0", bridge, subnet, reg, "/"+o.cgroup+"/peapod-agent", true, "")
	if err != nil {
		return mem{}, rssSplit{}, mem{}, err
	}
	probe := &runtime{name: "peapod-agent", dir: d, seen: map[int]string{}}
	probe.cmd = exec.Command(filepath.Join(o.repo, "bin/peapod"), "serve", "--config", cfg)
	probe.endpoint = "unix://" + sock
	probe.helpers = func() []int { return nil }
	if err := probe.start(ctx, o); err != nil {
		return mem{}, rssSplit{}, mem{}, err
	}
	agentSock := filepath.Join(d, "run", "agent.sock")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(agentSock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			probe.stop()
			return mem{}, rssSplit{}, mem{}, fmt.Errorf("peapod-agent did not listen on %s within 30s", agentSock)
		}
	}
	time.Sleep(2 * time.Second)
	m, split := memOf(probe.cmd.Process.Pid), rssSplitOf(probe.cmd.Process.Pid)
	var agent mem
	for _, pid := range children()[probe.cmd.Process.Pid] {
		if comm(pid) == "peapod-agent" {
			agent = memOf(pid)
		}
	}
	if agent.rss == 0 {
		probe.stop()
		return mem{}, rssSplit{}, mem{}, fmt.Errorf("no peapod-agent child of peapod serve %d", probe.cmd.Process.Pid)
	}
	logf("peapod with the agent on: serve idle Rss %s (RssAnon %s, RssFile %s), peapod-agent Rss %s", mib(m.rss), mib(split.anon), mib(split.file), mib(agent.rss))
	if err := probe.stop(); err != nil {
		return mem{}, rssSplit{}, mem{}, err
	}
	return m.add(agent), split, agent, nil
}

// startContainerd runs one containerd (in) on its own dirs, with the same
// CNI conf list and runc as peapod; its config comes from containerdref,
// the one every reference run here shares.
func startContainerd(ctx context.Context, o options, reg string, n int, in containerdref.Install) (*runtime, error) {
	d := filepath.Join(o.dir, in.Name)
	rt := &runtime{name: in.Name, dir: d, bridge: fmt.Sprintf("cbench%d", n), seen: map[int]string{}}
	subnet, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	if err := writeCNI(d, "bench-"+in.Name, rt.bridge, subnet); err != nil {
		return nil, err
	}
	sock := filepath.Join(d, "containerd.sock")
	cfgPath, err := in.Write(containerdref.Options{Dir: d, Socket: sock, CNIConfDir: filepath.Join(d, "cni"), Registry: reg})
	if err != nil {
		return nil, err
	}
	rt.cleanup = append(rt.cleanup, in.TrackHostDirs(d))
	rt.cmd = in.Command(cfgPath)
	rt.endpoint = "unix://" + sock
	rt.helpers = func() []int { return pidsMatching("containerd-shim", sock) }
	return rt, rt.start(ctx, o)
}

func (rt *runtime) start(ctx context.Context, o options) error {
	logPath := filepath.Join(o.out, rt.name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	rt.cmd.Stdout, rt.cmd.Stderr = logFile, logFile
	// Its own process group: a ^C to the bench reaches us, and we stop
	// the daemon in order (pods first) rather than have it die mid-way.
	rt.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := rt.cmd.Start(); err != nil {
		return err
	}
	rt.crictl = newCrictl(o, rt.endpoint)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := rt.crictl.run(ctx, "version"); err == nil {
			break
		}
		if rt.cmd.Process.Signal(syscall.Signal(0)) != nil || time.Now().After(deadline) {
			rt.stop()
			data, _ := os.ReadFile(logPath)
			return fmt.Errorf("%s did not come up; log tail:\n%s", rt.name, tail(string(data), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	logf("%s pid %d on %s (log %s)", rt.name, rt.cmd.Process.Pid, rt.endpoint, logPath)
	return nil
}

// noteHelpers remembers the helper processes alive now, to check after
// stop that each is gone.
func (rt *runtime) noteHelpers() {
	for _, pid := range rt.helpers() {
		rt.seen[pid] = procStartTime(pid)
	}
}

// stop removes every pod through crictl, stops the daemon by its PID,
// checks that every helper seen is gone, and removes the bridge.
func (rt *runtime) stop() error {
	var errs []string
	if rt.crictl != nil && rt.cmd.ProcessState == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		rt.noteHelpers()
		if out, err := rt.crictl.run(ctx, "rmp", "-af"); err != nil {
			errs = append(errs, fmt.Sprintf("crictl rmp -af: %v %s", err, out))
		}
		cancel()
	}
	if rt.cmd.Process != nil && rt.cmd.ProcessState == nil {
		rt.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { rt.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			rt.cmd.Process.Kill()
			<-done
		}
	}
	// Helpers exit once their pod is gone; wait a little, then name any
	// left (and stop them: they are ours, by PID and start time).
	deadline := time.Now().Add(15 * time.Second)
	for pid, started := range rt.seen {
		for procStartTime(pid) == started && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if procStartTime(pid) == started {
			errs = append(errs, fmt.Sprintf("helper pid %d still running after stop; killed", pid))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if len(rt.seen) > 0 {
		logf("%s: all %d helper processes seen are gone", rt.name, len(rt.seen))
	}
	if rt.bridge != "" {
		exec.Command("ip", "link", "del", rt.bridge).Run()
	}
	sweepMounts(rt.dir)
	for _, f := range rt.cleanup {
		f()
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s stop: %s", rt.name, strings.Join(errs, "; "))
	}
	return nil
}

// sweepMounts unmounts whatever is still mounted below dir, deepest first.
func sweepMounts(dir string) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	lines := strings.Split(string(data), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			logf("unmounting leftover %s", f[1])
			syscall.Unmount(f[1], syscall.MNT_DETACH)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
