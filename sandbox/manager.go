package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"

	"peapod/image"
	"peapod/internal/cgroupfs"
	"peapod/oci"
	"peapod/sandbox/network"
	"peapod/store"
)

// Errors the cri layer maps to gRPC codes.
var (
	ErrNotFound         = errors.New("not found")
	ErrAlreadyExists    = errors.New("already exists")
	ErrInvalid          = errors.New("invalid argument")
	ErrFailedPrecondion = errors.New("failed precondition")
	// ErrUnimplemented: a valid request for a CRI feature peapod lacks.
	ErrUnimplemented = errors.New("unimplemented")
)

// OCIRuntime is the seam to one OCI runtime under conmon (peapod/oci).
type OCIRuntime interface {
	Check(ctx context.Context) error
	Create(ctx context.Context, o oci.CreateOptions) (int, error)
	Start(ctx context.Context, id string) error
	Kill(ctx context.Context, id string, sig syscall.Signal) error
	Stop(ctx context.Context, id string, timeout time.Duration, sig syscall.Signal) error
	Delete(ctx context.Context, id string) error
	State(ctx context.Context, id string) (*oci.State, error)
	ExitRecorded(id string) (*oci.State, bool, error)
	Watch(id string) error
	ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration, maxOutput int) ([]byte, []byte, int32, error)
	UpdateResources(ctx context.Context, id string, res *specs.LinuxResources) error
	ReopenLog(ctx context.Context, id string) error
	Exec(ctx context.Context, id string, cmd []string, tty bool, stdin io.Reader, stdout, stderr io.Writer, resize <-chan oci.Size) (int32, error)
	Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan oci.Size) error
}

// Network is the seam to CNI and network namespaces (peapod/sandbox/network).
type Network interface {
	NewNetNS(name string) (string, error)
	// NetNSPath is where NewNetNS(name) pins the namespace.
	NetNSPath(name string) string
	RemoveNetNS(path string) error
	Setup(ctx context.Context, p network.Pod) (*network.Result, error)
	Teardown(ctx context.Context, p network.Pod) error
}

// Images hands out image layers for container rootfs, and images
// mounted read-only as volumes (peapod/image).
type Images interface {
	Acquire(ctx context.Context, holder, ref string) ([]string, *image.Image, error)
	Release(ctx context.Context, holder string) error
	MountVolume(ctx context.Context, container, ref string) (*image.Volume, error)
	ReleaseVolumes(ctx context.Context, container string) error
	ReconcileVolumes(ctx context.Context, alive func(container string) bool) error
}

// Options wire a Manager.
type Options struct {
	Root  string // persistent: <root>/containers/<id>/{upper,work}
	State string // runtime: <state>/sandboxes/<id>, <state>/containers/<id>
	Store *store.Store
	// Runtimes by handler name; DefaultRuntime names the one for "".
	Runtimes       map[string]OCIRuntime
	DefaultRuntime string
	Network        Network
	Images         Images
	// PausePath is the pause binary peapod starts in each sandbox's
	// namespaces (sandbox/infra); PauseArgs is its argv after the path.
	PausePath string
	PauseArgs []string
	// DefaultCgroupParent is used when a pod names none.
	DefaultCgroupParent string
	// LXCFS puts lxcfs's /proc files into containers (container_lxcfs.go).
	LXCFS LXCFSOptions
}

// Manager owns every sandbox and container of this node.
type Manager struct {
	o Options

	// mu guards the maps only; lifecycle work runs under per-object locks.
	mu         sync.RWMutex
	sandboxes  map[string]*Sandbox
	containers map[string]*Container
	names      map[string]string // reserved name -> id

	minOOMScoreAdj int
	// Host cgroup facts, read once: what the OCI runtime can set here.
	noHugetlb        bool
	noSwapAccounting bool
	oomWarn          sync.Once

	// stats caches usage figures for the CRI stats calls and metrics (stats.go).
	stats *statsCache
	// podStarts records pod start durations (pod_start.go).
	podStarts podStarts
	// events passes lifecycle events to cri/'s stream (events.go).
	events eventHook
	// lxcfs keeps containers on the live lxcfs (container_lxcfs.go); nil
	// when containers.lxcfs is off.
	lxcfs *lxcfsManager
}

// New loads the records and reconciles them with the kernel (restore.go)
// before returning, so no RPC sees half-known state.
func New(ctx context.Context, o Options) (*Manager, error) {
	if o.DefaultCgroupParent == "" {
		o.DefaultCgroupParent = "/peapod"
	}
	if _, ok := o.Runtimes[o.DefaultRuntime]; !ok {
		return nil, fmt.Errorf("default runtime %q is not configured", o.DefaultRuntime)
	}
	for _, d := range []string{filepath.Join(o.Root, "containers"), filepath.Join(o.State, "sandboxes"), filepath.Join(o.State, "containers")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	m := &Manager{
		o:          o,
		sandboxes:  map[string]*Sandbox{},
		containers: map[string]*Container{},
		names:      map[string]string{},
		stats:      newStatsCache(),
	}
	m.minOOMScoreAdj = ownOOMScoreAdj()
	m.noHugetlb = !cgroupfs.HasController("hugetlb")
	m.noSwapAccounting = noSwapAccounting()
	m.lxcfs = newLXCFSManager(o.LXCFS)
	if err := m.makePauseRoot(); err != nil {
		return nil, fmt.Errorf("pause root: %w", err)
	}
	if err := m.restore(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func ownOOMScoreAdj() int {
	data, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0
	}
	var v int
	fmt.Sscanf(strings.TrimSpace(string(data)), "%d", &v)
	return v
}

func newID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// reserveName claims name for id; AlreadyExists names the holder, as
// containerd does, so the kubelet can clean up.
func (m *Manager) reserveName(name, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if holder, ok := m.names[name]; ok && holder != id {
		return fmt.Errorf("%w: name %q is reserved for %q", ErrAlreadyExists, name, holder)
	}
	m.names[name] = id
	return nil
}

func (m *Manager) releaseName(name, id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.names[name] == id {
		delete(m.names, name)
	}
}

// runtime returns the OCI runtime for a handler name.
func (m *Manager) runtime(handler string) (OCIRuntime, error) {
	if handler == "" {
		handler = m.o.DefaultRuntime
	}
	rt, ok := m.o.Runtimes[handler]
	if !ok {
		names := make([]string, 0, len(m.o.Runtimes))
		for n := range m.o.Runtimes {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%w: runtime_handler %q is not configured (have %s)", ErrInvalid, handler, strings.Join(names, ", "))
	}
	return rt, nil
}

// Sandbox finds a sandbox by full id or unique prefix.
func (m *Manager) Sandbox(id string) (*Sandbox, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if s, ok := m.sandboxes[id]; ok {
		return s, nil
	}
	var found *Sandbox
	if id != "" {
		for full, s := range m.sandboxes {
			if strings.HasPrefix(full, id) {
				if found != nil {
					return nil, fmt.Errorf("%w: sandbox id prefix %q is ambiguous", ErrInvalid, id)
				}
				found = s
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: pod sandbox %q", ErrNotFound, id)
	}
	return found, nil
}

// Container finds a container by full id or unique prefix.
func (m *Manager) Container(id string) (*Container, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if c, ok := m.containers[id]; ok {
		return c, nil
	}
	var found *Container
	if id != "" {
		for full, c := range m.containers {
			if strings.HasPrefix(full, id) {
				if found != nil {
					return nil, fmt.Errorf("%w: container id prefix %q is ambiguous", ErrInvalid, id)
				}
				found = c
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: container %q", ErrNotFound, id)
	}
	return found, nil
}

// Sandboxes lists every sandbox.
func (m *Manager) Sandboxes() []*Sandbox {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Sandbox, 0, len(m.sandboxes))
	for _, s := range m.sandboxes {
		out = append(out, s)
	}
	return out
}

// Containers lists every container.
func (m *Manager) Containers() []*Container {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]*Container, 0, len(m.containers))
	for _, c := range m.containers {
		out = append(out, c)
	}
	return out
}

func (m *Manager) containersOf(sandboxID string) []*Container {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []*Container
	for _, c := range m.containers {
		if c.rec.SandboxID == sandboxID {
			out = append(out, c)
		}
	}
	return out
}

func (m *Manager) sandboxStateDir(id string) string {
	return filepath.Join(m.o.State, "sandboxes", id)
}

func (m *Manager) containerStateDir(id string) string {
	return filepath.Join(m.o.State, "containers", id)
}

func (m *Manager) containerRootDir(id string) string {
	return filepath.Join(m.o.Root, "containers", id)
}

// cleanupCtx is the context undo steps run on: never the request's, which
// may be the very thing that was cancelled.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

// runtimeCtx is the context of a runtime call that must not be cut short:
// a `runtime create` killed mid-way leaves a `runc init` with no state that
// no delete can find. It keeps the caller's values but not its
// cancellation; the caller checks its own ctx afterwards and unwinds.
func runtimeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
}

// undoStack runs recorded undo steps in reverse on failure.
type undoStack struct {
	start time.Time
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func(ctx context.Context) error
	at   time.Time // when the step that this undoes had finished
}

func (u *undoStack) push(what string, fn func(ctx context.Context) error) {
	if u.start.IsZero() {
		u.start = time.Now()
	}
	u.steps = append(u.steps, undoStep{what, fn, time.Now()})
}

// timings says how long each undoable step took, for the log: a slow pod
// start names its slow step.
func (u *undoStack) timings() string {
	var b strings.Builder
	prev := u.start
	for _, s := range u.steps {
		fmt.Fprintf(&b, "%s=%s ", s.what, s.at.Sub(prev).Round(time.Millisecond/10))
		prev = s.at
	}
	return strings.TrimSpace(b.String())
}

func (u *undoStack) run(id string) {
	ctx, cancel := cleanupCtx()
	defer cancel()
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i].fn(ctx); err != nil {
			klog.ErrorS(err, "Rollback step failed", "id", id, "step", u.steps[i].what)
		}
	}
}

// noSwapAccounting: a v1 memory hierarchy without memory.memsw.* (swap
// accounting off in the kernel) cannot take a swap limit.
func noSwapAccounting() bool {
	if !cgroupfs.HasController("memory") {
		return false
	}
	if _, err := os.Stat(filepath.Join(cgroupfs.Root, "cgroup.controllers")); err == nil {
		return false // v2: memory.swap.max is there whenever memory is
	}
	_, err := os.Stat(filepath.Join(cgroupfs.Root, "memory", "memory.memsw.limit_in_bytes"))
	return err != nil
}
