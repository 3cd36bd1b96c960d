package loop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

const (
	// DriverName is the CSI driver name (GetPluginInfo, registration,
	// StorageClass provisioner, PV spec.csi.driver).
	DriverName = "loop.csi.peapod.io"
	// TopologyKey is the topology segment naming the node a disk lives on.
	TopologyKey = "topology.loop.csi.peapod.io/node"
	// DevicePathKey is the publish_context key carrying the loop device.
	DevicePathKey = "devicePath"

	imageSuffix = ".img"
)

// Version is the driver's version (GetPluginInfo); main may set it.
var Version = "v0.1.0"

// Options configure a Driver.
type Options struct {
	// NodeID is this node's id in the CSI sense (the Kubernetes node name).
	NodeID string
	// Root is the directory of the disk files.
	Root string
	// MaxVolumesPerNode caps the attached volumes (NodeGetInfo, and
	// ControllerPublishVolume refuses beyond it); 0 means no cap.
	MaxVolumesPerNode int64
}

// Driver serves the Identity, Controller and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer

	opts  Options
	locks keyedMutex
	// attachMu makes counting the attached volumes and attaching one atomic,
	// so MaxVolumesPerNode holds under concurrent publishes.
	attachMu sync.Mutex
}

// New checks o and makes the root directory.
func New(o Options) (*Driver, error) {
	if o.NodeID == "" {
		return nil, errors.New("node id is required")
	}
	if !filepath.IsAbs(o.Root) {
		return nil, fmt.Errorf("root %q: must be an absolute path", o.Root)
	}
	o.Root = filepath.Clean(o.Root)
	if o.MaxVolumesPerNode < 0 {
		return nil, fmt.Errorf("max volumes per node %d: must not be negative", o.MaxVolumesPerNode)
	}
	// 0700: the disk files hold pods' data.
	if err := os.MkdirAll(o.Root, 0o700); err != nil {
		return nil, fmt.Errorf("root %s: %w", o.Root, err)
	}
	return &Driver{opts: o}, nil
}

// imagePath is the disk file of volume id (checked by checkID first).
func (d *Driver) imagePath(id string) string {
	return filepath.Join(d.opts.Root, id+imageSuffix)
}

// topology is where this driver's volumes are accessible: this node.
func (d *Driver) topology() *csi.Topology {
	return &csi.Topology{Segments: map[string]string{TopologyKey: d.opts.NodeID}}
}

// Serve serves the CSI services on endpoint (unix:///path or a path) and,
// when registrationDir is set, the plugin registration socket there, until
// ctx ends. Both sockets are removed on return.
func (d *Driver) Serve(ctx context.Context, endpoint, registrationDir string) error {
	sock, err := ParseEndpoint(endpoint)
	if err != nil {
		return err
	}
	lis, err := listenUnix(sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	srv := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterControllerServer(srv, d)
	csi.RegisterNodeServer(srv, d)

	var reg *grpc.Server
	if registrationDir != "" {
		regSock := filepath.Join(registrationDir, DriverName+"-reg.sock")
		rlis, err := listenUnix(regSock)
		if err != nil {
			lis.Close()
			return err
		}
		defer os.Remove(regSock)
		reg = grpc.NewServer()
		registerPluginRegistration(reg, sock)
		go func() {
			if err := reg.Serve(rlis); err != nil {
				klog.ErrorS(err, "Registration server stopped", "socket", regSock)
			}
		}()
		klog.InfoS("Serving plugin registration", "socket", regSock)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	klog.InfoS("Serving CSI", "driver", DriverName, "endpoint", sock, "node", d.opts.NodeID, "root", d.opts.Root)
	select {
	case <-ctx.Done():
		if reg != nil {
			reg.Stop()
		}
		srv.GracefulStop()
		return nil
	case err := <-errc:
		if reg != nil {
			reg.Stop()
		}
		return fmt.Errorf("serve %s: %w", sock, err)
	}
}

// ParseEndpoint returns the socket path of a CSI endpoint: unix:///abs/path,
// unix:/abs/path or /abs/path.
func ParseEndpoint(ep string) (string, error) {
	p := ep
	if rest, ok := strings.CutPrefix(ep, "unix://"); ok {
		p = rest
	} else if rest, ok := strings.CutPrefix(ep, "unix:"); ok {
		p = rest
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return "", fmt.Errorf("endpoint %q: want unix:///absolute/clean/path", ep)
	}
	return p, nil
}

// listenUnix listens on path, replacing a stale socket left by a driver that
// died (never any other kind of file).
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return lis, nil
}

// logCalls logs each call's outcome: failures at level 0 (the CO retries
// them, and the reason is what an operator needs), successes at 4.
func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	klog.V(5).InfoS("CSI call", "method", info.FullMethod, "request", req)
	resp, err := h(ctx, req)
	if err != nil {
		klog.InfoS("CSI call failed", "method", info.FullMethod, "code", status.Code(err), "err", err)
	} else {
		klog.V(4).InfoS("CSI call done", "method", info.FullMethod)
	}
	return resp, err
}

// keyedMutex serialises the operations on one volume id; the CO may send
// the same call again while the first is still running (mkfs of a large
// disk), and two stages of one disk must not race.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
