package csiplugin

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"peapod/csi/loop"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shortDir: unix socket paths must stay under 108 bytes, which t.TempDir
// under a long test name may not.
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "csireg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// The real driver (in process): its registration socket registers it
// with what NodeGetInfo and the capabilities say; its socket going away
// deregisters it; a new one registers it again; subscribers hear both.
func TestRegistryFollowsSockets(t *testing.T) {
	dir := shortDir(t)
	regDir := filepath.Join(dir, "registry")
	r := New(regDir)
	var mu sync.Mutex
	var events []string
	r.Subscribe(func(name string, registered bool) {
		mu.Lock()
		defer mu.Unlock()
		if registered {
			events = append(events, "+"+name)
		} else {
			events = append(events, "-"+name)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	if _, err := r.Get(loop.DriverName); !IsNotRegistered(err) {
		t.Fatalf("Get before registration: %v", err)
	}
	serve := func() (stop func()) {
		d, err := loop.New(loop.Options{NodeID: "node-a", Root: filepath.Join(dir, "disks"), MaxVolumesPerNode: 7})
		if err != nil {
			t.Fatal(err)
		}
		dctx, dcancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Serve(dctx, "unix://"+filepath.Join(dir, "csi.sock"), regDir) }()
		return func() {
			dcancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	stop := serve()
	waitFor(t, "registration", func() bool { _, err := r.Get(loop.DriverName); return err == nil })
	d, _ := r.Get(loop.DriverName)
	if d.NodeID != "node-a" || d.MaxVolumes != 7 || !d.StageUnstage || !d.VolumeStats || !d.SingleNodeMultiWriter || !d.ControllerPublish || !d.ExpandVolume ||
		d.Endpoint != filepath.Join(dir, "csi.sock") || d.Topology[loop.TopologyKey] != "node-a" {
		t.Fatalf("driver: %+v", d)
	}
	if n := r.Names(); len(n) != 1 || n[0] != loop.DriverName {
		t.Fatalf("Names: %v", n)
	}
	stop() // removes both sockets
	waitFor(t, "deregistration", func() bool { _, err := r.Get(loop.DriverName); return IsNotRegistered(err) })
	stop = serve()
	defer stop()
	waitFor(t, "registration again", func() bool { _, err := r.Get(loop.DriverName); return err == nil })
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 3 || events[0] != "+"+loop.DriverName || events[1] != "-"+loop.DriverName || events[2] != "+"+loop.DriverName {
		t.Fatalf("events: %v", events)
	}
}

// As the kubelet's plugin watcher, sockets in subdirectories register
// too, and those under a dot-dir do not.
func TestRegistrySubdirs(t *testing.T) {
	dir := shortDir(t)
	regDir := filepath.Join(dir, "registry")
	r := New(regDir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	serve := func(sub, node string) (stop func()) {
		d, err := loop.New(loop.Options{NodeID: node, Root: filepath.Join(dir, "disks-"+node)})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(regDir, sub), 0o750); err != nil {
			t.Fatal(err)
		}
		dctx, dcancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Serve(dctx, "unix://"+filepath.Join(dir, node+".sock"), filepath.Join(regDir, sub)) }()
		return func() {
			dcancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	stop := serve(".hidden", "hidden-node")
	time.Sleep(2 * rescanPeriod)
	if _, err := r.Get(loop.DriverName); !IsNotRegistered(err) {
		t.Fatalf("a socket under a dot-dir registered: %v", err)
	}
	stop()
	stop = serve("vendor/a", "sub-node")
	defer stop()
	waitFor(t, "registration from a subdirectory", func() bool { _, err := r.Get(loop.DriverName); return err == nil })
	if d, _ := r.Get(loop.DriverName); d.NodeID != "sub-node" {
		t.Fatalf("driver %+v, want node id sub-node", d)
	}
}

// fakeRegistration serves a registration socket with a given GetInfo and
// records what the watcher told it.
type fakeRegistration struct {
	registerapi.UnimplementedRegistrationServer
	info *registerapi.PluginInfo
	mu   sync.Mutex
	got  []*registerapi.RegistrationStatus
}

func (f *fakeRegistration) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return f.info, nil
}

func (f *fakeRegistration) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	f.mu.Lock()
	f.got = append(f.got, s)
	f.mu.Unlock()
	return &registerapi.RegistrationStatusResponse{}, nil
}

func (f *fakeRegistration) statuses() []*registerapi.RegistrationStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*registerapi.RegistrationStatus(nil), f.got...)
}

// A plugin the watcher refuses (wrong type, no CSI 1.x version, a dead
// endpoint) is told so, is not registered, and Get names the reason.
func TestRegistryRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		info *registerapi.PluginInfo
	}{
		{"device plugin", &registerapi.PluginInfo{Type: registerapi.DevicePlugin, Name: "x.example.com", SupportedVersions: []string{"v1beta1"}}},
		{"CSI 0.x", &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: "x.example.com", SupportedVersions: []string{"0.3.0"}}},
		{"dead endpoint", &registerapi.PluginInfo{Type: registerapi.CSIPlugin, Name: "x.example.com", Endpoint: "/nonexistent/csi.sock", SupportedVersions: []string{"1.0.0"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := shortDir(t)
			lis, err := net.Listen("unix", filepath.Join(dir, "x-reg.sock"))
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer()
			f := &fakeRegistration{info: tc.info}
			registerapi.RegisterRegistrationServer(srv, f)
			go srv.Serve(lis)
			defer srv.Stop()
			r := New(dir)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go r.Run(ctx)
			waitFor(t, "NotifyRegistrationStatus", func() bool { return len(f.statuses()) > 0 })
			if s := f.statuses()[0]; s.PluginRegistered || s.Error == "" {
				t.Fatalf("status: %+v", s)
			}
			_, err = r.Get("x.example.com")
			if !IsNotRegistered(err) || err.Error() == "" {
				t.Fatalf("Get: %v", err)
			}
			t.Logf("Get: %v", err)
		})
	}
}

func TestSupportedVersion(t *testing.T) {
	for v, want := range map[string]bool{"1.0.0": true, "v1.2.0": true, "1": true, "0.3.0": false, "10.0.0": false, "": false} {
		if got := supportedVersion([]string{v}); got != want {
			t.Errorf("%q: %t", v, got)
		}
	}
}
