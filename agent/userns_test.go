package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	critest "k8s.io/cri-api/pkg/apis/testing"
)

func testAllocator(t *testing.T, r IDRange, state string) *usernsAllocator {
	t.Helper()
	podDir := func(uid types.UID) string { return filepath.Join(state, "pods", string(uid)) }
	m, err := newUsernsAllocator(r, filepath.Join(state, "pods"), podDir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustAllocate(t *testing.T, m *usernsAllocator, uid types.UID) uint32 {
	t.Helper()
	h, err := m.getOrAllocate(uid)
	if err != nil {
		t.Fatalf("allocate %s: %v", uid, err)
	}
	return h
}

func TestUsernsAllocator(t *testing.T) {
	state := t.TempDir()
	m := testAllocator(t, DefaultUserNamespaceIDs, state)

	// Allocate: one block each, from 65536 up, the same again for the
	// same pod.
	a, b := mustAllocate(t, m, "a"), mustAllocate(t, m, "b")
	if a != 65536 || b != 2*65536 {
		t.Errorf("first blocks = %d, %d; want 65536, 131072", a, b)
	}
	if again := mustAllocate(t, m, "a"); again != a {
		t.Errorf("pod a again: %d, want %d", again, a)
	}

	// Persisted in the pod's dir, in the kubelet's format.
	data, err := os.ReadFile(filepath.Join(state, "pods", "a", "userns"))
	if err != nil {
		t.Fatal(err)
	}
	var f usernsMappings
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	want := idMapping{HostID: a, ContainerID: 0, Length: 65536}
	if len(f.UIDMappings) != 1 || f.UIDMappings[0] != want || len(f.GIDMappings) != 1 || f.GIDMappings[0] != want {
		t.Errorf("file %s", data)
	}
	if !strings.Contains(string(data), `"uidMappings":[{"hostId":65536,"containerId":0,"length":65536}]`) {
		t.Errorf("file is not in the kubelet's format: %s", data)
	}

	// Reload (an agent restart): the same blocks for the same pods, and
	// a new pod gets neither, although the search starts over.
	os.MkdirAll(filepath.Join(state, "pods", "no-userns"), 0o755)
	m2 := testAllocator(t, DefaultUserNamespaceIDs, state)
	if got := mustAllocate(t, m2, "b"); got != b {
		t.Errorf("pod b after reload: %d, want %d", got, b)
	}
	if c := mustAllocate(t, m2, "c"); c == a || c == b {
		t.Errorf("pod c after reload got a live pod's block %d", c)
	}
	if n := len(m2.allocated()); n != 3 {
		t.Errorf("%d pods hold blocks, want 3", n)
	}

	// Free: the file goes, the block is free again, but the next pod
	// gets the next block first (next-fit), not the one just freed.
	m2.release("a")
	if _, err := os.Stat(filepath.Join(state, "pods", "a", "userns")); !os.IsNotExist(err) {
		t.Errorf("pod a's file after release: %v", err)
	}
	if d := mustAllocate(t, m2, "d"); d == a || d == b {
		t.Errorf("pod d got %d: a freed block is not reused at once, a live one never", d)
	}
	m2.release("a") // twice: no-op
	m3 := testAllocator(t, DefaultUserNamespaceIDs, state)
	if got := len(m3.allocated()); got != 3 {
		t.Errorf("after release and reload %d pods hold blocks, want 3 (b, c, d)", got)
	}
}

func TestUsernsAllocatorExhaustion(t *testing.T) {
	m := testAllocator(t, IDRange{First: 65536, Length: 2 * 65536}, t.TempDir())
	mustAllocate(t, m, "a")
	b := mustAllocate(t, m, "b")
	if _, err := m.getOrAllocate("c"); err == nil || !strings.Contains(err.Error(), "could not find an empty slot") {
		t.Fatalf("third pod in a range of two: %v", err)
	}
	m.release("b")
	if c := mustAllocate(t, m, "c"); c != b {
		t.Errorf("after a release: %d, want the freed %d", c, b)
	}
}

func TestUsernsAllocatorBadFiles(t *testing.T) {
	write := func(state, uid, content string) {
		d := filepath.Join(state, "pods", uid)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "userns"), []byte(content), 0o644)
	}
	mp := func(host int) string {
		m := `[{"hostId":` + itoa(host) + `,"containerId":0,"length":65536}]`
		return `{"uidMappings":` + m + `,"gidMappings":` + m + `}`
	}
	for _, tc := range []struct {
		name  string
		files map[string]string
		err   string
	}{
		{"not json", map[string]string{"a": "{"}, "invalid mappings file"},
		{"two pods one block", map[string]string{"a": mp(65536), "b": mp(65536)}, "already pod"},
		{"outside the range", map[string]string{"a": mp(0)}, "outside"},
		{"unaligned", map[string]string{"a": mp(65537)}, "multiple"},
		{"not at 0", map[string]string{"a": `{"uidMappings":[{"hostId":65536,"containerId":1,"length":65536}],"gidMappings":[{"hostId":65536,"containerId":1,"length":65536}]}`}, "container id 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			for uid, c := range tc.files {
				write(state, uid, c)
			}
			podDir := func(uid types.UID) string { return filepath.Join(state, "pods", string(uid)) }
			_, err := newUsernsAllocator(DefaultUserNamespaceIDs, filepath.Join(state, "pods"), podDir)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("got %v, want an error with %q", err, tc.err)
			}
		})
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestIDRange(t *testing.T) {
	if err := DefaultUserNamespaceIDs.Check(110); err != nil {
		t.Errorf("default: %v", err)
	}
	if DefaultUserNamespaceIDs.First != 65536 || uint64(DefaultUserNamespaceIDs.First)+uint64(DefaultUserNamespaceIDs.Length) != 1<<32 {
		t.Errorf("default range %+v, want [65536, 2^32)", DefaultUserNamespaceIDs)
	}
	for _, r := range []IDRange{{0, 65536 * 10}, {65536 + 1, 65536 * 10}, {65536, 65536*10 + 1}, {65536, 65536 * 2}} {
		if err := r.Check(110); err == nil {
			t.Errorf("%+v: accepted", r)
		}
	}
	r, err := parseGetSubIDs("0: kubelet 65536 2147483648\n")
	if err != nil || r != (IDRange{65536, 2147483648}) {
		t.Errorf("getsubids: %+v, %v", r, err)
	}
	if _, err := parseGetSubIDs("0: kubelet 65536 65536\n1: kubelet 131072 65536\n"); err == nil {
		t.Error("two getsubids ranges accepted")
	}
}

func TestNamespaceOptionsHostUsers(t *testing.T) {
	no, yes := false, true
	for _, tc := range []struct {
		name      string
		hostUsers *bool
		edit      func(*v1.Pod)
		mode      runtimeapi.NamespaceMode
		err       string
	}{
		{"unset", nil, nil, runtimeapi.NamespaceMode_NODE, ""},
		{"true", &yes, nil, runtimeapi.NamespaceMode_NODE, ""},
		{"false", &no, nil, runtimeapi.NamespaceMode_POD, ""},
		{"false, hostNetwork", &no, func(p *v1.Pod) { p.Spec.HostNetwork = true }, 0, "spec.hostNetwork: Forbidden: when `hostUsers` is false"},
		{"false, hostPID", &no, func(p *v1.Pod) { p.Spec.HostPID = true }, 0, "spec.hostPID: Forbidden"},
		{"false, hostIPC", &no, func(p *v1.Pod) { p.Spec.HostIPC = true }, 0, "spec.hostIPC: Forbidden"},
		{"true, hostNetwork", &yes, func(p *v1.Pod) { p.Spec.HostNetwork = true }, runtimeapi.NamespaceMode_NODE, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			a := &Agent{o: Options{StateDir: state}}
			a.userns = testAllocator(t, DefaultUserNamespaceIDs, state)
			pod := testPod(v1.RestartPolicyAlways, nil, "app")
			pod.Spec.HostUsers = tc.hostUsers
			if tc.edit != nil {
				tc.edit(pod)
			}
			// The static pod validation refuses the same.
			if err := validatePod(pod); (err != nil) != (tc.err != "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Errorf("validatePod: %v, want %q", err, tc.err)
			}
			userns, err := a.podUserNamespace(context.Background(), pod, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				if n := len(a.userns.allocated()); n != 0 {
					t.Errorf("a refused pod holds a block")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sb, err := makeSandboxConfig(pod, 0, "/var/log/pods", dnsSettings{ResolvConf: "/nonexistent"}, userns)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := makeContainerConfig(pod, &pod.Spec.Containers[0], containerParams{ImageRef: "busybox", UserNS: userns})
			if err != nil {
				t.Fatal(err)
			}
			for what, u := range map[string]*runtimeapi.UserNamespace{
				"sandbox":   sb.Linux.SecurityContext.NamespaceOptions.UsernsOptions,
				"container": cc.Linux.SecurityContext.NamespaceOptions.UsernsOptions,
			} {
				if u.GetMode() != tc.mode {
					t.Errorf("%s userns mode %v, want %v", what, u.GetMode(), tc.mode)
				}
				if tc.mode != runtimeapi.NamespaceMode_POD {
					if len(u.GetUids()) != 0 || len(u.GetGids()) != 0 {
						t.Errorf("%s: mappings in mode %v", what, u.GetMode())
					}
					continue
				}
				want := &runtimeapi.IDMapping{HostId: 65536, ContainerId: 0, Length: 65536}
				if len(u.Uids) != 1 || len(u.Gids) != 1 || u.Uids[0].String() != want.String() || u.Gids[0].String() != want.String() {
					t.Errorf("%s mappings uids %v gids %v, want one %v", what, u.Uids, u.Gids, want)
				}
			}
		})
	}
	// A pod the API server let through (its alpha gate) is refused at
	// admission, with the reason in the pod's status.
	pod := testPod(v1.RestartPolicyAlways, nil, "app")
	pod.Spec.HostUsers, pod.Spec.HostPID = &no, true
	if r := admit(pod, &v1.Node{}, nil, 110); r.Admit || r.Reason != "HostUsersForbidden" || !strings.Contains(r.Message, "spec.hostPID: Forbidden") {
		t.Errorf("admit: %+v", r)
	}
}

// handlersRuntime is the fake runtime with the handlers its Status
// reports (the fake reports none).
type handlersRuntime struct {
	*critest.FakeRuntimeService
	handlers []*runtimeapi.RuntimeHandler
}

func (r *handlersRuntime) Status(ctx context.Context, verbose bool) (*runtimeapi.StatusResponse, error) {
	resp, err := r.FakeRuntimeService.Status(ctx, verbose)
	if err == nil {
		resp.RuntimeHandlers = r.handlers
	}
	return resp, err
}

func usernsHandlers() []*runtimeapi.RuntimeHandler {
	return []*runtimeapi.RuntimeHandler{
		{Name: ""}, {Name: "runc"},
		{Name: "runc-userns", Features: &runtimeapi.RuntimeHandlerFeatures{UserNamespaces: true}},
	}
}

func TestHandlerSupportsUserns(t *testing.T) {
	rt := &handlersRuntime{FakeRuntimeService: critest.NewFakeRuntimeService(), handlers: usernsHandlers()}
	a := &Agent{o: Options{Runtime: rt}, clock: realClock{}}
	for _, tc := range []struct{ handler, err string }{
		{"runc-userns", ""},
		{"", "can't set `spec.hostUsers: false`, runtime does not support user namespaces"},
		{"runc", "can't set `spec.hostUsers: false`, RuntimeClass handler \"runc\" does not support user namespaces"},
		{"kata", "RuntimeClass handler \"kata\" does not support user namespaces: the handler \"kata\" is not known"},
	} {
		err := a.handlerSupportsUserns(context.Background(), tc.handler)
		if (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err && !strings.HasSuffix(err.Error(), tc.err) {
			t.Errorf("handler %q: %v, want %q", tc.handler, err, tc.err)
		}
	}
	n := 0
	for _, c := range rt.GetCalls() {
		if c == "Status" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("Status called %d times, want once (cached)", n)
	}
	// An old runtime lists no handlers: none supports user namespaces.
	old := &Agent{o: Options{Runtime: critest.NewFakeRuntimeService()}, clock: realClock{}}
	if err := old.handlerSupportsUserns(context.Background(), "runc-userns"); err == nil {
		t.Error("a runtime without handlers: accepted")
	}
}

const usernsPodYAML = `apiVersion: v1
kind: Pod
metadata:
  name: NAME
spec:
  hostUsers: false
  runtimeClassName: runc-userns
  containers:
  - name: app
    image: busybox:1.36
`

// TestAgentUserNamespaces runs static pods with `hostUsers: false` on a
// fake runtime: each sandbox gets its own block on the handler named by
// runtimeClassName (static mode: the name is the handler), the containers
// the same mappings; a restarted agent keeps the blocks and a new pod gets
// another; a removed pod frees its block with its file.
func TestAgentUserNamespaces(t *testing.T) {
	manifests, state := t.TempDir(), t.TempDir()
	for _, n := range []string{"one", "two"} {
		writeFile(t, manifests, n+".yaml", strings.Replace(usernsPodYAML, "NAME", n, 1))
	}
	writeFile(t, manifests, "host.yaml", strings.Replace(strings.Replace(usernsPodYAML, "NAME", "host", 1), "  hostUsers: false\n", "", 1))
	writeFile(t, manifests, "default-handler.yaml", strings.Replace(strings.Replace(usernsPodYAML, "NAME", "default-handler", 1), "  runtimeClassName: runc-userns\n", "", 1))
	rt, img := critest.NewFakeRuntimeService(), critest.NewFakeImageService()
	img.SetFakeImages([]string{"busybox:1.36"})
	start := func() (*Agent, func()) {
		a, err := New(Options{
			ManifestsDir: manifests, StateDir: state, PodLogsDir: filepath.Join(state, "logs"), NodeName: "node1", NodeIP: "10.0.0.1",
			Runtime: &handlersRuntime{rt, usernsHandlers()}, Images: img, Registerer: prometheus.NewRegistry(), SyncPeriod: 20 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = a.Run(ctx) }()
		return a, func() { cancel(); <-done }
	}
	// blocks: per pod name, the host id of its sandbox's uid mapping (0:
	// none); handler: per pod name.
	sandboxes := func() (blocks map[string]uint32, handlers map[string]string) {
		rt.Lock()
		defer rt.Unlock()
		blocks, handlers = map[string]uint32{}, map[string]string{}
		for _, s := range rt.Sandboxes {
			if s.State != runtimeapi.PodSandboxState_SANDBOX_READY {
				continue
			}
			u := s.GetLinux().GetNamespaces().GetOptions().GetUsernsOptions()
			if u.GetMode() == runtimeapi.NamespaceMode_POD && len(u.Uids) == 1 {
				blocks[s.Metadata.Name] = u.Uids[0].HostId
			} else {
				blocks[s.Metadata.Name] = 0
			}
			handlers[s.Metadata.Name] = s.RuntimeHandler
		}
		return blocks, handlers
	}
	containers := func(pod string) int {
		rt.Lock()
		defer rt.Unlock()
		n := 0
		for _, c := range rt.Containers {
			if c.Labels[labelPodName] == pod {
				n++
			}
		}
		return n
	}
	a, stop := start()
	waitFor(t, "three sandboxes", func() bool { b, _ := sandboxes(); return len(b) == 3 && containers("one") == 1 })
	blocks, handlers := sandboxes()
	if blocks["one"] == 0 || blocks["two"] == 0 || blocks["one"] == blocks["two"] || blocks["host"] != 0 {
		t.Errorf("blocks %v: want two different ones, none for the host-users pod", blocks)
	}
	if handlers["one"] != "runc-userns" || handlers["host"] != "runc-userns" {
		t.Errorf("handlers %v, want runc-userns (static mode: the RuntimeClass name)", handlers)
	}
	// On the default handler, which has no user namespaces: refused as
	// the kubelet does, before any ids are taken.
	waitFor(t, "the pod on the default handler refused", func() bool {
		for _, p := range a.Pods().Items {
			if p.Name == "default-handler" {
				return strings.Contains(p.Status.Message, "failed to create pod sandbox: can't set `spec.hostUsers: false`, runtime does not support user namespaces")
			}
		}
		return false
	})
	if n := len(a.userns.allocated()); n != 2 {
		t.Errorf("%d pods hold blocks, want 2", n)
	}
	stop()

	// Restart: the blocks stay with their pods, a third pod gets another.
	writeFile(t, manifests, "three.yaml", strings.Replace(usernsPodYAML, "NAME", "three", 1))
	a, stop = start()
	defer stop()
	waitFor(t, "pod three's sandbox", func() bool { b, _ := sandboxes(); return len(b) == 4 })
	after, _ := sandboxes()
	if after["one"] != blocks["one"] || after["two"] != blocks["two"] {
		t.Errorf("blocks after restart %v, before %v", after, blocks)
	}
	if b3 := after["three"]; b3 == 0 || b3 == blocks["one"] || b3 == blocks["two"] {
		t.Errorf("pod three after restart got block %d; live: %v", b3, blocks)
	}
	for _, p := range a.Pods().Items {
		if p.Name == "one" {
			if held, _ := a.userns.getOrAllocate(p.UID); held != blocks["one"] {
				t.Errorf("the restarted agent holds %d for pod one, its sandbox %d", held, blocks["one"])
			}
		}
	}

	// Removed: its block and file go.
	var uid types.UID
	for _, p := range a.Pods().Items {
		if p.Name == "two" {
			uid = p.UID
		}
	}
	os.Remove(filepath.Join(manifests, "two.yaml"))
	waitFor(t, "pod two removed", func() bool { b, _ := sandboxes(); _, ok := b["two"]; return !ok })
	waitFor(t, "pod two's block freed", func() bool {
		for _, u := range a.userns.allocated() {
			if u == uid {
				return false
			}
		}
		return true
	})
	if _, err := os.Stat(filepath.Join(state, "pods", string(uid), "userns")); !os.IsNotExist(err) {
		t.Errorf("pod two's userns file: %v", err)
	}
}

// TestAgentUserNamespaceRefused: an invalid static pod never runs; its
// manifest error says why.
func TestAgentUserNamespaceRefused(t *testing.T) {
	pod := strings.Replace(usernsPodYAML, "NAME", "hostnet", 1) + "  hostNetwork: true\n"
	e := newTestEnv(t, map[string]string{"p.yaml": pod}, nil)
	waitFor(t, "manifest error", func() bool {
		p := e.pod("hostnet")
		return p != nil && p.Status.Reason == "InvalidManifest"
	})
	if msg := e.pod("hostnet").Status.Message; !strings.Contains(msg, "spec.hostNetwork: Forbidden: when `hostUsers` is false") {
		t.Errorf("message %q", msg)
	}
	if n := e.count("RunPodSandbox"); n != 0 {
		t.Errorf("RunPodSandbox called %d times", n)
	}
}
