package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/internal/atomicfile"
	"peapod/internal/cgroupfs"
	"peapod/sandbox/infra"
	"peapod/sandbox/network"
	"peapod/sandbox/spec"
	"peapod/store"
)

// defaultShmSize is the pod's /dev/shm, as Docker and containerd size it.
const defaultShmSize = 64 << 20

// RunSandbox creates and starts a pod sandbox. Each slow step records its
// undo; a failure anywhere unwinds what was done, on its own context.
func (m *Manager) RunSandbox(ctx context.Context, cfg *runtimeapi.PodSandboxConfig, handler string) (_ string, retErr error) {
	began := time.Now()
	if err := validateSandboxConfig(cfg); err != nil {
		return "", err
	}
	if handler == "" {
		handler = m.o.DefaultRuntime
	}
	rt, err := m.runtime(handler)
	if err != nil {
		return "", err
	}
	// The namespace options are checked before any work; a user namespace
	// also needs a handler that can make idmapped mounts (userns.go).
	nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	if _, err := spec.SandboxNamespaces(nsOpts, "-"); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	userns := nsOpts.GetUsernsOptions() != nil && nsOpts.GetUsernsOptions().GetMode() == runtimeapi.NamespaceMode_POD
	if userns {
		if err := m.checkUserNS(ctx, handler); err != nil {
			return "", err
		}
	}
	if err := rt.Check(ctx); err != nil {
		return "", fmt.Errorf("%w: runtime handler %q cannot run containers on this host: %v", ErrFailedPrecondion, handler, err)
	}
	md := cfg.GetMetadata()
	id := newID()
	name := fmt.Sprintf("%s_%s_%s_%d", md.GetName(), md.GetNamespace(), md.GetUid(), md.GetAttempt())
	if err := m.reserveName(name, id); err != nil {
		return "", err
	}
	var undo undoStack
	defer func() {
		if retErr != nil {
			undo.run(id)
		}
	}()
	undo.push("release name", func(context.Context) error { m.releaseName(name, id); return nil })

	cfgBytes, err := proto.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("encode sandbox config: %w", err)
	}
	ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	sb := &Sandbox{config: cfg, rec: SandboxRecord{
		ID:             id,
		Name:           name,
		ConfigProto:    cfgBytes,
		RuntimeHandler: handler,
		State:          runtimeapi.PodSandboxState_SANDBOX_NOTREADY,
		CreatedAt:      time.Now().UnixNano(),
		CgroupParent:   m.cgroupParent(cfg),
	}}
	// The record goes to disk first, NOTREADY: a crash mid-way leaves a
	// sandbox the kubelet sees and removes, not an orphaned netns.
	if err := m.o.Store.Put(store.BucketSandboxes, id, &sb.rec); err != nil {
		return "", fmt.Errorf("persist sandbox %s: %w", id, err)
	}
	undo.push("delete record", func(context.Context) error { return m.o.Store.Delete(store.BucketSandboxes, id) })
	sb.op.Lock()
	defer sb.op.Unlock()
	m.mu.Lock()
	m.sandboxes[id] = sb
	m.mu.Unlock()
	undo.push("forget sandbox", func(context.Context) error {
		m.mu.Lock()
		delete(m.sandboxes, id)
		m.mu.Unlock()
		return nil
	})

	dir := m.sandboxStateDir(id)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", fmt.Errorf("sandbox %s dir: %w", id, err)
	}
	undo.push("remove dir", func(context.Context) error { return os.RemoveAll(dir) })

	hostname, err := sandboxHostname(cfg)
	if err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "hostname"), []byte(hostname+"\n"), 0o644); err != nil {
		return "", err
	}
	if err := writeResolvConf(filepath.Join(dir, "resolv.conf"), cfg.GetDnsConfig()); err != nil {
		return "", err
	}

	if ns.GetIpc() != runtimeapi.NamespaceMode_NODE {
		shm := filepath.Join(dir, "shm")
		if err := mountShm(shm); err != nil {
			return "", fmt.Errorf("sandbox %s /dev/shm: %w", id, err)
		}
		undo.push("unmount shm", func(context.Context) error { return unmountAll(shm) })
		_ = sb.update(m.o.Store, func(r *SandboxRecord) error { r.ShmMounted = true; return nil })
	}

	hostNet := ns.GetNetwork() == runtimeapi.NamespaceMode_NODE
	// With a user namespace the pause makes the netns inside it (pinned
	// once it runs, below).
	if !hostNet && !userns {
		nsPath, err := m.o.Network.NewNetNS("peapod-" + id)
		if err != nil {
			return "", fmt.Errorf("sandbox %s netns: %w", id, err)
		}
		undo.push("remove netns", func(context.Context) error { return m.o.Network.RemoveNetNS(nsPath) })
		if err := sb.update(m.o.Store, func(r *SandboxRecord) error { r.NetNS = nsPath; return nil }); err != nil {
			return "", err
		}
	}

	// Pushed before the pause exists, so it runs after the pause is gone:
	// the pause's cgroup (if a cut-short create left it) and the pod's own.
	undo.push("remove cgroups", func(context.Context) error {
		cgroupfs.Remove(filepath.Join(sb.rec.CgroupParent, id))
		m.removePodCgroup(sb)
		return nil
	})
	// The pause starts while CNI ADD sets up the netns it joins: its move
	// into its cgroup waits out an RCU grace period (~10 ms here), as long
	// as CNI ADD itself. Its sysctls follow CNI, which makes eth0.
	type started struct {
		p       *infra.Process
		sysctls map[string]string
		took    time.Duration
		err     error
	}
	pc := make(chan started, 1)
	startPause := func() {
		t0 := time.Now()
		p, sysctls, err := m.startPause(sb)
		pc <- started{p, sysctls, time.Since(t0), err}
	}
	var ps started
	if userns {
		// CNI needs the netns the pause makes: one after the other.
		startPause()
		ps = <-pc
		if ps.p != nil {
			pause := ps.p
			undo.push("start pause", func(context.Context) error { return pause.Stop(0) })
		}
		if ps.err != nil {
			return "", ps.err
		}
		nsPath, err := m.pinPauseNetNS(id, ps.p.Pid)
		if err != nil {
			return "", fmt.Errorf("sandbox %s netns: %w", id, err)
		}
		undo.push("remove netns", func(context.Context) error { return m.o.Network.RemoveNetNS(nsPath) })
		if err := sb.update(m.o.Store, func(r *SandboxRecord) error { r.NetNS = nsPath; return nil }); err != nil {
			return "", err
		}
	} else {
		go startPause()
	}
	var ips []string
	var cniErr error
	if !hostNet {
		pod := m.networkPod(sb)
		if res, err := m.o.Network.Setup(ctx, pod); err != nil {
			cniErr = fmt.Errorf("sandbox %s: CNI ADD: %w", id, err)
		} else {
			undo.push("CNI DEL", func(ctx context.Context) error { return m.o.Network.Teardown(ctx, pod) })
			for _, ip := range res.IPs {
				ips = append(ips, ip.String())
			}
		}
	}
	if !userns {
		ps = <-pc
		if pause := ps.p; pause != nil {
			undo.push("start pause", func(context.Context) error { return pause.Stop(0) })
		}
	}
	pause := ps.p
	if cniErr != nil {
		return "", cniErr
	}
	if ps.err != nil {
		return "", ps.err
	}
	if len(ips) > 0 {
		if err := sb.update(m.o.Store, func(r *SandboxRecord) error { r.IPs = ips; return nil }); err != nil {
			return "", err
		}
	}
	if err := pause.SetSysctls(ps.sysctls); err != nil {
		return "", fmt.Errorf("sandbox %s: %w", id, err)
	}
	if err := writeHosts(filepath.Join(dir, "hosts"), hostNet, hostname, ips); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		// The caller gave up: unwind rather than leave a pod nobody knows of.
		return "", fmt.Errorf("sandbox %s: %w", id, err)
	}
	if err := sb.update(m.o.Store, func(r *SandboxRecord) error {
		r.PausePid = pause.Pid
		r.PauseStartTime = pause.StartTime
		r.State = runtimeapi.PodSandboxState_SANDBOX_READY
		return nil
	}); err != nil {
		return "", err
	}
	m.watchPause(sb, pause)
	m.emitSandbox(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, id)
	m.emitSandbox(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, id)
	klog.InfoS("Pod sandbox ready", "id", id, "pod", klog.KRef(md.GetNamespace(), md.GetName()), "ips", ips, "handler", handler, "duration", time.Since(began).Round(time.Millisecond/10), "pauseStart", ps.took.Round(time.Millisecond/10), "steps", undo.timings())
	return id, nil
}

// startPause starts the pod's infra process in the pod's namespaces and
// cgroup (sandbox/infra) and returns it with the sysctls to set once the
// network is up. The OCI spec a runtime would have run it with is still
// built: it validates the pod's user, sysctls and security options with
// the same rules as a container's, and says how the pause runs. On error
// nothing of the pause is left running.
func (m *Manager) startPause(sb *Sandbox) (*infra.Process, map[string]string, error) {
	rec := sb.Record()
	id := rec.ID
	cfg := sb.Config()
	nss, err := spec.SandboxNamespaces(cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(), rec.NetNS)
	if err != nil {
		if errors.Is(err, spec.ErrUnsupported) {
			return nil, nil, fmt.Errorf("%w: %v", ErrUnimplemented, err)
		}
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	in := spec.SandboxInput{
		ID:             id,
		Config:         cfg,
		RootfsPath:     m.pauseRoot(),
		PauseArgs:      append([]string{m.o.PausePath}, m.o.PauseArgs...),
		Namespaces:     nss,
		CgroupsPath:    filepath.Join(rec.CgroupParent, id),
		MinOOMScoreAdj: m.minOOMScoreAdj,
	}
	sp, err := spec.Sandbox(in)
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox %s: pause spec: %w", id, err)
	}
	u := sp.Process.User
	opts := infra.Options{
		Path:     m.o.PausePath,
		Args:     m.o.PauseArgs,
		Root:     m.pauseRoot(),
		NetNS:    rec.NetNS,
		NewUTS:   !nss.HostUTS,
		Hostname: sp.Hostname,
		NewIPC:   !nss.HostIPC,
		NewPID:   !nss.HostPID,
		UID:      u.UID,
		GID:      u.GID,
		Groups:   u.AdditionalGids,
	}
	if nss.UserNS.Enabled() {
		opts.NetNS = ""
		opts.UIDMappings = sysProcIDMaps(sp.Linux.UIDMappings)
		opts.GIDMappings = sysProcIDMaps(sp.Linux.GIDMappings)
		// The pause's default user (65535) may be outside a short
		// mapping: it then runs as the pod's root, an unprivileged host
		// id all the same.
		if spec.HostID(sp.Linux.UIDMappings, opts.UID) == math.MaxUint32 || spec.HostID(sp.Linux.GIDMappings, opts.GID) == math.MaxUint32 {
			if cfg.GetLinux().GetSecurityContext().GetRunAsUser() != nil {
				return nil, nil, fmt.Errorf("%w: sandbox %s: linux.security_context.run_as_user %d:%d is outside the pod's user namespace mappings", ErrInvalid, id, opts.UID, opts.GID)
			}
			opts.UID, opts.GID, opts.Groups = 0, 0, []uint32{0}
		}
	}
	p, err := infra.Start(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox %s: start pause: %w", id, err)
	}
	fail := func(err error) (*infra.Process, map[string]string, error) {
		_ = p.Stop(0)
		return nil, nil, fmt.Errorf("sandbox %s: %w", id, err)
	}
	var shares uint64
	if c := sp.Linux.Resources.CPU; c != nil && c.Shares != nil {
		shares = *c.Shares
	}
	if err := cgroupfs.Join(sp.Linux.CgroupsPath, p.Pid, shares); err != nil {
		return fail(fmt.Errorf("pause cgroup: %w", err))
	}
	if adj := sp.Process.OOMScoreAdj; adj != nil && *adj != m.minOOMScoreAdj {
		// The pause inherited peapod's own score; raising it needs no privilege.
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", p.Pid), []byte(strconv.Itoa(*adj)), 0); err != nil {
			return fail(fmt.Errorf("pause oom_score_adj: %w", err))
		}
	}
	return p, sp.Linux.Sysctl, nil
}

// sysProcIDMaps converts OCI id mappings for os/exec.
func sysProcIDMaps(in []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, 0, len(in))
	for _, m := range in {
		out = append(out, syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
	}
	return out
}

func (m *Manager) networkPod(sb *Sandbox) network.Pod {
	md := sb.Config().GetMetadata()
	p := network.Pod{
		ID:           sb.rec.ID,
		Name:         md.GetName(),
		Namespace:    md.GetNamespace(),
		UID:          md.GetUid(),
		NetNS:        sb.rec.NetNS,
		CgroupParent: sb.rec.CgroupParent,
	}
	for _, pm := range sb.Config().GetPortMappings() {
		if pm.GetHostPort() == 0 {
			continue
		}
		p.PortMappings = append(p.PortMappings, network.PortMapping{
			HostPort:      pm.GetHostPort(),
			ContainerPort: pm.GetContainerPort(),
			Protocol:      strings.ToLower(pm.GetProtocol().String()),
			HostIP:        pm.GetHostIp(),
		})
	}
	return p
}

func (m *Manager) cgroupParent(cfg *runtimeapi.PodSandboxConfig) string {
	if p := cfg.GetLinux().GetCgroupParent(); p != "" {
		return p
	}
	return filepath.Join(m.o.DefaultCgroupParent, "pod"+cfg.GetMetadata().GetUid())
}

func validateSandboxConfig(cfg *runtimeapi.PodSandboxConfig) error {
	if cfg == nil {
		return fmt.Errorf("%w: config is required", ErrInvalid)
	}
	md := cfg.GetMetadata()
	switch {
	case md == nil:
		return fmt.Errorf("%w: config.metadata is required", ErrInvalid)
	case md.GetName() == "":
		return fmt.Errorf("%w: config.metadata.name is required", ErrInvalid)
	case md.GetNamespace() == "":
		return fmt.Errorf("%w: config.metadata.namespace is required", ErrInvalid)
	case md.GetUid() == "":
		return fmt.Errorf("%w: config.metadata.uid is required", ErrInvalid)
	}
	if p := cfg.GetLinux().GetCgroupParent(); p != "" && (!filepath.IsAbs(p) || strings.Contains(p, "..")) {
		return fmt.Errorf("%w: config.linux.cgroup_parent %q must be an absolute path without ..", ErrInvalid, p)
	}
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE {
		for k := range cfg.GetLinux().GetSysctls() {
			if strings.HasPrefix(k, "net.") {
				return fmt.Errorf("%w: config.linux.sysctls: %q cannot be set in the host network namespace", ErrInvalid, k)
			}
		}
	}
	for i, pm := range cfg.GetPortMappings() {
		if pm.GetContainerPort() <= 0 || pm.GetContainerPort() > 65535 || pm.GetHostPort() < 0 || pm.GetHostPort() > 65535 {
			return fmt.Errorf("%w: config.port_mappings[%d]: ports must be within 1-65535", ErrInvalid, i)
		}
	}
	return nil
}

// sandboxHostname is the pod's hostname. Without one in the config the pod
// gets the node's, as with containerd (a new UTS namespace starts as a copy
// of the node's): the pod name may be longer than the kernel's 64 bytes
// (critest's are), and the kubelet always sets one.
func sandboxHostname(cfg *runtimeapi.PodSandboxConfig) (string, error) {
	h := cfg.GetHostname()
	if h == "" {
		return os.Hostname()
	}
	if len(h) > 64 || strings.ContainsAny(h, "/\n\x00 ") {
		return "", fmt.Errorf("%w: config.hostname %q is not a valid hostname", ErrInvalid, h)
	}
	return h, nil
}

func writeResolvConf(path string, dns *runtimeapi.DNSConfig) error {
	if dns == nil || (len(dns.GetServers()) == 0 && len(dns.GetSearches()) == 0 && len(dns.GetOptions()) == 0) {
		// As containerd: no DNS config means the node's resolv.conf.
		data, err := os.ReadFile("/etc/resolv.conf")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read host resolv.conf: %w", err)
		}
		return atomicfile.WriteFile(path, data, 0o644)
	}
	var b strings.Builder
	if s := dns.GetSearches(); len(s) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(s, " "))
	}
	for _, s := range dns.GetServers() {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if o := dns.GetOptions(); len(o) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(o, " "))
	}
	return atomicfile.WriteFile(path, []byte(b.String()), 0o644)
}

func writeHosts(path string, hostNet bool, hostname string, ips []string) error {
	if hostNet {
		data, err := os.ReadFile("/etc/hosts")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read host /etc/hosts: %w", err)
		}
		return atomicfile.WriteFile(path, data, 0o644)
	}
	var b strings.Builder
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	for _, ip := range ips {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return atomicfile.WriteFile(path, []byte(b.String()), 0o644)
}

func writeSpec(bundle string, sp *specs.Spec) error {
	data, err := json.Marshal(sp)
	if err != nil {
		return fmt.Errorf("encode OCI spec: %w", err)
	}
	return atomicfile.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}

func mountShm(path string) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	return unix.Mount("shm", path, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, fmt.Sprintf("mode=1777,size=%d", defaultShmSize))
}

// unmountAll detaches every mount stacked at path; not mounted is success.
func unmountAll(path string) error {
	for i := 0; i < 16; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if err == unix.EINVAL || err == unix.ENOENT {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return nil
}
