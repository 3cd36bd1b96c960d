package agent

// User namespaces for pods with `hostUsers: false`, as the kubelet's
// pkg/kubelet/userns (userns_manager.go) does them:
//
//   - The node's id range (Options.UserNamespaceIDs, default [65536, 2^32),
//     or the subordinate ids of user "kubelet" through getsubids, see
//     KubeletIDRange) is cut into blocks of 65536 ids. A pod with its own
//     user namespace gets one block for uids and the same for gids, mapped
//     at container id 0: root in the pod is the block's first host id.
//   - The block is written to <StateDir>/pods/<uid>/userns (the kubelet's
//     file name and JSON) before the sandbox asks for it, and every such
//     file is read back when the agent starts, before any pod is synced:
//     a restarted agent hands a running pod the same block and never gives
//     a live pod's block to another.
//   - The block is freed when the pod is gone (removed with its sandboxes,
//     or found with neither a source nor a sandbox by the housekeeping),
//     with its file. A finished pod keeps its block while its stopped
//     sandbox stays (its pause still runs in it until the pod is removed).
//
// Allocation is next-fit: the first free block after the last one handed
// out, wrapping around. The kubelet scans from a random block instead; both
// avoid giving a block that was just freed to the next pod (whose files a
// former pod may have left on a volume); next-fit is also reproducible.
//
//	           allocate (file written)            pod removed / orphan
//	free ───────────────────────────► used ─────────────────────────► free
//	                     agent start: file read ──┘   (file removed)

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"peapod/internal/atomicfile"
)

const (
	// usernsBlock is the ids per pod: the kubelet's default idsPerPod.
	usernsBlock = 65536
	// usernsFile is the per-pod file with the pod's mappings.
	usernsFile = "userns"
	// kubeletUser is whose subordinate ids the kubelet uses for pods.
	kubeletUser = "kubelet"
)

// IDRange is a range of host ids for pod user namespaces: First and
// Length are multiples of 65536, First at least 65536.
type IDRange struct {
	First  uint32
	Length uint32
}

// DefaultUserNamespaceIDs is the kubelet's range when no subordinate ids
// are configured for it: every id from 65536 up.
var DefaultUserNamespaceIDs = IDRange{First: usernsBlock, Length: uint32(1<<32 - uint64(usernsBlock))}

// KubeletIDRange is the range the kubelet uses (its getKubeletMappings):
// when a user "kubelet" exists and getsubids is installed, the single
// subordinate range getsubids reports for it (the same for uids and
// gids); otherwise DefaultUserNamespaceIDs.
func KubeletIDRange() (IDRange, error) {
	if _, err := user.Lookup(kubeletUser); err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return DefaultUserNamespaceIDs, nil
		}
		return IDRange{}, err
	}
	cmd, err := exec.LookPath("getsubids")
	if err != nil {
		return DefaultUserNamespaceIDs, nil
	}
	uids, err := exec.Command(cmd, kubeletUser).Output()
	if err != nil {
		return IDRange{}, fmt.Errorf("getsubids %s: %w", kubeletUser, err)
	}
	gids, err := exec.Command(cmd, "-g", kubeletUser).Output()
	if err != nil {
		return IDRange{}, fmt.Errorf("getsubids -g %s: %w", kubeletUser, err)
	}
	if string(uids) != string(gids) {
		return IDRange{}, fmt.Errorf("the subordinate uids and gids of user %q differ", kubeletUser)
	}
	return parseGetSubIDs(string(uids))
}

// parseGetSubIDs reads getsubids' one line: "0: kubelet 65536 2147483648".
func parseGetSubIDs(out string) (IDRange, error) {
	lines := strings.Split(strings.Trim(out, "\n"), "\n")
	if len(lines) != 1 {
		return IDRange{}, fmt.Errorf("getsubids output %q: want exactly one range", out)
	}
	f := strings.Fields(lines[0])
	if len(f) != 4 {
		return IDRange{}, fmt.Errorf("getsubids output %q: want 4 fields", out)
	}
	first, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil {
		return IDRange{}, fmt.Errorf("getsubids output %q: %w", out, err)
	}
	n, err := strconv.ParseUint(f[3], 10, 32)
	if err != nil {
		return IDRange{}, fmt.Errorf("getsubids output %q: %w", out, err)
	}
	return IDRange{First: uint32(first), Length: uint32(n)}, nil
}

// Check is the kubelet's check of a range: aligned to blocks, not
// mapping ids below 65536 (host root's and the system's), and enough
// blocks for maxPods pods (0: no check).
func (r IDRange) Check(maxPods int) error {
	switch {
	case r.First%usernsBlock != 0:
		return fmt.Errorf("user namespace ids: first id %d is not a multiple of %d", r.First, usernsBlock)
	case r.First < usernsBlock:
		return fmt.Errorf("user namespace ids: first id %d must be at least %d", r.First, usernsBlock)
	case r.Length%usernsBlock != 0:
		return fmt.Errorf("user namespace ids: length %d is not a multiple of %d", r.Length, usernsBlock)
	case uint64(r.First)+uint64(r.Length) > 1<<32:
		return fmt.Errorf("user namespace ids: %d+%d is beyond 2^32", r.First, r.Length)
	case maxPods > 0 && int(r.Length/usernsBlock) < maxPods:
		return fmt.Errorf("user namespace ids: %d ids are not enough for %d pods of %d", r.Length, maxPods, usernsBlock)
	}
	return nil
}

// usernsAllocator hands out the blocks. Its files live in the pod dirs
// of the agent's state dir.
type usernsAllocator struct {
	podDir func(types.UID) string

	mu     sync.Mutex
	first  uint32 // first block, in blocks
	blocks uint32 // blocks in the range
	next   uint32 // where the next search starts, relative to first
	byPod  map[types.UID]uint32
	byIdx  map[uint32]types.UID
}

// usernsMappings is the per-pod file: the kubelet's format.
type usernsMappings struct {
	UIDMappings []idMapping `json:"uidMappings"`
	GIDMappings []idMapping `json:"gidMappings"`
}

type idMapping struct {
	HostID      uint32 `json:"hostId"`
	ContainerID uint32 `json:"containerId"`
	Length      uint32 `json:"length"`
}

// newUsernsAllocator makes the allocator of r and records the blocks of
// the pod dirs below podsDir ("" for none). A file it cannot read or that
// clashes with another is an error, as with the kubelet: a live pod's
// block could otherwise be handed out twice.
func newUsernsAllocator(r IDRange, podsDir string, podDir func(types.UID) string) (*usernsAllocator, error) {
	if err := r.Check(0); err != nil {
		return nil, err
	}
	m := &usernsAllocator{
		podDir: podDir,
		first:  r.First / usernsBlock, blocks: r.Length / usernsBlock,
		byPod: map[types.UID]uint32{}, byIdx: map[uint32]types.UID{},
	}
	if podsDir == "" {
		return m, nil
	}
	entries, err := os.ReadDir(podsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("user namespaces: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		uid := types.UID(e.Name())
		b, err := os.ReadFile(filepath.Join(podDir(uid), usernsFile))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("user namespace of pod %s: %w", uid, err)
		}
		host, err := parseUsernsFile(b)
		if err == nil {
			err = m.record(uid, host)
		}
		if err != nil {
			return nil, fmt.Errorf("user namespace of pod %s (%s): %w", uid, filepath.Join(podDir(uid), usernsFile), err)
		}
		klog.V(2).InfoS("Pod user namespace reloaded", "podUID", uid, "hostID", host)
	}
	return m, nil
}

// parseUsernsFile checks a file is one the agent (or a kubelet) wrote:
// one uid and one identical gid mapping of a block, at container id 0.
func parseUsernsFile(b []byte) (uint32, error) {
	var u usernsMappings
	if err := json.Unmarshal(b, &u); err != nil {
		return 0, fmt.Errorf("invalid mappings file: %w", err)
	}
	if len(u.UIDMappings) != 1 || len(u.GIDMappings) != 1 || u.UIDMappings[0] != u.GIDMappings[0] {
		return 0, errors.New("invalid mappings file: want one uid and one identical gid mapping")
	}
	m := u.UIDMappings[0]
	if m.ContainerID != 0 || m.Length != usernsBlock {
		return 0, fmt.Errorf("invalid mappings file: want container id 0 and length %d, got %d and %d", usernsBlock, m.ContainerID, m.Length)
	}
	return m.HostID, nil
}

// record marks host's block as the pod's.
func (m *usernsAllocator) record(uid types.UID, host uint32) error {
	if host%usernsBlock != 0 {
		return fmt.Errorf("host id %d is not a multiple of %d", host, usernsBlock)
	}
	idx := host/usernsBlock - m.first
	if host/usernsBlock < m.first || idx >= m.blocks {
		return fmt.Errorf("host id %d is outside the node's user namespace ids", host)
	}
	if prev, ok := m.byPod[uid]; ok && prev != idx {
		return fmt.Errorf("pod already has host id %d", (prev+m.first)*usernsBlock)
	}
	if other, ok := m.byIdx[idx]; ok && other != uid {
		return fmt.Errorf("host id %d is already pod %s's", host, other)
	}
	m.byPod[uid], m.byIdx[idx] = idx, uid
	return nil
}

// getOrAllocate is the host id of pod uid's block, allocated (and its
// file written) when it has none.
func (m *usernsAllocator) getOrAllocate(uid types.UID) (uint32, error) {
	if m == nil {
		return 0, errors.New("user namespaces are not set up")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if idx, ok := m.byPod[uid]; ok {
		return (idx + m.first) * usernsBlock, nil
	}
	if uint32(len(m.byIdx)) >= m.blocks {
		return 0, fmt.Errorf("could not find an empty slot to allocate a user namespace: all %d are in use", m.blocks)
	}
	idx := m.next
	for {
		if _, used := m.byIdx[idx]; !used {
			break
		}
		idx = (idx + 1) % m.blocks
	}
	host := (idx + m.first) * usernsBlock
	if err := m.write(uid, host); err != nil {
		return 0, fmt.Errorf("user namespace: %w", err)
	}
	m.byPod[uid], m.byIdx[idx] = idx, uid
	m.next = (idx + 1) % m.blocks
	klog.V(2).InfoS("Pod user namespace allocated", "podUID", uid, "hostID", host)
	return host, nil
}

// write persists the pod's mappings before they are used.
func (m *usernsAllocator) write(uid types.UID, host uint32) error {
	if m.podDir == nil {
		return nil
	}
	dir := m.podDir(uid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	mp := []idMapping{{HostID: host, ContainerID: 0, Length: usernsBlock}}
	b, err := json.Marshal(usernsMappings{UIDMappings: mp, GIDMappings: mp})
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, usernsFile), b, 0o644); err != nil {
		return err
	}
	// The pod dir itself may be new: make its entry durable too.
	if d, err := os.Open(filepath.Dir(dir)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// release frees the pod's block and removes its file.
func (m *usernsAllocator) release(uid types.UID) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	idx, ok := m.byPod[uid]
	if !ok {
		return
	}
	if m.podDir != nil {
		if err := os.Remove(filepath.Join(m.podDir(uid), usernsFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
			klog.ErrorS(err, "Removing the user namespace file of a pod failed", "podUID", uid)
		}
	}
	delete(m.byPod, uid)
	delete(m.byIdx, idx)
	klog.V(2).InfoS("Pod user namespace released", "podUID", uid, "hostID", (idx+m.first)*usernsBlock)
}

// allocated are the pods holding a block.
func (m *usernsAllocator) allocated() []types.UID {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]types.UID, 0, len(m.byPod))
	for uid := range m.byPod {
		out = append(out, uid)
	}
	return out
}

// hostUsersErrors are the API server's checks of `hostUsers: false`
// (validateHostUsers): no host network, PID or IPC namespace with it. The
// kubelet's UserNamespacesHostNetworkSupport gate (alpha, off) would allow
// the host network; peapod's runtime refuses it.
func hostUsersErrors(spec *v1.PodSpec) []string {
	if spec.HostUsers == nil || *spec.HostUsers {
		return nil
	}
	var errs []string
	if spec.HostNetwork {
		errs = append(errs, "spec.hostNetwork: Forbidden: when `hostUsers` is false")
	}
	if spec.HostPID {
		errs = append(errs, "spec.hostPID: Forbidden: when `hostUsers` is false")
	}
	if spec.HostIPC {
		errs = append(errs, "spec.hostIPC: Forbidden: when `hostUsers` is false")
	}
	return errs
}

// podUserNamespace is the CRI userns_options of pod, as the kubelet's
// GetOrCreateUserNamespaceMappings: NODE unless `hostUsers: false`, then
// POD with the pod's block (allocated on first use). checkHandler, when
// set, is the runtime handler of a sandbox about to be made: one that
// does not report user namespaces is refused before any id is allocated.
func (a *Agent) podUserNamespace(ctx context.Context, pod *v1.Pod, checkHandler *string) (*runtimeapi.UserNamespace, error) {
	if pod.Spec.HostUsers == nil || *pod.Spec.HostUsers {
		return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}, nil
	}
	if errs := hostUsersErrors(&pod.Spec); len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	if checkHandler != nil {
		if err := a.handlerSupportsUserns(ctx, *checkHandler); err != nil {
			return nil, err
		}
	}
	host, err := a.userns.getOrAllocate(pod.UID)
	if err != nil {
		return nil, err
	}
	mp := []*runtimeapi.IDMapping{{HostId: host, ContainerId: 0, Length: usernsBlock}}
	gp := []*runtimeapi.IDMapping{{HostId: host, ContainerId: 0, Length: usernsBlock}}
	return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: mp, Gids: gp}, nil
}

// handlersTTL is how long the runtime's handler list is reused (the
// kubelet refreshes its copy every 5 s with the runtime's status).
const handlersTTL = 10 * time.Second

// runtimeHandlers caches the handlers the runtime's Status reports.
type runtimeHandlers struct {
	mu       sync.Mutex
	at       time.Time
	handlers []*runtimeapi.RuntimeHandler
}

// handlerSupportsUserns is the kubelet's HandlerSupportsUserNamespaces
// with its message: the runtime's Status names each handler and whether it
// runs pods with their own user namespace; a runtime that lists no
// handlers (an old one) supports none.
func (a *Agent) handlerSupportsUserns(ctx context.Context, handler string) error {
	hs := &a.handlers
	hs.mu.Lock()
	defer hs.mu.Unlock()
	now := a.clock.Now()
	if hs.at.IsZero() || now.Sub(hs.at) > handlersTTL {
		resp, err := a.o.Runtime.Status(ctx, false)
		if err != nil {
			return fmt.Errorf("can't set `spec.hostUsers: false`: runtime status: %w", err)
		}
		hs.handlers, hs.at = resp.GetRuntimeHandlers(), now
	}
	supported, known := false, len(hs.handlers) == 0
	for _, h := range hs.handlers {
		if h.GetName() == handler {
			supported, known = h.GetFeatures().GetUserNamespaces(), true
		}
	}
	switch {
	case supported:
		return nil
	case !known:
		return fmt.Errorf("can't set `spec.hostUsers: false`, RuntimeClass handler %q does not support user namespaces: the handler %q is not known", handler, handler)
	case handler == "":
		return errors.New("can't set `spec.hostUsers: false`, runtime does not support user namespaces")
	}
	return fmt.Errorf("can't set `spec.hostUsers: false`, RuntimeClass handler %q does not support user namespaces", handler)
}
