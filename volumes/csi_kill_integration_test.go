package volumes

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"peapod/volumes/csiplugin"
)

// The child half of TestIntegrationCSIKill9MidPublish: a volume manager in
// a process of its own (the agent), set up from the environment, sets the
// pod up and is killed with -9 by the parent while the driver publishes.
const (
	envKillChild  = "PEAPOD_CSI_KILL_CHILD"
	envKillRoot   = "PEAPOD_CSI_KILL_ROOT"
	envKillRegDir = "PEAPOD_CSI_KILL_REGDIR"
	envKillHandle = "PEAPOD_CSI_KILL_HANDLE"
)

// TestIntegrationCSIKill9MidPublish: the agent is killed with -9 while the
// driver's NodePublishVolume runs (the driver has mounted the target, the
// agent never got the answer); the restarted manager finishes the pod's
// setup on the same volume — one stage mount, one publish mount, one loop
// device, nothing mounted twice — and its teardown leaves nothing: no
// mount, no loop device, no record.
//
// How the kill lands mid-publish every time: the child's driver socket is
// a proxy in this process that forwards every call to the real
// peapod-csi-loop but, for the first NodePublishVolume, holds the answer
// after the driver made the mount.
func TestIntegrationCSIKill9MidPublish(t *testing.T) {
	if os.Getenv(envKillChild) != "" {
		killChild(t)
		return
	}
	ce := newCSIEnv(t)
	ce.startDriver(t)
	ce.waitRegistered(t, true)
	handle := ce.createVolume(t, "pv-csi-kill", 64<<20)

	proxyDir, err := os.MkdirTemp("", "pcsik")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(proxyDir) })
	p := startHoldingProxy(t, ce.endpoint, filepath.Join(proxyDir, "proxy-reg.sock"))

	child := exec.Command(os.Args[0], "-test.run", "^TestIntegrationCSIKill9MidPublish$", "-test.v")
	child.Env = append(os.Environ(), envKillChild+"=1", envKillRoot+"="+ce.root, envKillRegDir+"="+proxyDir, envKillHandle+"="+handle)
	out, err := os.Create(filepath.Join(ce.root, "child.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	child.Stdout, child.Stderr = out, out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	exited := make(chan struct{})
	go func() { waited <- child.Wait(); close(exited) }()
	t.Cleanup(func() {
		child.Process.Kill()
		<-exited
	})
	select {
	case <-p.published:
	case err := <-waited:
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("the agent's process ended before publishing: %v\n%s", err, b)
	case <-time.After(2 * time.Minute):
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("no NodePublishVolume within 2 min\n%s", b)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err == nil || err.Error() != "signal: killed" {
		t.Fatalf("the agent's process: %v, want killed", err)
	}
	p.release()
	if testing.Verbose() {
		b, _ := os.ReadFile(out.Name())
		t.Logf("the killed agent's log:\n%s", b)
	}

	pod := claimPod("u-kill")
	objs := csiObjs(handle)
	target := filepath.Join(ce.opts.PodsDir, "u-kill/volumes/kubernetes.io~csi/pv-csi/mount")
	if mountCount(t, target) != 1 {
		t.Fatalf("the driver's publish mount is not there after the kill: %d mounts on %s", mountCount(t, target), target)
	}

	m := ce.manager(t)
	ctx := context.Background()
	mounts, err := m.SetupPod(ctx, pod, objs)
	if err != nil {
		t.Fatalf("setup after the agent's kill -9 mid-publish: %v", err)
	}
	data := mountFor(t, mounts, "db", "/data")
	staging := m.csiStagingPath(csiLoopDriver, handle)
	if data.HostPath != target || mountCount(t, target) != 1 || mountCount(t, staging) != 1 {
		t.Fatalf("after the restart: %s has %d mounts, staging %d (want 1 and 1)", target, mountCount(t, target), mountCount(t, staging))
	}
	if l := strings.TrimSpace(losetupJ(t, ce.image(handle))); l == "" || strings.Contains(l, "\n") {
		t.Fatalf("losetup -j: %q, want one device", l)
	}
	if err := os.WriteFile(filepath.Join(data.HostPath, "after-kill"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := m.TeardownPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if l := losetupJ(t, ce.image(handle)); l != "" {
		t.Fatalf("still attached after teardown: %s", l)
	}
	if ms, _ := mountsBeneath(ce.root); len(ms) != 0 {
		t.Fatalf("mounts left: %v", ms)
	}
	if ents, _ := os.ReadDir(filepath.Join(ce.opts.StateDir, "csi")); len(ents) != 0 {
		t.Fatalf("CSI records left: %v", ents)
	}
}

// killChild is the agent's process: the manager as newEnv and newCSIEnv
// make it, on the parent's dirs, with the proxy's registration dir.
func killChild(t *testing.T) {
	root := os.Getenv(envKillRoot)
	reg := csiplugin.New(os.Getenv(envKillRegDir))
	go reg.Run(context.Background())
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := reg.Get(csiLoopDriver); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the driver never registered through the proxy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, err := New(Options{
		PodsDir:        filepath.Join(root, "pods"),
		PluginDir:      filepath.Join(root, "plugins"),
		GlobalMountDir: filepath.Join(root, "global"),
		StateDir:       filepath.Join(root, "state"),
		CSIDrivers:     reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.SetupPod(context.Background(), claimPod("u-kill"), csiObjs(os.Getenv(envKillHandle)))
	t.Fatalf("SetupPod returned (%v): the parent should have killed this process mid-publish", err)
}

// holdingProxy serves the registration and CSI services on one socket and
// forwards each call to the real driver, holding the answer of the first
// NodePublishVolume (made by the driver) until release.
type holdingProxy struct {
	csi.UnimplementedNodeServer
	csi.UnimplementedControllerServer
	registerapi.UnimplementedRegistrationServer
	node       csi.NodeClient
	controller csi.ControllerClient

	once      sync.Once
	published chan struct{}
	held      chan struct{}
}

func startHoldingProxy(t *testing.T, endpoint, sock string) *holdingProxy {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &holdingProxy{node: csi.NewNodeClient(conn), controller: csi.NewControllerClient(conn),
		published: make(chan struct{}), held: make(chan struct{})}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterNodeServer(srv, p)
	csi.RegisterControllerServer(srv, p)
	registerapi.RegisterRegistrationServer(srv, p)
	go srv.Serve(lis)
	t.Cleanup(func() { p.release(); srv.Stop() })
	return p
}

func (p *holdingProxy) release() {
	select {
	case <-p.held:
	default:
		close(p.held)
	}
}

func (p *holdingProxy) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: csiLoopDriver, SupportedVersions: []string{"v1.9.0"}}, nil
}

func (p *holdingProxy) NotifyRegistrationStatus(context.Context, *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	return &registerapi.RegistrationStatusResponse{}, nil
}

func (p *holdingProxy) NodeGetInfo(ctx context.Context, r *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return p.node.NodeGetInfo(ctx, r)
}

func (p *holdingProxy) NodeGetCapabilities(ctx context.Context, r *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return p.node.NodeGetCapabilities(ctx, r)
}

func (p *holdingProxy) NodeStageVolume(ctx context.Context, r *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	return p.node.NodeStageVolume(ctx, r)
}

func (p *holdingProxy) NodeUnstageVolume(ctx context.Context, r *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	return p.node.NodeUnstageVolume(ctx, r)
}

func (p *holdingProxy) NodePublishVolume(ctx context.Context, r *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	resp, err := p.node.NodePublishVolume(ctx, r)
	first := false
	p.once.Do(func() { first = true })
	if first {
		close(p.published)
		<-p.held // the caller is killed meanwhile
	}
	return resp, err
}

func (p *holdingProxy) NodeUnpublishVolume(ctx context.Context, r *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	return p.node.NodeUnpublishVolume(ctx, r)
}

func (p *holdingProxy) NodeGetVolumeStats(ctx context.Context, r *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	return p.node.NodeGetVolumeStats(ctx, r)
}

func (p *holdingProxy) ControllerGetCapabilities(ctx context.Context, r *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return p.controller.ControllerGetCapabilities(ctx, r)
}

func (p *holdingProxy) ControllerPublishVolume(ctx context.Context, r *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	return p.controller.ControllerPublishVolume(ctx, r)
}

func (p *holdingProxy) ControllerUnpublishVolume(ctx context.Context, r *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	return p.controller.ControllerUnpublishVolume(ctx, r)
}
