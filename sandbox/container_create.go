package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/image"
	"peapod/internal/cgroupfs"
	"peapod/oci"
	"peapod/sandbox/spec"
	"peapod/store"
)

// CreateContainer creates a container in a ready sandbox: image layers
// acquired, overlay rootfs mounted, image volumes mounted
// (container_image_volumes.go), OCI spec written, `runtime create` run
// under conmon. Each step unwinds on failure.
func (m *Manager) CreateContainer(ctx context.Context, sandboxID string, cfg *runtimeapi.ContainerConfig) (_ string, retErr error) {
	if err := validateContainerConfig(cfg); err != nil {
		return "", err
	}
	sb, err := m.Sandbox(sandboxID)
	if err != nil {
		return "", err
	}
	sbRec := sb.Record()
	if sbRec.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		return "", fmt.Errorf("%w: pod sandbox %s is not ready", ErrFailedPrecondion, sbRec.ID)
	}
	rt, err := m.runtime(sbRec.RuntimeHandler)
	if err != nil {
		return "", err
	}
	// lxcfs's files for this container, decided before any work: "on"
	// refuses while lxcfs is down.
	lxcfsDir, lxcfsPaths, lxcfsGen, err := m.lxcfsFor(sb)
	if err != nil {
		return "", err
	}
	sbMD := sb.Config().GetMetadata()
	id := newID()
	name := fmt.Sprintf("%s_%s_%s_%s_%d", cfg.GetMetadata().GetName(), sbMD.GetName(), sbMD.GetNamespace(), sbMD.GetUid(), cfg.GetMetadata().GetAttempt())
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

	lowerDirs, img, err := m.o.Images.Acquire(ctx, id, cfg.GetImage().GetImage())
	if err != nil {
		if errors.Is(err, image.ErrNotFound) {
			return "", fmt.Errorf("%w: image %q (config.image.image) is not present: pull it first", ErrNotFound, cfg.GetImage().GetImage())
		}
		return "", fmt.Errorf("container %s: image %q: %w", id, cfg.GetImage().GetImage(), err)
	}
	undo.push("release image", func(ctx context.Context) error { return m.o.Images.Release(ctx, id) })

	rootDir := m.containerRootDir(id)
	stateDir := m.containerStateDir(id)
	rootfs := filepath.Join(stateDir, "rootfs")
	for _, d := range []string{filepath.Join(rootDir, "upper"), filepath.Join(rootDir, "work"), rootfs} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return "", fmt.Errorf("container %s: %w", id, err)
		}
	}
	undo.push("remove dirs", func(context.Context) error {
		os.RemoveAll(stateDir)
		return os.RemoveAll(rootDir)
	})
	if u := sandboxUserNS(sb); u.Enabled() {
		// The layers idmapped through the pod's user namespace (userns.go).
		f, err := userNSFD(sbRec.PausePid)
		if err != nil {
			return "", fmt.Errorf("%w: container %s: %v", ErrFailedPrecondion, id, err)
		}
		uid, gid := u.HostRoot()
		err = mountIDMappedOverlay(rootfs, lowerDirs, filepath.Join(rootDir, "upper"), filepath.Join(rootDir, "work"),
			filepath.Join(stateDir, "idmapped-layers"), int(f.Fd()), uid, gid)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("container %s: rootfs: %w", id, err)
		}
	} else if err := mountOverlay(rootfs, lowerDirs, filepath.Join(rootDir, "upper"), filepath.Join(rootDir, "work")); err != nil {
		return "", fmt.Errorf("container %s: rootfs: %w", id, err)
	}
	undo.push("unmount rootfs", func(context.Context) error { return unmountAll(rootfs) })

	var imageVols map[int]string
	if slices.ContainsFunc(cfg.GetMounts(), spec.IsImageMount) {
		if imageVols, err = m.mountImageVolumes(ctx, id, cfg); err != nil {
			// The volumes mounted before the one that failed go too,
			// whatever became of the caller's context.
			cctx, cancel := cleanupCtx()
			defer cancel()
			if rerr := m.o.Images.ReleaseVolumes(cctx, id); rerr != nil {
				klog.ErrorS(rerr, "Releasing image volumes of a failed create", "id", id)
			}
			return "", err
		}
		undo.push("release image volumes", func(ctx context.Context) error { return m.o.Images.ReleaseVolumes(ctx, id) })
	}

	sbDir := m.sandboxStateDir(sbRec.ID)
	nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	nss, err := m.containerNamespaces(sb, nsOpts)
	if err != nil {
		return "", err
	}
	cgroupsPath := filepath.Join(sbRec.CgroupParent, id)
	in := spec.ContainerInput{
		ID:               id,
		SandboxID:        sbRec.ID,
		ImageName:        cfg.GetImage().GetImage(),
		Config:           cfg,
		Sandbox:          sb.Config(),
		Image:            &img.Config.Config,
		RootfsPath:       rootfs,
		Namespaces:       nss,
		HostsPath:        filepath.Join(sbDir, "hosts"),
		HostnamePath:     filepath.Join(sbDir, "hostname"),
		ResolvPath:       filepath.Join(sbDir, "resolv.conf"),
		CgroupsPath:      cgroupsPath,
		LXCFSDir:         lxcfsDir,
		LXCFSPaths:       lxcfsPaths,
		ImageVolumes:     imageVols,
		MinOOMScoreAdj:   m.minOOMScoreAdj,
		NoHugetlb:        m.noHugetlb,
		NoSwapAccounting: m.noSwapAccounting,
	}
	if nss.HostNet {
		in.NodeHostname, _ = os.Hostname()
	}
	if sbRec.ShmMounted {
		in.ShmPath = filepath.Join(sbDir, "shm")
	}
	sp, warnings, err := spec.Container(in)
	if err != nil {
		if errors.Is(err, spec.ErrUnsupported) {
			return "", fmt.Errorf("%w: %v", ErrUnimplemented, err)
		}
		if spec.IsInvalidArgument(err) {
			return "", fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return "", fmt.Errorf("container %s: spec: %w", id, err)
	}
	for _, w := range warnings {
		klog.InfoS("Container spec adjusted", "id", id, "warning", w)
	}
	if err := writeSpec(stateDir, sp); err != nil {
		return "", fmt.Errorf("container %s: %w", id, err)
	}
	logPath := ""
	if dir, rel := sb.Config().GetLogDirectory(), cfg.GetLogPath(); dir != "" && rel != "" {
		logPath = filepath.Join(dir, rel)
		if !strings.HasPrefix(logPath, filepath.Clean(dir)+"/") {
			return "", fmt.Errorf("%w: config.log_path %q escapes the sandbox log_directory", ErrInvalid, rel)
		}
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			return "", fmt.Errorf("container %s: log dir: %w", id, err)
		}
	}
	conmonLog := logPath
	if conmonLog == "" {
		// No log requested (as containerd does): conmon still needs a sink.
		conmonLog = os.DevNull
	}
	cfgBytes, err := proto.Marshal(cfg)
	if err != nil {
		return "", err
	}
	rec := ContainerRecord{
		ID:          id,
		SandboxID:   sbRec.ID,
		Name:        name,
		ConfigProto: cfgBytes,
		ImageRef:    img.ID,
		ImageName:   cfg.GetImage().GetImage(),
		State:       runtimeapi.ContainerState_CONTAINER_CREATED,
		CreatedAt:   time.Now().UnixNano(),
		LogPath:     logPath,
		StopSignal:  img.Config.Config.StopSignal,
		CgroupsPath: cgroupsPath,
		Mounted:     true,
	}
	if len(img.RepoDigests) > 0 {
		rec.RepoDigest = img.RepoDigests[0]
	} else {
		rec.RepoDigest = img.ID
	}
	if sp.Process != nil {
		rec.UID, rec.GID = int64(sp.Process.User.UID), int64(sp.Process.User.GID)
		for _, g := range sp.Process.User.AdditionalGids {
			rec.GIDs = append(rec.GIDs, int64(g))
		}
	}
	// Persist before the runtime call: a crash after `create` must leave a
	// record that restore can reconcile.
	if err := m.o.Store.Put(store.BucketContainers, id, &rec); err != nil {
		return "", fmt.Errorf("persist container %s: %w", id, err)
	}
	undo.push("delete record", func(context.Context) error { return m.o.Store.Delete(store.BucketContainers, id) })

	undo.push("remove cgroup", func(context.Context) error { cgroupfs.Remove(cgroupsPath); return nil })
	rctx, cancel := runtimeCtx(ctx)
	defer cancel()
	pid, err := rt.Create(rctx, oci.CreateOptions{
		ID:        id,
		Bundle:    stateDir,
		LogPath:   conmonLog,
		Terminal:  cfg.GetTty(),
		Stdin:     cfg.GetStdin(),
		StdinOnce: cfg.GetStdinOnce(),
		// conmon counts toward its pod's cgroup, as with CRI-O's default.
		ConmonCgroup: filepath.Join(sbRec.CgroupParent, "conmon-"+id),
	})
	if err != nil {
		return "", fmt.Errorf("container %s: %w", id, err)
	}
	undo.push("runtime delete", func(ctx context.Context) error { return rt.Delete(ctx, id) })
	if err := ctx.Err(); err != nil {
		// The caller gave up: unwind rather than leave a container it
		// does not know of holding its name.
		return "", fmt.Errorf("container %s: %w", id, err)
	}
	c := &Container{rec: rec, config: cfg}
	if err := c.update(m.o.Store, func(r *ContainerRecord) error { r.Pid = pid; return nil }); err != nil {
		return "", err
	}
	m.mu.Lock()
	m.containers[id] = c
	m.mu.Unlock()
	m.lxcfsCreated(id, lxcfsGen, lxcfsDir != "")
	klog.InfoS("Container created", "id", id, "sandbox", sbRec.ID, "name", cfg.GetMetadata().GetName(), "steps", undo.timings())
	m.emitContainer(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, c)
	return id, nil
}

// containerNamespaces maps the CRI NamespaceOption onto paths: POD joins
// the sandbox's namespaces, CONTAINER gets new ones, NODE the host's, and
// TARGET joins another container's PID namespace.
func (m *Manager) containerNamespaces(sb *Sandbox, o *runtimeapi.NamespaceOption) (spec.Namespaces, error) {
	rec := sb.Record()
	targetPID := 0
	if o.GetPid() == runtimeapi.NamespaceMode_TARGET {
		t, err := m.Container(o.GetTargetId())
		if err != nil {
			return spec.Namespaces{}, fmt.Errorf("%w: config.linux.security_context.namespace_options.target_id: %v", ErrNotFound, err)
		}
		tr := t.Record()
		if tr.State != runtimeapi.ContainerState_CONTAINER_RUNNING || tr.Pid == 0 {
			return spec.Namespaces{}, fmt.Errorf("%w: namespace target container %s is not running", ErrFailedPrecondion, tr.ID)
		}
		targetPID = tr.Pid
	}
	n, err := spec.PodNamespaces(o, rec.PausePid, targetPID, rec.NetNS, sandboxUserNS(sb))
	if err != nil {
		return n, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return n, nil
}

func validateContainerConfig(cfg *runtimeapi.ContainerConfig) error {
	switch {
	case cfg == nil:
		return fmt.Errorf("%w: config is required", ErrInvalid)
	case cfg.GetMetadata() == nil || cfg.GetMetadata().GetName() == "":
		return fmt.Errorf("%w: config.metadata.name is required", ErrInvalid)
	case cfg.GetImage() == nil || cfg.GetImage().GetImage() == "":
		return fmt.Errorf("%w: config.image.image is required", ErrInvalid)
	}
	if p := cfg.GetLogPath(); p != "" && (filepath.IsAbs(p) || strings.Contains(p, "..")) {
		return fmt.Errorf("%w: config.log_path %q must be relative to the sandbox log_directory", ErrInvalid, p)
	}
	return nil
}

// mountOverlay mounts the image layers (top first) under a writable upper.
func mountOverlay(target string, lowerDirs []string, upper, work string) error {
	if len(lowerDirs) == 0 {
		return fmt.Errorf("image has no layers")
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lowerDirs, ":"), upper, work)
	if len(opts) >= unix.Getpagesize() {
		return fmt.Errorf("overlay options for %d layers exceed one page", len(lowerDirs))
	}
	return unix.Mount("overlay", target, "overlay", 0, opts)
}
