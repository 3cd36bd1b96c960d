// Package csiplugin is the agent's plugin watcher for CSI drivers: the
// kubelet's pluginmanager (pluginwatcher, reconciler, the CSI handler's
// RegisterPlugin) cut down to what peapod needs.
//
// A driver (or its node-driver-registrar) puts a registration socket in
// the plugins_registry dir (or a subdirectory). The Registry notices it (fsnotify, and a
// rescan each second that also retries failures), asks GetInfo, checks
// the answer (type CSIPlugin, a CSI 1.x version), connects to the
// driver's endpoint, asks NodeGetInfo, NodeGetCapabilities and
// ControllerGetCapabilities, and reports the outcome to the driver with
// NotifyRegistrationStatus. A socket that disappears deregisters its
// driver; one that is replaced (a new inode: the driver restarted)
// registers again.
//
//	              socket appears / replaced           socket removed
//	(absent) ─────────────────────────────► REGISTERED ───────────────► (absent)
//	    ▲  GetInfo, connect, NodeGetInfo…
//	    └── failure: FAILED, retried after 500ms doubling to 30s while the
//	        socket is there (NotifyRegistrationStatus(false) when GetInfo answered)
package csiplugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// NotRegisteredError is what Get answers for a driver that is not
// registered (yet, or any more).
type NotRegisteredError struct {
	Name, Dir string
	// Err is the last registration failure of a socket that named this
	// driver, if any.
	Err error
}

func (e *NotRegisteredError) Error() string {
	msg := fmt.Sprintf("CSI driver %s not registered (no registration socket for it in %s)", e.Name, e.Dir)
	if e.Err != nil {
		msg = fmt.Sprintf("CSI driver %s not registered: %v", e.Name, e.Err)
	}
	return msg
}

// IsNotRegistered reports whether err says a driver is not registered.
func IsNotRegistered(err error) bool {
	var nr *NotRegisteredError
	return errors.As(err, &nr)
}

var (
	rescanPeriod    = time.Second
	initialRetry    = 500 * time.Millisecond
	maxRetry        = 30 * time.Second
	registerTimeout = 10 * time.Second
)

// Registry holds the registered CSI drivers of one plugins_registry dir.
type Registry struct {
	dir string

	mu      sync.Mutex
	drivers map[string]*Driver // by name
	failed  map[string]error   // by name: the last registration failure
	subs    []func(name string, registered bool)

	// sockets is touched by the Run goroutine only.
	sockets map[string]*sockState
}

type sockState struct {
	inode uint64
	name  string // the driver it registered (or named in GetInfo)
	ok    bool
	next  time.Time
	delay time.Duration
}

// New returns a Registry for dir; Run watches it.
func New(dir string) *Registry {
	return &Registry{dir: dir, drivers: map[string]*Driver{}, failed: map[string]error{}, sockets: map[string]*sockState{}}
}

// Dir is the watched plugins_registry dir.
func (r *Registry) Dir() string { return r.dir }

// Subscribe calls fn (from the watcher goroutine, no lock held) after a
// driver registered or went away.
func (r *Registry) Subscribe(fn func(name string, registered bool)) {
	r.mu.Lock()
	r.subs = append(r.subs, fn)
	r.mu.Unlock()
}

// Get returns the registered driver name, or a *NotRegisteredError.
func (r *Registry) Get(name string) (*Driver, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.drivers[name]; d != nil {
		return d, nil
	}
	return nil, &NotRegisteredError{Name: name, Dir: r.dir, Err: r.failed[name]}
}

// Names lists the registered drivers, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.drivers))
	for n := range r.drivers {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Run watches the dir until ctx ends, then closes every driver connection.
func (r *Registry) Run(ctx context.Context) error {
	if err := os.MkdirAll(r.dir, 0o750); err != nil {
		return fmt.Errorf("plugins registry dir: %w", err)
	}
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w, err := fsnotify.NewWatcher(); err != nil {
		klog.ErrorS(err, "fsnotify unavailable; polling the plugins registry dir", "dir", r.dir)
	} else {
		defer w.Close()
		if err := w.Add(r.dir); err != nil {
			klog.ErrorS(err, "fsnotify watch failed; polling the plugins registry dir", "dir", r.dir)
		} else {
			events, errs = w.Events, w.Errors
		}
	}
	klog.InfoS("Watching for CSI plugin registrations", "dir", r.dir)
	t := time.NewTicker(rescanPeriod)
	defer t.Stop()
	defer r.closeAll()
	for {
		r.sync(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-events:
		case err := <-errs:
			klog.ErrorS(err, "fsnotify", "dir", r.dir)
		case <-t.C:
		}
	}
}

// sync makes the registrations follow the sockets in the dir and, as the
// kubelet's plugin watcher walks it, its subdirectories (symlinks are not
// followed; fsnotify watches the top only, the rescan finds the rest).
func (r *Registry) sync(ctx context.Context) {
	seen := map[string]bool{}
	var socks []string
	err := filepath.WalkDir(r.dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			if path == r.dir {
				return err
			}
			return nil // gone meanwhile, or unreadable: the next rescan
		}
		// The kubelet ignores dot files and dirs; only sockets register.
		if path != r.dir && strings.HasPrefix(e.Name(), ".") {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if e.Type()&os.ModeSocket != 0 {
			socks = append(socks, path)
		}
		return nil
	})
	if err != nil {
		klog.ErrorS(err, "read plugins registry dir", "dir", r.dir)
		return
	}
	for _, path := range socks {
		st, err := os.Stat(path)
		if err != nil {
			continue
		}
		seen[path] = true
		ino := st.Sys().(*syscall.Stat_t).Ino
		s := r.sockets[path]
		if s != nil && s.inode == ino && (s.ok || time.Now().Before(s.next)) {
			continue
		}
		if s == nil || s.inode != ino {
			s = &sockState{inode: ino, name: s.nameOr()}
			r.sockets[path] = s
		}
		r.register(ctx, path, s)
	}
	for path, s := range r.sockets {
		if !seen[path] {
			delete(r.sockets, path)
			if s.ok {
				r.deregister(s.name, path)
			} else if s.name != "" {
				r.mu.Lock()
				delete(r.failed, s.name)
				r.mu.Unlock()
			}
		}
	}
}

func (s *sockState) nameOr() string {
	if s == nil {
		return ""
	}
	return s.name
}

// register runs the registration of one socket and records the outcome.
func (r *Registry) register(ctx context.Context, path string, s *sockState) {
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	d, name, err := r.registerSocket(ctx, path)
	if name != "" {
		s.name = name
	}
	if err != nil {
		if s.delay == 0 {
			s.delay = initialRetry
		} else if s.delay *= 2; s.delay > maxRetry {
			s.delay = maxRetry
		}
		s.ok, s.next = false, time.Now().Add(s.delay)
		klog.ErrorS(err, "CSI plugin registration failed", "socket", path, "driver", s.name, "retryIn", s.delay)
		if s.name != "" {
			r.mu.Lock()
			r.failed[s.name] = err
			r.mu.Unlock()
		}
		return
	}
	s.ok, s.delay = true, 0
	r.mu.Lock()
	old := r.drivers[name]
	d.regSock = path
	r.drivers[name] = d
	delete(r.failed, name)
	subs := append([]func(string, bool){}, r.subs...)
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	klog.InfoS("Registered CSI driver", "driver", name, "endpoint", d.Endpoint, "nodeID", d.NodeID,
		"stageUnstage", d.StageUnstage, "volumeStats", d.VolumeStats, "controllerPublish", d.ControllerPublish)
	for _, fn := range subs {
		fn(name, true)
	}
}

// registerSocket: GetInfo, validate, connect and probe the endpoint, then
// NotifyRegistrationStatus. It returns the driver name as soon as GetInfo
// told it.
func (r *Registry) registerSocket(ctx context.Context, path string) (*Driver, string, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, "", err
	}
	defer conn.Close()
	rc := registerapi.NewRegistrationClient(conn)
	info, err := rc.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		return nil, "", fmt.Errorf("GetInfo: %w", err)
	}
	name := info.GetName()
	d, err := r.validateAndConnect(ctx, path, info)
	if _, nerr := rc.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: err == nil, Error: errString(err)}); nerr != nil {
		if err == nil {
			// The kubelet does not keep a plugin it could not tell.
			d.Close()
			err = fmt.Errorf("NotifyRegistrationStatus: %w", nerr)
		} else {
			klog.ErrorS(nerr, "NotifyRegistrationStatus", "socket", path)
		}
	}
	if err != nil {
		return nil, name, err
	}
	return d, name, nil
}

func (r *Registry) validateAndConnect(ctx context.Context, path string, info *registerapi.PluginInfo) (*Driver, error) {
	if info.GetType() != registerapi.CSIPlugin {
		return nil, fmt.Errorf("plugin type %q: only %s plugins are supported", info.GetType(), registerapi.CSIPlugin)
	}
	if info.GetName() == "" {
		return nil, errors.New("GetInfo: empty plugin name")
	}
	if !supportedVersion(info.GetSupportedVersions()) {
		return nil, fmt.Errorf("driver %s: supported versions %q: none is a CSI 1.x version", info.GetName(), info.GetSupportedVersions())
	}
	ep, err := endpointPath(info.GetEndpoint(), path)
	if err != nil {
		return nil, fmt.Errorf("driver %s: %w", info.GetName(), err)
	}
	return connect(ctx, info.GetName(), ep)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// deregister drops name when its registration came from socket path (a
// newer socket may have replaced it meanwhile).
func (r *Registry) deregister(name, path string) {
	r.mu.Lock()
	d := r.drivers[name]
	if d == nil || d.regSock != path {
		r.mu.Unlock()
		return
	}
	delete(r.drivers, name)
	subs := append([]func(string, bool){}, r.subs...)
	r.mu.Unlock()
	d.Close()
	klog.InfoS("Deregistered CSI driver: its registration socket is gone", "driver", name, "socket", path)
	for _, fn := range subs {
		fn(name, false)
	}
}

func (r *Registry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, d := range r.drivers {
		d.Close()
		delete(r.drivers, n)
	}
}
